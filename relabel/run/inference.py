"""Inference on one group of rows: cutouts -> normalised batches -> class probabilities.

The model is loaded once per process and kept (keyed by the checkpoint's content hash),
so a worker pays the load once however many shards it runs. The next batch's cutouts
are read while the current batch is in the network, by the source's child processes
(:mod:`relabel.cutouts.reader_process`: fitsio keeps the GIL while it reads, which
would stall the forward pass) or, with ``relabel.cutting: thread``, in a background thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from relabel import status as st
from relabel.cutouts.sources import Cutouts, CutoutSource
from relabel.errors import CheckpointError
from relabel.model.checkpoint import CheckpointMeta, load_checkpoint
from relabel.model.device import autocast_for, choose_device
from relabel.model.inputs import frame_inputs
from relabel.model.normalisation import normalise

_MODELS: dict[tuple[str, str], tuple[torch.nn.Module, CheckpointMeta]] = {}
_LOCK = threading.Lock()
_THREADS_SET = False


def cached_model(path: str | Path, expected_hash: str | None = None, device: str | None = None):
    """The checkpoint's model and metadata, loaded once per process.

    Parameters
    ----------
    path : str or Path
        The checkpoint.
    expected_hash : str, optional
        Its SHA-256 content hash when the run was planned; None skips the check.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1``... (default: this worker's GPU when it has one).

    Returns
    -------
    model : MorphologyCNN
        As :func:`relabel.model.checkpoint.load_checkpoint` returns it, on the device; shared
        by every caller in this process.
    meta : CheckpointMeta
        Classes, bands, cutout size, normalisation and temperature.

    Raises
    ------
    CheckpointError
        The file changed since the run was planned (its hash differs from ``expected_hash``).
    """
    dev = choose_device(device)
    key = (str(Path(path).resolve()), str(dev))
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_checkpoint(path, dev)
        model, meta = _MODELS[key]
    if expected_hash and meta.content_hash != expected_hash:
        raise CheckpointError(
            f"checkpoint {path} changed since this run started (hash {meta.content_hash[:12]}, "
            f"expected {expected_hash[:12]}); rerun with the file the run was planned with"
        )
    return model, meta


#: glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def relax_malloc_trimming() -> bool:
    """Undo Dask's MALLOC_TRIM_THRESHOLD_=65536 for this process (glibc only).

    The nanny sets it so that pandas-heavy workers give memory back to the OS; it also
    turns off glibc's adaptive mmap threshold, so every activation tensor of a forward
    pass is a fresh mmap whose pages fault in again: measured here, 40% of the CPU
    forward speed lost (1800 -> 1140 images/s). Large blocks are kept for reuse instead;
    a shard's memory is bounded by its batch size, so the worker stays flat.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 64 * 2**20) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, 256 * 2**20) == 1 and ok


def configure_torch_threads(n: int | None = None) -> int:
    """Give torch the worker's cores: Dask's nanny sets OMP_NUM_THREADS=1, which would leave torch on one.

    Also the first call in a process relaxes malloc trimming (:func:`relax_malloc_trimming`).

    Parameters
    ----------
    n : int, optional
        Threads to give torch; default the Dask worker's cores (``relabel.worker-cores``).
        Outside a Dask worker, with ``n`` None, nothing changes.

    Returns
    -------
    int
        torch's thread count after the call.
    """
    global _THREADS_SET
    if n is None:
        n = _worker_threads()
        if n is None:  # not on a Dask worker: the caller's own process keeps its torch and malloc settings
            return torch.get_num_threads()
    if not _THREADS_SET:
        relax_malloc_trimming()
    if not _THREADS_SET or torch.get_num_threads() != n:
        torch.set_num_threads(max(1, int(n)))
        _THREADS_SET = True
    return torch.get_num_threads()


def _worker_threads() -> int | None:
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    # A worker with t task threads runs t shards at once: each gets an equal part of the job's cores.
    import dask

    # relabel.worker-cores reaches the worker as DASK_RELABEL__WORKER_CORES through distributed.nanny.pre-spawn-environ,
    # which the worker process applies after Dask read its configuration: hence the variable itself as well.
    cores = int(dask.config.get("relabel.worker-cores", None) or os.environ.get("DASK_RELABEL__WORKER_CORES", 0)
                or os.environ.get("RELABEL_WORKER_CORES", 0) or 0)
    cores = cores or worker.state.nthreads
    return max(1, cores // max(1, worker.state.nthreads))


@dataclass
class Predictions:
    """Per-row output of :func:`predict_rows`: probabilities (NaN where not predicted) and statuses."""

    probabilities: np.ndarray  # float32 (n, K)
    status: np.ndarray  # object array
    timings: dict = field(default_factory=dict)
    coverage: np.ndarray | None = None  # float32 (n,), survey-image sources only: share of each stamp on its image
    std: np.ndarray | None = None  # float32 (n, K): spread over the square's 8 symmetries (``tta``), else None


def predict_rows(
    rows: pd.DataFrame,
    source: CutoutSource,
    model: torch.nn.Module,
    meta: CheckpointMeta,
    batch_size: int = 256,
    status: np.ndarray | None = None,
    tta: bool = False,
) -> Predictions:
    """Class probabilities for ``rows``; faulty cutouts get a status and NaN probabilities.

    ``status`` may hold faults already known per row (e.g. bad coordinates): only rows
    whose status is ``ok`` are read and predicted.

    Every forward pass gets exactly ``batch_size`` images (the last batch is padded with
    zeros), so a galaxy's probabilities do not depend on which rows share its batch:
    the same kernels run whatever the shard size or number of workers.

    Logits are divided by the checkpoint's ``temperature`` (temperature scaling) before
    the softmax. With ``tta``, each galaxy's probabilities are the mean over the 8
    symmetries of the square (:func:`symmetric_probabilities`) and ``std`` their spread.

    Parameters
    ----------
    rows : pandas.DataFrame
        Catalog rows with the cutout source's location columns.
    source : CutoutSource
        Opened cutout reader (:func:`relabel.cutouts.sources.open_cutout_source`).
    model : torch.nn.Module
        The network, in eval mode, on its device.
    meta : CheckpointMeta
        The checkpoint's metadata: normalisation, classes, cutout size, temperature.
    batch_size : int
        Cutouts per forward pass.
    status : numpy.ndarray of str, shape (len(rows),), optional
        Known per-row statuses; default all ``ok``.
    tta : bool
        Average over the 8 symmetries of the square.

    Returns
    -------
    Predictions
        ``probabilities`` (len(rows), K) float32 (NaN for rows not predicted), ``status``,
        ``timings`` (seconds reading, normalising, in forward passes), ``coverage`` and, with
        ``tta``, ``std`` (len(rows), K).
    """
    n = len(rows)
    probs = np.full((n, meta.n_classes), np.nan, dtype=np.float32)
    spread = np.full((n, meta.n_classes), np.nan, dtype=np.float32) if tta else None
    status = np.full(n, st.OK, dtype=object) if status is None else np.asarray(status, dtype=object).copy()
    inputs = frame_inputs(model, rows)
    if inputs is not None:
        status[(status == st.OK) & np.isnan(inputs).any(axis=1)] = st.MISSING_INPUT
    timings = {"read_cutouts": 0.0, "normalise": 0.0, "forward": 0.0}
    todo = np.flatnonzero(status == st.OK)
    coverage = np.zeros(n, dtype=np.float32)  # rows never read (e.g. bad coordinates) lie on no image
    if len(todo) == 0:
        return Predictions(probs, status, timings, coverage=coverage, std=spread)
    chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]

    located = rows[list(source.columns)]  # slicing a few columns per batch, not the whole row

    # As many reads in flight as the source runs at once (its child processes), beside the batch in use;
    # such a source is told which of its buffers each read fills, in the order the reads are used.
    depth = max(1, source.processes)

    def load(k: int):
        t0 = time.perf_counter()
        rows_k = located.iloc[chunks[k]]
        cut = source.read(rows_k, slot=k % (depth + 1)) if source.processes else source.read(rows_k)  # type: ignore[call-arg]
        return cut, time.perf_counter() - t0

    batch = np.zeros((batch_size, len(meta.bands), meta.size, meta.size), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=depth) as pool:
        pending = deque(pool.submit(load, k) for k in range(min(depth, len(chunks))))
        for k, index in enumerate(chunks):
            cut, t_read = pending.popleft().result()
            if k + depth < len(chunks):
                pending.append(pool.submit(load, k + depth))
            timings["read_cutouts"] += t_read
            status[index] = cut.status
            if cut.coverage is not None:
                coverage[index] = cut.coverage
            if cut.usable.any():
                extra = None if inputs is None else inputs[index[cut.usable]]
                _predict_batch(cut, index, batch, model, meta, tta, probs, spread, timings, extra)
    return Predictions(probs, status, timings, coverage=coverage, std=spread)


def _predict_batch(cut: Cutouts, index: np.ndarray, batch: np.ndarray, model: torch.nn.Module, meta: CheckpointMeta,
                   tta: bool, probs: np.ndarray, spread: np.ndarray | None, timings: dict[str, float],
                   inputs: np.ndarray | None = None) -> None:
    """Normalise the usable cutouts into ``batch``, predict, and fill their rows of ``probs`` (and ``spread``).

    Cutouts a reading process already normalised go to the network as they are when they
    fill the batch; otherwise they are copied into ``batch`` and padded. ``inputs`` are the
    usable rows' catalog inputs (a model that takes them), padded likewise.
    """
    t0 = time.perf_counter()
    good = cut.usable
    k = int(good.sum())
    if cut.normalised and k == len(batch):
        x_host = cut.images
    else:
        images = cut.images if k == len(good) else cut.images[good]
        if cut.normalised:
            batch[:k] = images
        else:
            normalise(images, meta.normalisation, out=batch[:k])
        batch[k:] = 0  # padding: the forward pass always sees batch_size images
        x_host = batch
    t1 = time.perf_counter()
    device = next(model.parameters()).device
    x = torch.from_numpy(x_host).to(device, non_blocking=True, memory_format=torch.channels_last)
    extra = None
    if inputs is not None:
        padded = np.zeros((len(x_host), inputs.shape[1]), dtype=np.float32)
        padded[:k] = inputs
        extra = torch.from_numpy(padded).to(device)
    mean, std = symmetric_probabilities(model, x, getattr(meta, "temperature", 1.0), tta, extra)
    timings["normalise"] += t1 - t0
    timings["forward"] += time.perf_counter() - t1
    probs[index[good]] = mean[:k]
    if spread is not None and std is not None:  # both exactly when tta
        spread[index[good]] = std[:k]


def square_symmetry(x: torch.Tensor, code: int) -> torch.Tensor:
    """Symmetry ``code`` (0..7) of the square applied to images (n, bands, H, W): ``code % 4`` quarter
    turns, then a left-right flip when ``code >= 4``. Pixels move without interpolation.

    Parameters
    ----------
    x : torch.Tensor, shape (n, bands, H, W)
        Images (square: H == W for codes with an odd number of quarter turns to keep the shape).
    code : int
        0 (identity) to 7.

    Returns
    -------
    torch.Tensor, shape (n, bands, H, W)
        The turned (and flipped) images.
    """
    x = torch.rot90(x, code % 4, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if code >= 4 else x


def symmetric_probabilities(model: torch.nn.Module, x: torch.Tensor, temperature: float = 1.0,
                            tta: bool = True, inputs: torch.Tensor | None = None
                            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities of a batch, ``softmax(logits / temperature)``, optionally over the square's symmetries.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor, shape (n, bands, H, W)
        Normalised cutouts on the model's device.
    temperature : float
        The checkpoint's temperature (1: uncalibrated).
    tta : bool
        Test-time augmentation: the mean and standard deviation (ddof=0) over the
        8 symmetries of the square (a galaxy's class does not depend on its orientation).
    inputs : torch.Tensor, shape (n, d), optional
        Catalog inputs on the model's device, for a model that takes them (the same for every view).

    Returns
    -------
    mean : numpy.ndarray, shape (n, K), float32
    std : numpy.ndarray, shape (n, K), float32, or None without ``tta``
    """
    device = x.device
    samples = []
    with torch.inference_mode(), autocast_for(device):
        for code in range(8 if tta else 1):
            view = square_symmetry(x, code).contiguous(memory_format=torch.channels_last)
            logits = model(view) if inputs is None else model(view, inputs)
            samples.append(torch.softmax(logits.float() / float(temperature), dim=1))
    if not tta:
        return samples[0].cpu().numpy(), None
    stacked = torch.stack(samples)
    return stacked.mean(dim=0).cpu().numpy(), stacked.std(dim=0, unbiased=False).cpu().numpy()
