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
from relabel.catalog.reader import open_catalog
from relabel.config import Workflow
from relabel.cutouts.sources import open_cutout_source
from relabel.run.inference import cached_model, configure_torch_threads, predict_rows
from relabel.catalog.labels import NO_CLASS, table_labels
from relabel.run.output import METADATA_KEY, shard_path, write_table_atomic
from relabel.run.plan import Shard

UNCERTAIN = "uncertain"
ROW = "row"
NEW_COLUMNS = ("label", "label_original", "status")


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
    def probability_columns(self) -> list[str]:
        return [f"p_{c}" for c in self.classes]

    @property
    def spread_columns(self) -> list[str]:
        """``p_<class>_std``: written with ``tta``, the spread over the square's 8 symmetries."""
        return [f"p_{c}_std" for c in self.classes] if self.tta else []


def catalog_columns(workflow: Workflow) -> list[str]:
    """Catalog columns copied to the output, in output order (each once).

    The cutout's location (tile and index, or file) comes along so that a galaxy's
    image can be found again from the output alone (the report shows examples).
    """
    cols = [workflow.catalog.id, workflow.catalog.ra, workflow.catalog.dec, *workflow.labels.columns,
            *workflow.intrinsic, *workflow.observable_columns, *workflow.catalog.passthrough,
            *workflow.cutouts.columns]
    return list(dict.fromkeys(cols))


def output_schema(catalog_dtypes: dict[str, np.dtype], classes: list[str], metadata: dict,
                  tta: bool = False) -> pa.Schema:
    """The schema every shard file is written with, empty shards included.

    With ``tta``, each ``p_<class>`` (the mean over the square's 8 symmetries) is
    followed by the ``p_<class>_std`` columns (their standard deviation, ddof=0).
    """
    fields = [pa.field(ROW, pa.int64())]
    for name, dtype in catalog_dtypes.items():
        if dtype.kind in "USO":
            fields.append(pa.field(name, pa.string()))
        else:
            fields.append(pa.field(name, pa.from_numpy_dtype(dtype.newbyteorder("="))))
    fields += [pa.field(f"p_{c}", pa.float32()) for c in classes]
    if tta:
        fields += [pa.field(f"p_{c}_std", pa.float32()) for c in classes]
    fields += [pa.field(name, pa.string()) for name in NEW_COLUMNS]
    import json

    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})


def run_shard(shard: Shard, ctx: RunContext) -> dict:
    """Predict one shard and write its Parquet file; return its counts and timings.

    Per-row faults become statuses; only a fault of the whole run (e.g. the checkpoint
    changed under it) raises.
    """
    t_start = time.perf_counter()
    configure_torch_threads()
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
    with open_cutout_source(workflow, meta.size, len(meta.bands)) as source:
        pred = predict_rows(rows, source, model, meta, ctx.batch_size, status, tta=ctx.tta)
    t_pred = time.perf_counter()

    frame = _output_frame(rows, pred.probabilities, pred.status, ctx, pred.std)
    table = pa.Table.from_pandas(frame, schema=ctx.schema, preserve_index=False)
    write_table_atomic(table, shard_path(Path(ctx.out_dir), shard.name))
    t_end = time.perf_counter()
    values, counts = np.unique(pred.status.astype(str), return_counts=True)
    return {
        "shard": shard.name,
        "rows": len(rows),
        "status": dict(zip(values.tolist(), counts.tolist())),
        "seconds": {"read_rows": t_rows - t_start, **pred.timings,
                    "other": (t_pred - t_rows) - sum(pred.timings.values()), "write": t_end - t_pred,
                    "total": t_end - t_start},
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "device": str(next(model.parameters()).device),
    }


def _valid_coordinates(rows: pd.DataFrame, workflow: Workflow) -> np.ndarray:
    ra = rows[workflow.catalog.ra].to_numpy(dtype=np.float64)
    dec = rows[workflow.catalog.dec].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(ra) & np.isfinite(dec) & (ra >= 0) & (ra < 360) & (np.abs(dec) <= 90)


def _output_frame(rows: pd.DataFrame, probs: np.ndarray, status: np.ndarray, ctx: RunContext,
                  spread: np.ndarray | None = None) -> pd.DataFrame:
    out = {ROW: rows.index.to_numpy(dtype=np.int64)}
    for col in ctx.catalog_columns:
        out[col] = rows[col].to_numpy()
    classes = np.asarray(ctx.classes, dtype=object)
    for k, name in enumerate(ctx.classes):
        out[f"p_{name}"] = probs[:, k]
    for k, name in enumerate(ctx.spread_columns):
        out[name] = spread[:, k]
    predicted = np.isin(status, st.PREDICTED)
    label = np.full(len(rows), None, dtype=object)
    if predicted.any():
        label[predicted] = classes[np.argmax(probs[predicted], axis=1)]
    out["label"] = label
    codes, names = table_labels(rows, ctx.workflow.labels)
    original = np.full(len(rows), UNCERTAIN, dtype=object)
    known = codes != NO_CLASS
    original[known] = np.asarray(names, dtype=object)[codes[known]]
    out["label_original"] = original
    out["status"] = status.astype(str).astype(object)
    return pd.DataFrame(out)
