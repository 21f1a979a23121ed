"""Progress of long commands: a tqdm bar on a terminal, plain periodic count lines elsewhere.

A bar redraws itself with carriage returns; in a file (a SLURM batch log, ``2> log``)
those pile up into one unreadable line. So when stderr is not a terminal the same
calls print one ordinary line every ``interval`` seconds and one at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import IO

#: Seconds between two count lines in a non-terminal log.
LINE_INTERVAL = 30.0


class CountLines:
    """The non-terminal stand-in for a tqdm bar: ``desc: 120/600 gal (20 %), 12 s`` lines.

    Parameters
    ----------
    total : int or None
        Units expected (None when unknown).
    desc : str
        What is counted, printed first on each line.
    unit : str
        The counted unit (``gal``, ``shard``, ``batch``).
    stream : file-like
        Where the lines go (default stderr).
    interval : float
        Seconds between lines.
    leave : bool
        Print the final count even when no periodic line was printed.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", stream: IO[str] | None = None,
                 interval: float = LINE_INTERVAL, leave: bool = True):
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self._printed = False
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.n = 0
        self._start = self._last = time.monotonic()
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; print a line when ``interval`` seconds passed since the last.

        Parameters
        ----------
        n : int
            Items done since the last call.
        """
        self.n += int(n)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._printed = True
            self._line()

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        seconds = time.monotonic() - self._start
        print(f"{self.desc}: {self.n}{of} {self.unit}{share}, {seconds:.0f} s", file=self.stream, flush=True)

    def close(self) -> None:
        """Stop counting; print the final line if any line was printed (or ``leave``)."""
        if not self._closed:
            self._closed = True
            # A short inner loop (one epoch) that never printed stays silent: its caller reports the result.
            if self.leave or self._printed:
                self._line()

    def __enter__(self) -> CountLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent:
    """A bar that shows nothing (``--no-progress``)."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += int(n)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True,
                 stream: IO[str] | None = None, leave: bool = True, interval: float = LINE_INTERVAL):
    """A progress counter with ``update(n)`` and ``close()``, fit for where it is shown.

    Parameters
    ----------
    total : int or None
        Units expected.
    desc, unit : str
        Label and unit of the count.
    enabled : bool
        False (``--no-progress``) shows nothing at all.
    stream : file-like
        Default stderr. A terminal gets a tqdm bar, anything else :class:`CountLines`.
    leave : bool
        Keep the finished bar on the terminal.
    interval : float
        Seconds between count lines when not on a terminal.

    Returns
    -------
    object
        A tqdm bar, a :class:`CountLines`, or a silent counter; all are context managers.

    Examples
    --------
    >>> import io
    >>> log = io.StringIO()
    >>> with progress_bar(3, "demo", "gal", stream=log) as bar:
    ...     bar.update(3)
    >>> log.getvalue().startswith("demo: 3/3 gal (100 %)")
    True
    """
    if not enabled:
        return _Silent()
    stream = stream if stream is not None else sys.stderr
    if _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, leave=leave, mininterval=0.5)
    return CountLines(total, desc, unit, stream, interval, leave)


def progress_iter(iterable: Iterable, desc: str, enabled: bool = True, unit: str = "it",
                  total: int | None = None, leave: bool = False, stream: IO[str] | None = None) -> Iterator:
    """Iterate ``iterable`` while counting it with :func:`progress_bar`.

    Parameters
    ----------
    iterable : iterable
        What to iterate.
    desc : str
        Label of the count (e.g. ``"shards"``).
    enabled : bool
        False iterates silently.
    unit : str
        Name of one item.
    total : int, optional
        Items expected; default ``len(iterable)`` when it has one.
    leave : bool
        Keep the last count line when done.
    stream : text stream, optional
        Where to write (default standard error).

    Yields
    ------
    Any
        The items of ``iterable``.
    """
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    bar = progress_bar(total, desc, unit, enabled, stream, leave)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
