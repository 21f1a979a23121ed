"""`relabel run`: plan shards, run them on a cluster, and finish the Parquet dataset.

The client checks everything it can before submitting (catalog columns and values,
the checkpoint against the cutouts, the output folder), so a bad input fails in
seconds, not on a worker an hour later. Then one task per shard; the model travels
by path. The dataset's ``_common_metadata`` and ``_summary.json`` are written on the
client once every shard file is in place.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from relabel import __version__
from relabel.catalog.reader import Catalog, open_catalog
from relabel.run.clusters import ClusterOptions, start_cluster
from relabel.config import Workflow, load_workflow
from relabel.errors import CatalogError, ConfigError
from relabel.model.checkpoint import read_checkpoint
from relabel.run.output import SUMMARY, prepare_output, write_common_metadata, write_json_atomic, write_table_atomic
from relabel.run.plan import plan_shards
from relabel.run.task import NEW_COLUMNS, ROW, RunContext, catalog_columns, output_schema, run_shard


@dataclass
class RunResult:
    """What a run did: where its output is and what it counted."""

    out_dir: Path
    summary: dict
    dashboard: str | None = None
    shard_results: list[dict] = field(default_factory=list)


def run_catalog(
    catalog: str | Path,
    model: str | Path,
    out_dir: str | Path,
    workflow: str | Path | Workflow | None = None,
    cluster: ClusterOptions | None = None,
    shard_size: int | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    bias: bool = True,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Re-label every row of ``catalog`` with the checkpoint ``model``; write Parquet to ``out_dir``.

    ``workflow`` defaults to the mapping recorded in the checkpoint, with paths relative
    to the catalog's folder. Returns the run summary (also in ``out_dir/_summary.json``).
    """
    t0 = time.perf_counter()
    catalog, model, out_dir = Path(catalog), Path(model), Path(out_dir)
    _, meta = read_checkpoint(model)
    wf = _resolve_workflow(workflow, meta, catalog)
    cat = open_catalog(catalog, wf.catalog.hdu if catalog.suffix.lower() not in (".parquet", ".pq") else None)
    validate_catalog(cat, wf, meta.classes)
    meta.check_input(wf.cutouts.bands, wf.cutouts.size, source=f"the cutouts of workflow {wf.source or wf.name}")
    if meta.metrics.get("collapse_guard_passed") is False:
        # Not an error: the user may want exactly this model, but they should know.
        echo(f"warning: {model} failed its collapse guard in training (no epoch after the warm-up kept its "
             f"balanced accuracy; lambda {meta.lam:g} is probably too large): its labels may be one class")
    if meta.metrics.get("settled") is False:
        echo(f"warning: {model} had not settled when its training stopped (its validation class balance or "
             f"accuracy still moved between epochs; lambda {meta.lam:g}): its labels may depend on the epoch kept")
    shard_size = shard_size or int(wf.run["shard_size"])
    batch_size = batch_size or int(wf.run["batch_size"])
    shards = plan_shards(cat, wf, shard_size)
    t_plan = time.perf_counter() - t0

    record = {
        "relabel_version": __version__,
        "catalog": str(catalog.resolve()),
        "catalog_rows": cat.nrows,
        "model": str(model.resolve()),
        "model_hash": meta.content_hash,
        "method": meta.method,
        "workflow_hash": wf.hash(),
        "workflow": wf.raw,
        # Relative paths in the workflow (cutout root) resolve against this folder.
        "workflow_base": str((Path(wf.source).parent if wf.source and Path(wf.source).is_file() else catalog.parent).resolve()),
        "shard_size": shard_size,
        "n_shards": len(shards),
        "classes": list(meta.classes),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    done = prepare_output(out_dir, record, resume, overwrite)
    columns = catalog_columns(wf)
    clash = [c for c in columns if c in (ROW, *NEW_COLUMNS) or c in [f"p_{k}" for k in meta.classes]]
    if clash:
        raise CatalogError(f"{catalog}: column(s) {', '.join(clash)} would clash with relabel's output columns")
    parquet_meta = {k: record[k] for k in ("relabel_version", "model_hash", "method", "workflow_hash", "started")}
    parquet_meta["workflow_name"] = wf.name
    schema = output_schema({c: cat.dtype(c) for c in columns}, list(meta.classes), parquet_meta)
    ctx = RunContext(
        catalog=str(catalog.resolve()), hdu=getattr(cat, "hdu", None), workflow=wf, model=str(model.resolve()),
        model_hash=meta.content_hash, classes=tuple(meta.classes), out_dir=str(out_dir.resolve()), schema=schema,
        batch_size=batch_size, catalog_columns=tuple(columns),
    )
    todo = [s for s in shards if s.name not in done]
    echo(f"relabel run: {cat.nrows} rows in {len(shards)} shards of <= {shard_size} "
         f"({len(shards) - len(todo)} already written), planned in {t_plan:.2f} s")
    if cat.nrows == 0:
        echo("relabel run: the catalog is empty; writing an empty output")

    results: list[dict] = []
    t_run = time.perf_counter()
    opts = _cluster_options(cluster, wf, out_dir)
    dashboard = None
    if todo:
        with start_cluster(opts) as handle:
            dashboard = handle.dashboard
            echo(f"cluster: {handle.description}")
            if dashboard:
                echo(f"dashboard: {dashboard}")
            results = _execute(handle, todo, ctx, progress)
    elapsed = time.perf_counter() - t_run

    if not shards:
        # pandas reads a folder with no data file as a table without columns: one empty shard keeps the schema.
        write_table_atomic(schema.empty_table(), out_dir / "part-000000.parquet")
    write_common_metadata(out_dir, schema)
    summary = summarise(out_dir, wf, record, results, elapsed, t_plan, bias=bias)
    write_json_atomic(out_dir / SUMMARY, summary)
    echo(f"output: {out_dir.resolve()}  ({summary['rows_out']} rows; statuses {summary['status']})")
    return RunResult(out_dir, summary, dashboard, results)


def _cluster_options(cluster: ClusterOptions | None, wf: Workflow, out_dir: Path) -> ClusterOptions:
    """The CLI's choices over the workflow's ``cluster`` section; SLURM settings merged the same way."""
    import dataclasses

    opts = dataclasses.replace(cluster) if cluster else ClusterOptions()
    opts.kind = opts.kind or wf.cluster.get("kind", "local")
    if opts.kind == "slurm" and not opts.scheduler:
        from relabel.run.jobqueue import merged_settings

        opts.extra = {**opts.extra, "out_dir": str(out_dir), "settings": merged_settings(opts.extra.get("slurm", {}), wf.cluster)}
    return opts


def slurm_dry_run(catalog, model, out_dir, workflow, cluster: ClusterOptions) -> str:
    """The job script `--cluster slurm` would submit; nothing is submitted and no output is written."""
    import tempfile

    from relabel.run.jobqueue import job_script

    _, meta = read_checkpoint(Path(model))
    wf = _resolve_workflow(workflow, meta, Path(catalog))
    opts = _cluster_options(cluster, wf, Path(out_dir))
    if opts.kind != "slurm":
        raise ConfigError("--dry-run shows a SLURM job script: use it with --cluster slurm")
    with tempfile.TemporaryDirectory() as scratch:
        script = job_script(opts.extra["settings"], Path(scratch), opts)
    return script.replace(scratch, str(Path(out_dir).resolve()))


def _resolve_workflow(workflow, meta, catalog: Path) -> Workflow:
    if isinstance(workflow, Workflow):
        return workflow
    if workflow is not None:
        return load_workflow(workflow)
    if not meta.workflow:
        raise ConfigError("the checkpoint records no workflow mapping: give one with --config")
    return Workflow.from_dict(meta.workflow, base_dir=catalog.parent, source="the workflow recorded in the checkpoint")


def validate_catalog(cat: Catalog, wf: Workflow, classes) -> None:
    """Fail before any work is submitted: missing or non-numeric columns, bad probabilities, duplicate ids.

    Raises
    ------
    CatalogError
        Naming the catalog, the column and the offending count / first rows.
    """
    numeric = [wf.catalog.ra, wf.catalog.dec, *wf.intrinsic, *wf.observable_columns]
    if wf.labels.probabilities:
        numeric += wf.labels.columns
    if wf.cutouts.layout == "tiles":
        numeric.append(wf.cutouts.index_column)
    cat.require(catalog_columns(wf), numeric=numeric, what=f"workflow {wf.source or wf.name}")
    ids_seen = []
    prob_cols = wf.labels.columns if wf.labels.probabilities else []
    for chunk in cat.iter_chunks([wf.catalog.id, *prob_cols]):
        for col in prob_cols:
            values = chunk[col].to_numpy()
            with np.errstate(invalid="ignore"):
                bad = (values < 0) | (values > 1)
            if bad.any():
                first = chunk.index[np.flatnonzero(bad)[:3]].tolist()
                raise CatalogError(
                    f"{cat.path}: column {col} holds {int(bad.sum())} value(s) outside [0, 1] "
                    f"(first at rows {first}); label probabilities must be vote fractions"
                )
        ids_seen.append(chunk[wf.catalog.id].to_numpy())
    if ids_seen:
        ids = np.concatenate(ids_seen)
        uniq, counts = np.unique(ids, return_counts=True)
        dup = uniq[counts > 1]
        if len(dup):
            raise CatalogError(
                f"{cat.path}: column {wf.catalog.id} repeats {len(dup)} id(s) (e.g. {dup[:5].tolist()}); "
                "relabel needs one row per galaxy: deduplicate the catalog first"
            )


def _execute(handle, shards, ctx: RunContext, progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(shards), unit="shard", desc="relabel", disable=not progress, file=sys.stderr)
    results = []
    try:
        if handle.client is None:
            for shard in shards:
                results.append(run_shard(shard, ctx))
                bar.update()
            return results
        from distributed import as_completed

        # Resources go with the submission itself: annotations on a graph can be lost in optimisation.
        resources = {"GPU": 1} if handle.gpu else None
        futures = handle.client.map(
            run_shard, shards, ctx=ctx, key=[f"relabel-{s.name}-{ctx.model_hash[:8]}" for s in shards],
            resources=resources, retries=2, pure=False,
        )
        try:
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
        except BaseException:
            handle.client.cancel(futures)
            raise
        return results
    finally:
        bar.close()


def summarise(out_dir: Path, wf: Workflow, record: dict, results: list[dict], elapsed: float,
              t_plan: float, bias: bool = True) -> dict:
    """Counts read back from the files (so a resumed run counts every shard), timings, and L."""
    import pyarrow.dataset as ds

    files = sorted(out_dir.glob("part-*.parquet"))
    status = {}
    rows_out = 0
    if files:
        table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["status"])
        values, counts = np.unique(np.asarray(table.column("status").to_pylist(), dtype=object).astype(str),
                                   return_counts=True)
        status = dict(zip(values.tolist(), counts.tolist()))
        rows_out = int(counts.sum())
    n_new = sum(r["rows"] for r in results)
    seconds = {}
    for r in results:
        for k, v in r["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
    summary = {
        "relabel_version": __version__,
        "rows_in": record["catalog_rows"],
        "rows_out": rows_out,
        "status": status,
        "shards": record["n_shards"],
        "shards_this_run": len(results),
        "plan_seconds": round(t_plan, 3),
        "run_seconds": round(elapsed, 3),
        "rows_per_second": round(n_new / elapsed, 1) if elapsed > 0 and n_new else None,
        "task_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "workers": sorted({f"{r['host']}:{r['pid']}" for r in results}),
        "slurm_job_ids": sorted({r["slurm_job_id"] for r in results if r.get("slurm_job_id")}),
        "model_hash": record["model_hash"],
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if bias and rows_out:
        summary["labeling_bias"] = output_bias(out_dir, wf, record["classes"])
    return summary


def output_bias(out_dir: Path, wf: Workflow, classes: list[str]) -> dict:
    """L of the original labels (as the workflow defines them, every row) and of the new labels (predicted rows).

    Computed by :func:`relabel.bias.table.bias_of_table` on the output folder, so the numbers are
    those ``relabel bias OUT_DIR`` prints. Too few objects for the workflow's bins (a small
    run) is reported as the error text instead of failing the run.
    """
    from relabel.bias.table import bias_of_table
    from relabel.errors import RelabelError

    out = {}
    for key, overrides in (("original", {}), ("new", {"label_column": "label", "classes": list(classes)})):
        try:
            out[key] = bias_of_table(out_dir, wf, overrides).to_dict()
        except RelabelError as exc:
            out[key] = {"error": str(exc)}
    return out
