"""Training data: a catalog's labels, binning columns and normalised cutouts in a memory-mapped cache."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from relabel import status as st
from relabel.catalog.coordinates import catalog_coordinate_units
from relabel.catalog.ids import check_ids
from relabel.catalog.labels import table_labels
from relabel.catalog.missing import as_numpy_columns, drop_missing
from relabel.catalog.reader import describe_catalog, open_catalog
from relabel.config import Workflow
from relabel.cutouts.sources import open_cutout_source
from relabel.errors import ConfigError
from relabel.model.normalisation import estimate_normalisation, normalise
from relabel.train.split import validation_mask

#: Cutouts read per call to the cutout source while filling the training cache.
READ_CHUNK = 2048
#: Training cutouts the sky level and noise are estimated from.
NORMALISATION_SAMPLE = 2000


@dataclass
class LabelledCutouts:
    """The usable rows of a catalog: normalised cutouts (a memory-mapped cache) and their columns."""

    ids: np.ndarray
    images: np.ndarray | _RowView  # float32 (n, bands, size, size), normalised
    codes: np.ndarray  # int64 class codes, NO_CLASS for objects passing no threshold
    classes: list[str]
    intrinsic: pd.DataFrame  # (n, d), the catalog's dtypes (L's medians are taken in them)
    observables: pd.DataFrame  # (n, m)
    is_val: np.ndarray
    normalisation: dict
    dropped: dict
    seed: int
    val_fraction: float

    def __len__(self) -> int:
        return len(self.ids)


def read_table(catalog_path, workflow: Workflow) -> tuple[pd.DataFrame, dict]:
    """The columns training and evaluation use, without rows missing a label, intrinsic or observable value
    (:mod:`relabel.catalog.missing`; ``dropped`` counts them per column). ``catalog_path`` may be a file, a
    folder, a DataFrame or an astropy Table.

    Parameters
    ----------
    catalog_path : str, Path, pandas.DataFrame or astropy.table.Table
        The catalog.
    workflow : Workflow
        Its id, label, intrinsic and observable columns and missing-value codes.

    Returns
    -------
    table : pandas.DataFrame
        The complete rows, index reset.
    dropped : dict of str to int
        ``"missing COLUMN"`` -> rows missing that column (:func:`relabel.catalog.missing.drop_missing`).

    Raises
    ------
    CatalogError
        Null or repeated ids (naming their rows), missing or non-numeric columns.
    """
    catalog = open_catalog(catalog_path, hdu=workflow.catalog.hdu)
    numeric = list(dict.fromkeys(workflow.intrinsic + workflow.observable_columns))
    label_columns = workflow.labels.columns
    source_columns = open_cutout_source(workflow).columns
    columns = list(dict.fromkeys([workflow.catalog.id, *label_columns, *numeric, *source_columns]))
    catalog.require(columns, numeric=numeric, what="training/evaluation")
    table = catalog.read_all(columns)
    check_ids(table[workflow.catalog.id], catalog.path, workflow.catalog.id)
    table, dropped = drop_missing(table, [*label_columns, *numeric], workflow.catalog.missing)
    table = as_numpy_columns(table, columns)
    return table.reset_index(drop=True), dropped


def load_labelled_cutouts(catalog_path, workflow: Workflow, seed: int, val_fraction: float, cache_dir=None,
                          normalisation: dict | None = None, progress: bool = True) -> LabelledCutouts:
    """Read a catalog's labels, binning columns and cutouts; estimate the normalisation unless given.

    The normalised cutouts go to a memory-mapped ``.npy`` file in ``cache_dir``
    (default: a temporary file, unlinked at once, that disappears with the
    process), so a survey larger than memory trains without holding every image
    in RAM. Rows whose cutout is unusable (see :mod:`relabel.status`) are left out
    and counted in ``dropped``.

    Parameters
    ----------
    catalog_path : str, Path, pandas.DataFrame or astropy.table.Table
        The catalog.
    workflow : Workflow
        Columns and cutout source.
    seed : int
        Seed of the validation split (:func:`relabel.train.split.validation_mask`) and of the
        normalisation sample.
    val_fraction : float
        Share of objects held out for validation, in (0, 1).
    cache_dir : str or Path, optional
        Folder of the memory-mapped cutout cache.
    normalisation : dict, optional
        Per-band ``offset`` and ``scale`` to use instead of estimating them on training rows.
    progress : bool
        Show a progress bar while cutouts are read.

    Returns
    -------
    LabelledCutouts
        ``images`` (n, bands, size, size) float32 normalised, ``codes``, ``intrinsic``,
        ``observables``, ``is_val``, ``normalisation``, ``dropped``.

    Raises
    ------
    CatalogError
        Missing or non-numeric columns, null or repeated ids.
    ConfigError
        No training row has a usable cutout.
    """
    workflow = catalog_coordinate_units(catalog_path, workflow)  # the cutout source reads RA/Dec in their units
    table, dropped = read_table(catalog_path, workflow)
    codes, classes = table_labels(table, workflow.labels)
    images = _cutout_cache(cache_dir, (len(table), len(workflow.cutouts.bands), workflow.cutouts.size,
                                       workflow.cutouts.size))
    status = np.empty(len(table), dtype=object)
    bar = _progress(range(0, len(table), READ_CHUNK), progress, "reading cutouts")
    with open_cutout_source(workflow) as source:
        for start in bar:
            rows = table.iloc[start:start + READ_CHUNK]
            cut = source.read(rows)
            images[start:start + len(rows)] = cut.images
            status[start:start + len(rows)] = cut.status
    usable = np.isin(status, st.PREDICTED)
    for name, count in pd.Series(status[~usable]).value_counts().items():
        dropped[f"cutout_{name}"] = int(count)
    is_val = validation_mask(table[workflow.catalog.id].to_numpy(), seed, val_fraction)
    if normalisation is None:
        train_rows = np.flatnonzero(usable & ~is_val)
        if len(train_rows) == 0:
            raise ConfigError(f"{describe_catalog(catalog_path)}: no training row has a usable cutout "
                              f"(dropped: {dropped})")
        normalisation = _estimated_normalisation(images, train_rows, seed)
    for start in range(0, len(table), READ_CHUNK):
        images[start:start + READ_CHUNK] = normalise(images[start:start + READ_CHUNK], normalisation)
    images.flush()
    keep = np.flatnonzero(usable)
    return LabelledCutouts(
        ids=table[workflow.catalog.id].to_numpy()[keep],
        images=images if keep.size == len(table) else _RowView(images, keep),
        codes=codes[keep],
        classes=classes,
        intrinsic=table[workflow.intrinsic].iloc[keep].reset_index(drop=True),
        observables=table[workflow.observable_columns].iloc[keep].reset_index(drop=True),
        is_val=is_val[keep],
        normalisation=normalisation,
        dropped=dropped,
        seed=int(seed),
        val_fraction=float(val_fraction),
    )


def _estimated_normalisation(images: np.ndarray, train_rows: np.ndarray, seed: int) -> dict:
    """The normalisation of a seeded sample of at most NORMALISATION_SAMPLE training cutouts."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(train_rows, min(NORMALISATION_SAMPLE, len(train_rows)), replace=False))
    return estimate_normalisation(images[sample])


def _cutout_cache(cache_dir, shape: tuple[int, int, int, int]) -> np.memmap:
    """A float32 memory-mapped ``.npy`` of ``shape`` in ``cache_dir``, or an anonymous one when None."""
    temporary = cache_dir is None
    cache_dir = Path(tempfile.mkdtemp(prefix="relabel-train-")) if temporary else Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"cutouts-{os.getpid()}.npy"
    images = np.lib.format.open_memmap(cache, mode="w+", dtype=np.float32, shape=shape)
    if temporary:
        # The mapping outlives its directory entry (POSIX): the cache disappears with the process, however it ends.
        with contextlib.suppress(OSError):
            cache.unlink()
            cache_dir.rmdir()
    return images


class _RowView:
    """Rows ``keep`` of an array, indexable like the array (avoids copying a memory map)."""

    def __init__(self, array: np.ndarray, keep: np.ndarray):
        self.array, self.keep = array, keep
        self.shape = (len(keep), *array.shape[1:])

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index):
        return self.array[self.keep[index]]


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from relabel.progress import progress_iter

    return progress_iter(iterable, desc, unit="chunk")
