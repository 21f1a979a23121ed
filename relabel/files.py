"""Files appear complete or not at all: every output relabel writes goes through :func:`atomic_path`.

A killed worker, a Ctrl-C or a full disk must never leave a truncated file that looks
finished (a shard, a checkpoint, a tile, a catalog). The data is written under a hidden
temporary name beside the target (same file system, so the rename is atomic on POSIX)
and renamed into place only once the writer returned. Hidden names (leading ``.``) are
also skipped by Arrow and pandas when they read a dataset folder.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write to; renamed to ``path`` when the block ends without an exception.

    Parameters
    ----------
    path : str or pathlib.Path
        Where the finished file goes. Its folder must exist.

    Yields
    ------
    pathlib.Path
        A hidden name in the same folder (``.NAME.tmp-XXXXXXXX``), unique per call.

    Raises
    ------
    OSError
        From the writer or the rename; the temporary file is removed either way.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('done', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to write; readers see either the old content or all of ``data``.
    data : bytes
        The new content.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
