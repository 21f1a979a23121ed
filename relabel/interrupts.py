"""Ctrl-C for commands that start worker processes: one message from relabel, no worker tracebacks.

A terminal sends SIGINT to its whole foreground process group, so Dask's worker
processes get Ctrl-C too; one caught while importing or computing prints a long
KeyboardInterrupt traceback before relabel's own message. Processes started while
SIGINT is *ignored* keep ignoring it (the disposition survives exec, and Python
installs its handler only where SIGINT is not ignored), and the parent, which does
handle Ctrl-C, shuts them down.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def children_ignore_interrupt() -> Iterator[None]:
    """Start child processes inside this block: they ignore SIGINT; the parent's handler is restored after.

    A Ctrl-C that arrives inside the block (a cluster's few seconds of start-up) is not
    seen; it is the price of children that never print a traceback. Outside the main
    thread (where signal handlers cannot be set) this does nothing.

    Examples
    --------
    >>> import signal
    >>> before = signal.getsignal(signal.SIGINT)
    >>> with children_ignore_interrupt():
    ...     signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    True
    >>> signal.getsignal(signal.SIGINT) is before
    True
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
