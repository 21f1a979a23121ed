"""`predict_frame`: re-label one DataFrame partition in this process, for ``map_partitions``.

The same per-row work as a shard of ``relabel run`` (coordinates checked, cutouts read,
normalised and predicted, faults as statuses), on rows the caller already holds: a
pandas DataFrame, or each partition of a Dask (or LSDB) DataFrame. The model is loaded
once per process and travels by path, never inside the task graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from relabel import status as st
from relabel.config import Workflow
from relabel.run.workflow import resolve_workflow


def predict_frame(df: pd.DataFrame, model: str | Path, workflow: str | Path | Workflow | None = None, *,
                  batch_size: int | None = None, device: str | None = None) -> pd.DataFrame:
    """The rows of ``df`` with the new columns of ``relabel run``.

    The new columns are ``p_<class>``, ``label``, ``label_original`` and ``status``.

    Parameters
    ----------
    df : pandas.DataFrame
        Catalog rows with the workflow's columns (id, ra, dec, labels, cutout location). An
        empty frame returns the empty output, without loading the model: pass
        ``predict_frame(ddf._meta, model, workflow)`` as ``meta=`` to ``map_partitions``.
    model : str or Path
        Checkpoint from ``relabel train``.
    workflow : str, Path or Workflow, optional
        Default: the mapping recorded in the checkpoint, paths relative to the working folder.
    batch_size : int, optional
        Cutouts per forward pass (default: ``run.batch_size``).
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1``... (default: a GPU when there is one).

    Returns
    -------
    pandas.DataFrame
        ``df``'s columns and index, then the new ones; statuses as in :mod:`relabel.status`.

    Examples
    --------
    With a Dask DataFrame ``ddf`` of catalog rows (tests/run/test_frame.py runs exactly this)::

        meta = relabel.predict_frame(ddf._meta, "model.pt", "workflow.yaml")
        out = ddf.map_partitions(relabel.predict_frame, "model.pt", "workflow.yaml", meta=meta)
    """
    from relabel.catalog.coordinates import catalog_coordinate_units
    from relabel.cutouts.sources import open_cutout_source
    from relabel.model.checkpoint import read_checkpoint
    from relabel.run.inference import cached_model, predict_rows
    from relabel.run.task import RunContext, _output_frame, _valid_coordinates, missing_inputs

    if len(df) == 0:
        _, meta = read_checkpoint(model)
        wf = resolve_workflow(workflow, meta, Path.cwd(), model)
        probs = np.zeros((0, meta.n_classes), dtype=np.float32)
        status = np.zeros(0, dtype=object)
    else:
        net, meta = cached_model(model, None, device)
        wf = resolve_workflow(workflow, meta, Path.cwd(), model)
        rows = df.reset_index(drop=True)
        # A DataFrame states no units: only the workflow's count, so no copy of the partition is needed.
        wf = catalog_coordinate_units(rows.iloc[:0], wf)
        status = np.full(len(rows), st.OK, dtype=object)
        status[~_valid_coordinates(rows, wf)] = st.BAD_COORDINATES
        meta.check_columns(rows.columns, source="the DataFrame")
        status[(status == st.OK) & missing_inputs(rows, meta, wf)] = st.MISSING_INPUT
        with open_cutout_source(wf, meta.size, len(meta.bands)) as source:
            pred = predict_rows(rows, source, net, meta, batch_size or int(wf.run["batch_size"]), status)
        probs, status = pred.probabilities, pred.status
    # The same columns, in the same way, as a shard file of `relabel run`.
    # No catalog columns are copied (df keeps its own), no spread columns and no coverage column.
    ctx = RunContext(catalog="", hdu=None, workflow=wf, model=str(model), model_hash=meta.content_hash,
                     classes=tuple(meta.classes), out_dir="", schema=pa.schema([]))
    new = _output_frame(df.reset_index(drop=True), probs, status, ctx).drop(columns="row")
    new.index = df.index
    if len(df) == 0:
        new = new.astype({c: "float32" for c in new.columns if c.startswith("p_")})
    return pd.concat([df, new], axis=1)
