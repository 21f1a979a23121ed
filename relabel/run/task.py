"""One shard, start to finish, on whichever process runs it: rows -> predictions -> Parquet file.

This is the function Dask runs once per shard. Its arguments are a :class:`Shard`
(row numbers) and a :class:`RunContext` (paths and options): no images and no model
travel through the task graph; the worker reads and loads them itself.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from relabel import status as st
from relabel.catalog.coordinates import sky_degrees
from relabel.catalog.labels import NO_CLASS, table_labels
from relabel.catalog.missing import as_numpy_columns, missing_mask, null_where
from relabel.catalog.reader import open_catalog
from relabel.config import Workflow
from relabel.cutouts.reader_process import open_reader, reading_processes
from relabel.model.checkpoint import CheckpointMeta
from relabel.output_columns import probability_column, spread_column
from relabel.run.inference import cached_model, configure_torch_threads, predict_rows
from relabel.run.output import METADATA_KEY, shard_path, write_table_atomic
from relabel.run.plan import Shard

UNCERTAIN = "uncertain"
ROW = "row"
NEW_COLUMNS = ("label", "label_original", "status")
COVERAGE = "coverage"


@dataclass(frozen=True)
class RunContext:
    """Everything a worker needs to process any shard of a run; small and picklable."""

    catalog: str
    hdu: int | str | None
    workflow: Workflow
    model: str
    model_hash: str
    classes: tuple[str, ...]
    out_dir: str
    schema: pa.Schema
    batch_size: int = 256
    device: str | None = None
    catalog_columns: tuple[str, ...] = field(default_factory=tuple)
    tta: bool = False

    @property
    def spread_columns(self) -> list[str]:
        """``p_<class>_std``: written with ``tta``, the spread over the square's 8 symmetries."""
        return [spread_column(c) for c in self.classes] if self.tta else []


def catalog_columns(workflow: Workflow) -> list[str]:
    """Catalog columns copied to the output, in output order (each once).

    The cutout's location (tile and index, or file) comes along so that a galaxy's
    image can be found again from the output alone (the report shows examples).

    Parameters
    ----------
    workflow : Workflow
        The run's workflow.

    Returns
    -------
    list of str
        Id, RA/Dec, label, intrinsic, observable and cutout-location columns.
    """
    cols = [workflow.catalog.id, workflow.catalog.ra, workflow.catalog.dec, *workflow.labels.columns,
            *workflow.intrinsic, *workflow.observable_columns, *workflow.catalog.passthrough,
            *workflow.cutouts.columns]
    return list(dict.fromkeys(cols))


def output_schema(catalog_dtypes: dict[str, np.dtype], classes: list[str], metadata: dict,
                  coverage: bool = False, tta: bool = False) -> pa.Schema:
    """The schema every shard file is written with, empty shards included.

    Catalog columns keep their type: nullable integers stay integers (null where missing),
    text is ``string``, and a fixed-size vector column (sub-array dtype) becomes a Parquet list column.
    ``coverage`` (layout "images") adds the share of each stamp that lay on its survey image.
    With ``tta``, the ``p_<class>`` (the mean over the square's 8 symmetries) are followed by the
    ``p_<class>_std`` columns (their standard deviation, ddof=0).

    Parameters
    ----------
    catalog_dtypes : dict of str to numpy.dtype
        The copied catalog columns and their dtypes, in output order.
    classes : list of str
        The model's classes (``p_<class>`` float32 columns).
    metadata : dict
        Key-value metadata stored in the Parquet footer (model hash, workflow, version).
    coverage : bool
        Add the ``coverage`` column (layout ``images``).
    tta : bool
        Add the ``p_<class>_std`` columns.

    Returns
    -------
    pyarrow.Schema
    """
    fields = [pa.field(ROW, pa.int64())]
    for name, dtype in catalog_dtypes.items():
        fields.append(pa.field(name, arrow_type(dtype)))
    fields += [pa.field(probability_column(c), pa.float32()) for c in classes]
    fields += [pa.field(name, pa.string()) for name in NEW_COLUMNS]
    if tta:
        fields += [pa.field(spread_column(c), pa.float32()) for c in classes]
    if coverage:
        fields.append(pa.field(COVERAGE, pa.float32()))
    import json

    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})


def arrow_type(dtype) -> pa.DataType:
    """The Arrow type of a catalog column's dtype (NumPy, pandas nullable, or NumPy sub-array for vectors).

    Parameters
    ----------
    dtype : numpy.dtype or pandas extension dtype
        The column's dtype.

    Returns
    -------
    pyarrow.DataType
    """
    if isinstance(dtype, np.dtype) and dtype.shape:
        return pa.list_(arrow_type(dtype.base))
    if isinstance(dtype, pd.ArrowDtype):  # e.g. a variable-length list column of a Parquet catalog
        return dtype.pyarrow_dtype
    if hasattr(dtype, "numpy_dtype"):  # pandas nullable integers, booleans
        dtype = dtype.numpy_dtype
    if not isinstance(dtype, np.dtype) or dtype.kind in "USO":
        return pa.string()
    return pa.from_numpy_dtype(dtype.newbyteorder("="))


def run_shard(shard: Shard, ctx: RunContext) -> dict:
    """Predict one shard and write its Parquet file; return its counts and timings.

    Per-row faults become statuses; only a fault of the whole run (e.g. the checkpoint
    changed under it) raises.

    Parameters
    ----------
    shard : Shard
        The rows to process.
    ctx : RunContext
        The run's constants (catalog, workflow, model path and hash, schema).

    Returns
    -------
    dict
        ``shard`` (name), ``rows``, ``status`` (counts), ``seconds`` per step, ``host``, ``pid``,
        ``slurm_job_id`` (None outside SLURM), ``device`` and ``reading_processes`` (child processes
        that cut the stamps; 0: a thread of the worker).

    Raises
    ------
    CheckpointError
        The checkpoint changed since the run was planned.
    """
    t_start = time.perf_counter()
    cores = configure_torch_threads()
    workflow = ctx.workflow
    catalog = open_catalog(ctx.catalog, ctx.hdu)
    columns = list(ctx.catalog_columns)
    if shard.rows is not None:
        rows = catalog.read_rows(columns, np.asarray(shard.rows))
    else:
        rows = catalog.read(columns, shard.start, shard.stop)
    t_rows = time.perf_counter()

    model, meta = cached_model(ctx.model, ctx.model_hash, ctx.device)
    status = np.full(len(rows), st.OK, dtype=object)
    status[~_valid_coordinates(rows, workflow)] = st.BAD_COORDINATES
    status[(status == st.OK) & missing_inputs(rows, meta, workflow)] = st.MISSING_INPUT
    # A shard packing several survey images tells the source each row's image (by catalog row number).
    image = shard.image if shard.images is None else pd.Series(shard.row_images(), index=shard.row_numbers())
    device = next(model.parameters()).device
    readers = reading_processes(cores, device.type == "cuda")
    with open_reader(workflow, meta.size, len(meta.bands), image, ctx.batch_size, processes=readers,
                     normalisation=meta.normalisation) as source:
        pred = predict_rows(rows, source, model, meta, ctx.batch_size, status, tta=ctx.tta)
        readers = source.processes
    t_pred = time.perf_counter()

    frame = _output_frame(rows, pred.probabilities, pred.status, ctx, pred.coverage, pred.std)
    table = pa.Table.from_pandas(frame, schema=ctx.schema, preserve_index=False)
    write_table_atomic(table, shard_path(Path(ctx.out_dir), shard.name))
    t_end = time.perf_counter()
    values, counts = np.unique(pred.status.astype(str), return_counts=True)
    return {
        "shard": shard.name,
        "rows": len(rows),
        "status": dict(zip(values.tolist(), counts.tolist())),
        # read_cutouts runs in a thread beside the forward pass, so the parts can add up to more than the
        # wall time: "predict" is that wall time, "other" what none of the parts covers (never negative).
        "seconds": {"read_rows": t_rows - t_start, **pred.timings, "predict": t_pred - t_rows,
                    "other": max(0.0, (t_pred - t_rows) - sum(pred.timings.values())), "write": t_end - t_pred,
                    "total": t_end - t_start},
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "device": str(device),
        "reading_processes": readers,
    }


def missing_inputs(rows: pd.DataFrame, meta: CheckpointMeta, workflow: Workflow) -> np.ndarray:
    """Rows missing a catalog value the model takes (null, NaN, inf or the column's missing-value code).

    Parameters
    ----------
    rows : pandas.DataFrame
        Catalog rows holding the model's input columns.
    meta : CheckpointMeta
        Its ``catalog_inputs``.
    workflow : Workflow
        The missing-value codes (``catalog.missing``).

    Returns
    -------
    numpy.ndarray of bool, shape (len(rows),)
    """
    missing = np.zeros(len(rows), dtype=bool)
    for column in meta.catalog_inputs:
        missing |= missing_mask(rows[column], workflow.catalog.missing.get(column, ()))
    return missing


def _valid_coordinates(rows: pd.DataFrame, workflow: Workflow) -> np.ndarray:
    ra, dec = sky_degrees(rows, workflow)
    with np.errstate(invalid="ignore"):
        # RA in [0, 360) or the other common convention, (-180, 180]; a WCS takes either.
        return np.isfinite(ra) & np.isfinite(dec) & (ra >= -180) & (ra < 360) & (np.abs(dec) <= 90)


def original_labels(rows: pd.DataFrame, workflow: Workflow) -> np.ndarray:
    """The catalog's own class of each row: None where a label column is missing (NaN vote fractions, nulls,
    declared codes), ``uncertain`` where no fraction passes its threshold.

    Parameters
    ----------
    rows : pandas.DataFrame
        Catalog rows with the workflow's label columns.
    workflow : Workflow
        Its label options (columns, thresholds, missing-value codes).

    Returns
    -------
    numpy.ndarray of object, shape (len(rows),)
        A class name, ``uncertain`` or None per row.
    """
    labels = workflow.labels
    missing = np.zeros(len(rows), dtype=bool)
    for column in labels.columns:
        missing |= missing_mask(rows[column], workflow.catalog.missing.get(column, ()))
    original = np.full(len(rows), None, dtype=object)
    if (~missing).any():
        present = as_numpy_columns(rows[~missing], labels.columns)
        codes, names = table_labels(present, labels)
        known = np.full(len(present), UNCERTAIN, dtype=object)
        known[codes != NO_CLASS] = np.asarray(names, dtype=object)[codes[codes != NO_CLASS]]
        original[~missing] = known
    return original


def _output_frame(rows: pd.DataFrame, probs: np.ndarray, status: np.ndarray, ctx: RunContext,
                  coverage: np.ndarray | None = None, spread: np.ndarray | None = None) -> pd.DataFrame:
    out = {ROW: rows.index.to_numpy(dtype=np.int64)}
    codes = ctx.workflow.catalog.missing
    for col in ctx.catalog_columns:
        # nulls stay null (nullable integers, NaN, None); declared missing-value codes become null too
        out[col] = null_where(rows[col], missing_mask(rows[col], codes[col])) if col in codes else rows[col].array
    classes = np.asarray(ctx.classes, dtype=object)
    for k, name in enumerate(ctx.classes):
        out[probability_column(name)] = probs[:, k]
    predicted = np.isin(status, st.PREDICTED)
    label = np.full(len(rows), None, dtype=object)
    if predicted.any():
        label[predicted] = classes[np.argmax(probs[predicted], axis=1)]
    out["label"] = label
    out["label_original"] = original_labels(rows, ctx.workflow)
    out["status"] = status.astype(str).astype(object)
    for k, name in enumerate(ctx.spread_columns):
        out[name] = spread[:, k] if spread is not None else np.full(len(rows), np.nan, dtype=np.float32)
    if COVERAGE in ctx.schema.names:
        out[COVERAGE] = coverage
    return pd.DataFrame(out)
