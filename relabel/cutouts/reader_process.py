"""Cutting stamps in a child process, so that reading never stalls the forward pass.

fitsio (cfitsio) keeps the GIL for the whole of each call: opening a file, reading a
section, decompressing a block of a tile-compressed image. The forward pass needs the
GIL between its operations, so a read-ahead *thread* in the worker stalls the network
for as long as it reads. Measured on the development machine (2 cores, torch on one
thread, the other core free; ``benchmarks/bench_reading.py``, docs/benchmarks.md section 8):
beside a thread reading without pause, a forward pass ran at 0.50 (survey images, half
RICE-compressed), 0.67 (tile cubes) and 0.72 (per-galaxy FITS files) of its rate alone;
beside a child process reading the same, at 1.1. So each shard hands its reading to
child processes: fresh Pythons (``python -m relabel.cutouts.reader_process``) that import
no torch, open the shard's cutout source, normalise as the checkpoint says, and answer
``read(rows)`` requests over a socket. Stamps come back through ``processes + 1``
memory-mapped buffers in shared memory (``/dev/shm`` where it has room), not through
pickling, so reads can run while the batch before them is in the network.

A child is started once and reused by every shard its worker process runs (one child per
shard running at once); it exits when its parent closes the socket or dies. A child that
dies mid-read (cfitsio crashing on a corrupt file) becomes a :class:`ReaderProcessError`
naming the source; the worker itself survives.

``relabel.cutting`` (Dask configuration; ``process`` by default) chooses this, or
``thread`` for the in-process read-ahead thread.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.cutouts.sources import Cutouts, CutoutSource, open_cutout_source


class ReaderProcessError(RuntimeError):
    """The child process reading cutouts died or could not start."""


def _buffer_dir(nbytes: int) -> str | None:
    """``/dev/shm`` when it has room for the buffers twice over, else the temporary folder.

    A container's ``/dev/shm`` is often 64 MB, and writing past its end kills the writer
    with SIGBUS; a file in the temporary folder stays in the page cache just as well.
    """
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) and free >= 2 * nbytes else None


class _Child:
    """One child process and its end of the socket."""

    def __init__(self) -> None:
        parent_end, child_end = socket.socketpair()
        # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 for its workers, which turns off glibc's adaptive
        # mmap threshold: every decompressed block would be a fresh mapping faulted in again.
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
        env["OMP_NUM_THREADS"] = "1"
        # The child finds relabel where this process found it, also when a script put it on sys.path.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relabel.cutouts.reader_process", str(child_end.fileno())],
            pass_fds=(child_end.fileno(),), env=env, stdin=subprocess.DEVNULL)
        child_end.close()
        self.conn = Connection(parent_end.detach())

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, message: tuple, what: str) -> Any:
        """Send one request and return its answer; re-raise the child's exception."""
        try:
            self.conn.send(message)
            kind, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            code = self.process.poll()
            raise ReaderProcessError(f"the cutout reader process died while {what} "
                                     f"(exit code {code}); the worker is unharmed") from exc
        if kind == "error":
            raise value
        return value

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


_IDLE: list[_Child] = []
_LOCK = threading.Lock()


def _take_child() -> _Child:
    with _LOCK:
        while _IDLE:
            child = _IDLE.pop()
            if child.alive:
                return child
    return _Child()


def _give_back(child: _Child) -> None:
    if child.alive:
        with _LOCK:
            _IDLE.append(child)


def prestart(n: int = 1) -> None:
    """Start ``n`` idle child processes now (about a second each), e.g. while a worker warms up.

    Parameters
    ----------
    n : int
        Children to start.
    """
    for _ in range(n):
        _give_back(_Child())


def stop_children() -> None:
    """Stop every idle child process of this process (they also stop on their own when it exits)."""
    with _LOCK:
        children, _IDLE[:] = list(_IDLE), []
    for child in children:
        child.stop()


class ProcessCutoutSource(CutoutSource):
    """A cutout source whose reads run in child processes; use as a context manager.

    Same contract as the source :func:`relabel.cutouts.sources.open_cutout_source` returns:
    ``read(rows)`` gives :class:`Cutouts` in row order, faults as statuses. With ``processes``
    children, up to that many reads run at once (:attr:`processes`), each in a free child.
    The images of a read are a view of one of :attr:`slots` (``processes + 1``) shared buffers:
    a caller keeping ``processes`` reads in flight beside the batch it uses names the buffer
    of each read (``read(rows, slot=k % slots)`` for its k-th read).

    Parameters
    ----------
    workflow : relabel.config.Workflow
    size, n_bands : int, optional
        As for :func:`relabel.cutouts.sources.open_cutout_source`.
    image : str or pandas.Series, optional
        Layout ``images``: the image (template) of every row, or of each row by catalog row number.
    batch_size : int
        Most rows a single read asks for.
    processes : int
        Child processes reading at once.
    normalisation : dict, optional
        The checkpoint's normalisation: the children apply it (:func:`relabel.model.normalise`),
        so the worker's own thread does not; :attr:`Cutouts.normalised` says so.

    Raises
    ------
    ConfigError, CutoutError
        As the in-process source would, raised in the child and passed on.
    ReaderProcessError
        A child died.
    """

    def __init__(self, workflow, size: int | None = None, n_bands: int | None = None,
                 image: str | pd.Series | None = None, batch_size: int = 256, processes: int = 1,
                 normalisation: dict | None = None):
        spec = workflow.cutouts
        super().__init__(spec, size, n_bands)
        self.processes = max(1, int(processes))
        self._shape = (int(batch_size), self.n_bands, self.size, self.size)
        self._normalisation = normalisation
        nbytes = int(np.prod(self._shape)) * 4
        self._paths: list[Path] = []
        self._buffers: list[np.ndarray] = []
        self._children: list[_Child] = []
        self._free: queue.SimpleQueue[_Child] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._calls = 0
        try:
            folder = _buffer_dir(nbytes * (self.processes + 1))
            for _ in range(self.processes + 1):
                handle, name = tempfile.mkstemp(prefix="relabel-cutouts-", suffix=".f32", dir=folder)
                os.close(handle)
                self._paths.append(Path(name))
                os.truncate(name, nbytes)
                self._buffers.append(np.memmap(name, dtype=np.float32, mode="r+", shape=self._shape))
            for _ in range(self.processes):
                child = _take_child()
                self._children.append(child)
                self.columns = tuple(child.call(
                    ("open", workflow, size, n_bands, image, [str(p) for p in self._paths], self._shape,
                     normalisation),
                    f"opening the {spec.layout} cutouts"))
                self._free.put(child)
        except BaseException:
            self.close()
            raise

    @property
    def slots(self) -> int:
        """Shared buffers, ``processes + 1``: a read's images stay valid for that many reads."""
        return len(self._paths)

    def read(self, rows: pd.DataFrame, slot: int | None = None) -> Cutouts:
        """The cutouts of ``rows`` (at most ``batch_size``), read by a free child process.

        Parameters
        ----------
        rows : pandas.DataFrame
            Rows holding :attr:`columns`.
        slot : int, optional
            The buffer to read into, ``0 .. slots - 1``. Callers with several reads in flight
            give it in the order they will use the reads (e.g. read k into ``k % slots``):
            reads made from several threads do not start in the order they were asked for.
            Default: the buffers in turn, in the order the calls arrive.

        Returns
        -------
        Cutouts
            ``images`` is a view of buffer ``slot``, overwritten by the next read into it.
        """
        if len(rows) > self._shape[0]:
            raise ValueError(f"{len(rows)} rows in one read: at most {self._shape[0]} (the batch size)")
        if not self._children:
            raise ReaderProcessError("the cutout source is closed")
        if slot is None:
            with self._lock:
                slot, self._calls = self._calls % self.slots, self._calls + 1
        child = self._free.get()
        try:
            status, coverage = child.call(("read", rows, slot),
                                          f"reading {len(rows)} {self.spec.layout} cutouts under {self.spec.root}")
        finally:
            self._free.put(child)
        return Cutouts(self._buffers[slot][:len(rows)], status, coverage, normalised=self._normalisation is not None)

    def close(self) -> None:
        """Close the children's sources and give the children back for the next shard."""
        children, self._children = self._children, []
        for child in children:
            try:
                child.call(("close",), "closing its cutouts")
                _give_back(child)
            except Exception:
                child.stop()
        self._buffers = []
        for path in self._paths:
            with contextlib.suppress(OSError):
                path.unlink()


def reading_processes(cores: int, on_gpu: bool, configured: int | None = None) -> int:
    """How many child processes read a shard's cutouts at once.

    On a CPU the network and the reading share the cores, so one child is enough to keep
    reading off the GIL; on a GPU the cores are free for cutting, so all but one read.

    Parameters
    ----------
    cores : int
        Cores the shard may use (its share of the worker's).
    on_gpu : bool
        The forward pass runs on a GPU.
    configured : int, optional
        ``relabel.cutting-processes`` when set (wins).

    Returns
    -------
    int
        At least 1.
    """
    from relabel import settings

    configured = settings.get("cutting-processes", configured)
    if configured:
        return max(1, int(configured))
    return max(1, int(cores) - 1) if on_gpu else 1


def open_reader(workflow, size: int | None = None, n_bands: int | None = None,
                image: str | pd.Series | None = None, batch_size: int = 256,
                where: str | None = None, processes: int = 1, normalisation: dict | None = None) -> CutoutSource:
    """The shard's cutout source: read in child processes (``process``) or in this one (``thread``).

    Parameters
    ----------
    workflow : relabel.config.Workflow
    size, n_bands : int, optional
    image : str or pandas.Series, optional
        As for :func:`relabel.cutouts.sources.open_cutout_source`.
    batch_size : int
        Most rows a single read asks for.
    where : {"process", "thread"}, optional
        Default ``relabel.cutting`` from the Dask configuration.
    processes : int
        Child processes reading at once (``process``; see :func:`reading_processes`).
    normalisation : dict, optional
        ``process``: the checkpoint's normalisation, applied by the children.

    Returns
    -------
    CutoutSource
        A context manager.

    Raises
    ------
    ValueError
        ``where`` is neither.
    """
    from relabel import settings

    where = settings.get("cutting", where)
    if where == "process" and os.name == "nt":  # passing a socket to a child process is POSIX-only
        where = "thread"
    if where == "process":
        return ProcessCutoutSource(workflow, size, n_bands, image, batch_size, processes, normalisation)
    if where == "thread":
        return open_cutout_source(workflow, size, n_bands, image=image)
    raise ValueError(f"relabel.cutting is {where!r}: expected 'process' or 'thread'")


def _serve(conn: Connection) -> None:
    """The child's loop: open a source, read into the shared buffers, close; until the parent goes."""
    from relabel.model.normalisation import normalise

    source, buffers, normalisation = None, [], None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        try:
            kind = message[0]
            if kind == "open":
                _, workflow, size, n_bands, image, paths, shape, normalisation = message
                if source is not None:
                    source.__exit__(None, None, None)
                source = open_cutout_source(workflow, size, n_bands, image=image).__enter__()
                buffers = [np.memmap(p, dtype=np.float32, mode="r+", shape=tuple(shape)) for p in paths]
                reply: tuple = ("ok", tuple(source.columns))
            elif kind == "read":
                _, rows, slot = message
                if source is None:
                    raise ReaderProcessError("read before open")
                cut = source.read(rows)
                view = buffers[slot][:len(rows)]
                if normalisation is None:
                    view[...] = cut.images
                else:
                    normalise(cut.images, normalisation, out=view)
                    view[~cut.usable] = 0
                reply = ("ok", (cut.status, cut.coverage))
            else:  # close
                if source is not None:
                    source.__exit__(None, None, None)
                source, buffers = None, []
                reply = ("ok", None)
        except Exception as exc:  # passed on to the parent, which raises it in the shard
            reply = ("error", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # an exception that does not pickle still reaches the parent, as text
            conn.send(("error", ReaderProcessError(f"{type(reply[1]).__name__}: {reply[1]} ({exc})")))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
