"""Shared benchmark inputs: a cached simulated survey and a checkpoint of the shipped architecture.

Benchmarks measure speed, not accuracy, so the checkpoint's weights are untrained
(the forward pass costs the same); its normalisation is estimated from the survey.
Data live under benchmarks/data/ (git-ignored) and are made once.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def survey(n: int = 20_000, seed: int = 0, layout: str = "tiles"):
    """The simulated survey of ``n`` galaxies (simulated on first use, a few minutes on 2 cores)."""
    import yaml

    from relabel.simulate import simulate_survey, SurveyPaths
    from relabel.simulate.drawing import BANDS

    root = DATA / f"survey-{n}-{seed}-{layout}"
    cached = root / "workflow.yaml"
    if cached.exists() and yaml.safe_load(cached.read_text())["cutouts"]["bands"] == list(BANDS):
        cutouts = root / ("tiles" if layout == "tiles" else "cutouts")
        return SurveyPaths(root, root / "catalog.fits", root / "truth.parquet", root / "workflow.yaml", cutouts, layout)
    # Made by an older simulator (other bands): everything derived from it goes too
    # (checkpoints, per-object files, grown catalogs).
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    paths = simulate_survey(root, n=n, seed=seed, layout=layout, overwrite=True)
    print(f"simulated {n} galaxies ({layout}) in {time.perf_counter() - t0:.0f} s")
    return paths


def grown_catalog(catalog: Path, rows: int) -> Path:
    """A FITS catalog repeated to ``rows`` rows beside it (OBJID renumbered, cutout columns kept)."""
    import fitsio

    out = catalog.with_name(f"catalog-{rows}.fits")
    if out.exists():
        return out
    base = fitsio.read(str(catalog), ext=1)
    reps = -(-rows // len(base))
    grown = np.concatenate([base] * reps)[:rows]
    grown["OBJID"] = np.arange(rows, dtype=np.int64) + 1
    fitsio.write(str(out), grown, extname="CATALOG", clobber=True)
    return out


def checkpoint(survey_paths, width: int = 16, seed: int = 0) -> Path:
    """An untrained MorphologyCNN of ``width`` with the survey's normalisation, saved as a real checkpoint."""
    import torch
    import yaml

    from relabel.catalog import open_catalog
    from relabel.config import load_workflow
    from relabel.cutouts import open_cutout_source
    from relabel.model import CheckpointMeta, MorphologyCNN, estimate_normalisation, read_checkpoint, save_checkpoint

    path = survey_paths.root / f"untrained-w{width}.pt"
    wf = load_workflow(survey_paths.workflow)
    if path.exists() and read_checkpoint(path)[1].bands == list(wf.cutouts.bands):
        return path
    cat = open_catalog(survey_paths.catalog)
    with open_cutout_source(wf) as source:
        images = source.read(cat.read(list(wf.cutouts.columns), 0, min(cat.nrows, 1000))).images
    torch.manual_seed(seed)
    n_bands = len(wf.cutouts.bands)
    arch = {"name": "MorphologyCNN", "n_bands": n_bands, "n_classes": 2, "width": width}
    meta = CheckpointMeta(classes=["elliptical", "spiral"], bands=list(wf.cutouts.bands), size=wf.cutouts.size,
                          normalisation=estimate_normalisation(images), architecture=arch,
                          workflow=yaml.safe_load(survey_paths.workflow.read_text()))
    save_checkpoint(MorphologyCNN(n_bands, 2, width=width), meta, path)
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import platform

    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, python {platform.python_version()}")


def forward_rate(model_path: Path, images: np.ndarray, batch_size: int, threads: int, seconds: float = 8.0) -> float:
    """Images/s of the bare forward pass on in-memory, already normalised tensors."""
    import torch

    from relabel.model import load_checkpoint, normalise

    torch.set_num_threads(threads)
    model, meta = load_checkpoint(model_path)
    x = torch.from_numpy(normalise(images[:batch_size], meta.normalisation)).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            done += len(x)
    return done / (time.perf_counter() - t0)


def _forward_worker(args) -> float:
    return forward_rate(*args)


def parallel_forward_rate(model_path: Path, images: np.ndarray, batch_size: int, processes: int,
                          seconds: float = 8.0) -> float:
    """Summed images/s of ``processes`` single-threaded forward loops running at once (the pipeline's layout)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(processes) as pool:
        rates = pool.map(_forward_worker, [(model_path, images, batch_size, 1, seconds)] * processes)
    return float(sum(rates))
