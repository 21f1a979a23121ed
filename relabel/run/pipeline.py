"""`relabel run`: plan shards, run them on a cluster, and finish the Parquet dataset.

The client checks everything it can before submitting (catalog columns and values,
the checkpoint against the cutouts, the output folder), so a bad input fails in
seconds, not on a worker an hour later. Then one task per shard; the model travels
by path. The dataset's ``_common_metadata`` and ``_summary.json`` are written on the
client once every shard file is in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from relabel import __version__
from relabel.catalog.coordinates import resolve_coordinate_units
from relabel.catalog.ids import check_ids
from relabel.catalog.labels import fraction_hint
from relabel.catalog.missing import missing_mask
from relabel.catalog.reader import Catalog, open_catalog
from relabel.config import JOB_QUEUES, Workflow
from relabel.cutouts.root import check_cutout_root
from relabel.errors import CatalogError, ConfigError, ModelWarning
from relabel.model.checkpoint import read_checkpoint
from relabel.output_columns import probability_column, spread_column
from relabel.run.clusters import ClusterOptions, no_cluster, start_cluster
from relabel.run.output import (
    RUN_RECORD,
    SUMMARY,
    null_counts,
    prepare_output,
    write_common_metadata,
    write_json_atomic,
    write_table_atomic,
)
from relabel.run.plan import check_rows_on_images, plan_digest, plan_shards
from relabel.run.task import NEW_COLUMNS, ROW, RunContext, catalog_columns, output_schema, run_shard
from relabel.run.workflow import resolve_workflow

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run did: where its output is and what it counted."""

    out_dir: Path
    summary: dict
    dashboard: str | None = None
    shard_results: list[dict] = field(default_factory=list)


def run_catalog(catalog, model: str | Path, out_dir: str | Path, *,
                workflow: str | Path | Workflow | None = None, cluster: ClusterOptions | None = None, client=None,
                shard_size: int | None = None, batch_size: int | None = None, resume: bool = False,
                overwrite: bool = False, progress: bool = True, bias: bool = True,
                echo: Callable[[str], None] | None = None, tta: bool = False) -> RunResult:
    """Re-label every row of ``catalog`` with the checkpoint ``model``; write Parquet to ``out_dir``.

    Parameters
    ----------
    catalog : str, Path, pandas.DataFrame or astropy.table.Table
        FITS or Parquet catalog; a table in memory is kept with the output as ``_catalog.parquet``
        (the file every worker reads), once the run has passed its checks.
    model, out_dir : str or Path
        Checkpoint from ``relabel train``, output folder (a Parquet dataset).
    workflow : str, Path or Workflow, optional
        Default: the mapping recorded in the checkpoint, paths relative to the catalog's folder.
    cluster : ClusterOptions, optional
        Where shards run. Not given: ``client``, else the caller's active ``distributed.Client``
        (LSDB's rule: no cluster behind the user's back), else the workflow's ``cluster.kind``.
    client : distributed.Client, optional
        Run on this client; it is neither closed nor changed.
    shard_size : int, optional
        Rows per shard (default: ``run.shard_size``; with ``resume``, the interrupted run's).
    echo : callable, optional
        Also called with each progress line (they go to the ``relabel`` logger in any case).
    tta : bool
        Average the square's 8 symmetries per galaxy (test-time augmentation) and add the
        ``p_<class>_std`` columns (their spread).

    Returns
    -------
    RunResult
        The run summary (also in ``out_dir/_summary.json``). See docs/python.md for examples.

    Raises
    ------
    RelabelError
        A catalog, workflow, checkpoint, output folder or cluster that fails its checks; a refused
        run leaves the output folder as it found it.
    """
    options = dict(workflow=workflow, cluster=cluster, client=client, shard_size=shard_size, batch_size=batch_size,
                   resume=resume, overwrite=overwrite, progress=progress, bias=bias, echo=echo, tta=tta)
    if isinstance(catalog, (str, Path)):
        return _run(Path(catalog), None, Path(model), Path(out_dir), **options)
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "catalog.parquet"
        _table_frame(catalog).to_parquet(staged, index=False)
        return _run(Path(out_dir) / IN_MEMORY_CATALOG, staged, Path(model), Path(out_dir), **options)


#: Where a catalog given as a DataFrame or Table is kept, with the output it produced.
IN_MEMORY_CATALOG = "_catalog.parquet"


def _table_frame(catalog):
    """A pandas DataFrame of a DataFrame or an astropy Table (masked values become missing ones)."""
    import pandas as pd

    if isinstance(catalog, pd.DataFrame):
        return catalog
    try:
        from astropy.table import Table
    except ImportError:  # pragma: no cover - astropy is a dependency
        Table = ()
    if isinstance(catalog, Table):
        table = catalog.copy(copy_data=False)
        table.convert_bytestring_to_unicode()  # FITS text columns: paths and ids as str, not bytes
        return table.to_pandas()
    raise CatalogError(f"catalog must be a path, a pandas DataFrame or an astropy Table, got {type(catalog).__name__}")


def _run(catalog: Path, staged: Path | None, model: Path, out_dir: Path, *, workflow, cluster, client, shard_size,
         batch_size, resume, overwrite, progress, bias, echo, tta) -> RunResult:
    """:func:`run_catalog` on a catalog file; ``staged``: the file to read now, moved to ``catalog`` once prepared."""
    say = _announcer(echo)
    t0 = time.perf_counter()
    _, meta = read_checkpoint(model)
    seen_as = catalog if staged is None else Path.cwd() / catalog.name
    wf = resolve_workflow(workflow, meta, seen_as.resolve().parent, model)
    source = staged or catalog
    cat = open_catalog(source, wf.catalog.hdu if source.suffix.lower() not in (".parquet", ".pq") else None)
    wf = resolve_coordinate_units(cat, wf)
    validate_catalog(cat, wf, meta.classes)
    meta.check_input(wf.cutouts.bands, wf.cutouts.size, source=f"the cutouts of workflow {wf.source or wf.name}")
    meta.check_columns(wf.intrinsic, source=f"workflow {wf.source or wf.name} (intrinsic columns {wf.intrinsic})")
    check_cutout_root(wf, cat, "" if workflow is not None else "the checkpoint's recorded root, relative to the "
                      "catalog's real folder")
    _warn_about_training(model, meta, echo)
    shard_size = shard_size or (_recorded_shard_size(out_dir) if resume else None) or int(wf.run["shard_size"])
    batch_size = batch_size or int(wf.run["batch_size"])
    shards = plan_shards(cat, wf, shard_size)
    if wf.cutouts.layout == "images":  # the images' own WCS says their scale
        from relabel.cutouts.images import check_pixel_scales

        check_rows_on_images(shards, cat, wf)
        check_pixel_scales({i for s in shards for i in s.image_names}, wf.cutouts, meta.pixel_scale(wf),
                           f"checkpoint {model}")
    else:
        meta.check_pixel_scale(wf, f"checkpoint {model}")
    _warn_about_sky(cat, wf, meta, shards, model, echo)
    t_plan = time.perf_counter() - t0
    record = _run_record(catalog, cat, model, meta, wf, shard_size, len(shards))
    record["plan"] = plan_digest(shards)
    if tta:
        record["tta"] = True  # only when set, so that records written before the option still resume
    columns = catalog_columns(wf)
    clash = [c for c in columns if c in (ROW, *NEW_COLUMNS) or c in [probability_column(k) for k in meta.classes]
             or (tta and c in [spread_column(k) for k in meta.classes])]
    if clash:
        raise CatalogError(f"{catalog}: column(s) {', '.join(clash)} would clash with relabel's output columns")
    _refuse_occupied_output(out_dir, record, resume, overwrite)
    ctx = _run_context(catalog, cat, model, meta, wf, record, out_dir, batch_size, columns, tta)
    schema = ctx.schema
    opts = cluster_options(cluster, wf, out_dir)
    t_run = time.perf_counter()
    with _undo_on_failure(out_dir) as started:
        # The folder is prepared first (job queues keep their logs and credentials in it), and put
        # back as it was if the cluster then fails to start.
        done = prepare_output(out_dir, record, resume, overwrite)
        if staged is not None:
            shutil.move(staged, catalog)
        todo = [s for s in shards if s.name not in done]
        # Nothing to run (an empty catalog, a finished run resumed): no cluster is started.
        with (_cluster_for(opts, client, cluster) if todo else no_cluster(opts)) as handle:
            started()
            results = _report_and_execute(handle, todo, shards, cat.nrows, shard_size, t_plan, ctx, progress, say)
        dashboard = handle.dashboard
    elapsed = time.perf_counter() - t_run

    if not shards:
        # pandas reads a folder with no data file as a table without columns: one empty shard keeps the schema.
        write_table_atomic(schema.empty_table(), out_dir / "part-000000.parquet")
    write_common_metadata(out_dir, schema)
    summary = summarise(out_dir, wf, record, results, elapsed, t_plan, bias=bias)
    write_json_atomic(out_dir / SUMMARY, summary)
    say(f"output: {out_dir.resolve()}  ({summary['rows_out']} rows; statuses {summary['status']})")
    return RunResult(out_dir, summary, dashboard, results)


def _warn_about_training(model: Path, meta, echo) -> None:
    """Warn (not fail: the user may want exactly this model) when its training flagged it as doubtful."""
    doubts = {
        "collapse_guard_passed": (f"{model} failed its collapse guard in training (no epoch after the warm-up kept its "
                                  f"balanced accuracy; lambda {meta.lam:g} is probably too large): its labels may be "
                                  "one class"),
        "settled": (f"{model} had not settled when its training stopped (its validation class balance or accuracy "
                    f"still moved between epochs; lambda {meta.lam:g}): its labels may depend on the epoch kept"),
    }
    if meta.method != "debiased":
        doubts.pop("settled")  # the settlement check watches the de-biasing penalty's feedback loop
    for metric, text in doubts.items():
        if meta.metrics.get(metric) is False:
            warnings.warn(text, ModelWarning, stacklevel=3)
            if echo:
                echo(f"warning: {text}")


def _warn_about_sky(cat: Catalog, wf: Workflow, meta, shards: list, model: Path, echo) -> None:
    """Warn (the user may mean it) when the stamps' sky noise or level is far from the training's.

    Images in other units or at another zero-point are otherwise read without any sign
    of trouble, and every label would be that of a brighter or fainter galaxy.
    """
    from relabel.cutouts.sources import open_cutout_source
    from relabel.model.normalisation import SKY_SAMPLE, warn_if_sky_differs

    shard = next((s for s in shards if s.image != ""), None)  # layout images: a shard of rows on an image
    if shard is None:
        return
    numbers = shard.row_numbers()[:SKY_SAMPLE]
    image = pd.Series(shard.row_images()[:SKY_SAMPLE], index=numbers) if wf.cutouts.layout == "images" else None
    with open_cutout_source(wf, meta.size, len(meta.bands), image=image) as source:
        cut = source.read(cat.read_rows(list(source.columns), numbers))
    warn_if_sky_differs(cut.images, cut.status, meta.normalisation, meta.bands, str(model), echo)


def _run_context(catalog: Path, cat: Catalog, model: Path, meta, wf: Workflow, record: dict, out_dir: Path,
                 batch_size: int, columns: list[str], tta: bool = False) -> RunContext:
    parquet_meta = {k: record[k] for k in ("relabel_version", "model_hash", "method", "workflow_hash", "started")}
    parquet_meta["workflow_name"] = wf.name
    parquet_meta["tta"] = bool(tta)
    schema = output_schema({c: cat.dtype(c) for c in columns}, list(meta.classes), parquet_meta,
                           coverage=wf.cutouts.layout == "images", tta=tta)
    return RunContext(
        catalog=str(catalog.resolve()), hdu=getattr(cat, "hdu", None), workflow=wf, model=str(model.resolve()),
        model_hash=meta.content_hash, classes=tuple(meta.classes), out_dir=str(out_dir.resolve()), schema=schema,
        batch_size=batch_size, catalog_columns=tuple(columns), tta=bool(tta),
    )


def _report_and_execute(handle, todo, shards, nrows, shard_size, t_plan, ctx, progress, say) -> list[dict]:
    say(f"relabel run: {nrows} rows in {len(shards)} shards of <= {shard_size} "
        f"({len(shards) - len(todo)} already written), planned in {t_plan:.2f} s")
    if nrows == 0:
        say("relabel run: the catalog is empty; writing an empty output")
    say(f"cluster: {handle.description}")
    if handle.dashboard:
        say(f"dashboard: {handle.dashboard}")
    return _execute(handle, todo, ctx, progress) if todo else []


def _announcer(echo: Callable[[str], None] | None) -> Callable[[str], None]:
    def say(line: str) -> None:
        log.info(line)
        if echo:
            echo(line)

    return say


def _run_record(catalog: Path, cat: Catalog, model: Path, meta, wf: Workflow, shard_size: int, n_shards: int) -> dict:
    return {
        "relabel_version": __version__,
        "catalog": str(catalog.resolve()),
        "catalog_rows": cat.nrows,
        "model": str(model.resolve()),
        "model_hash": meta.content_hash,
        "method": meta.method,
        "workflow_hash": wf.hash(),
        "workflow": wf.raw,
        # Relative paths in the workflow (cutout root) resolve against this folder.
        "workflow_base": str((Path(wf.source).parent if wf.source and Path(wf.source).is_file()
                              else catalog.parent).resolve()),
        "shard_size": shard_size,
        "n_shards": n_shards,
        "classes": list(meta.classes),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _recorded_shard_size(out_dir: Path) -> int | None:
    """The shard size of the run being resumed: its shard names depend on it."""
    try:
        return int(json.loads((out_dir / RUN_RECORD).read_text())["shard_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _refuse_occupied_output(out_dir: Path, record: dict, resume: bool, overwrite: bool) -> None:
    """Fail on an occupied output folder before a cluster is started (prepare_output writes nothing when it refuses)."""
    occupied = out_dir.is_dir() and any(out_dir.iterdir())
    if (resume and overwrite) or (occupied and not (resume or overwrite)):
        prepare_output(out_dir, record, resume, overwrite)


@contextlib.contextmanager
def _undo_on_failure(out_dir: Path):
    """A run refused before its cluster started leaves the output folder as it found it (or no folder).

    Yields a function to call once the cluster has started: from then on, written files stay (resumable).
    """
    existed = out_dir.is_dir()
    before = set(out_dir.iterdir()) if existed else set()
    record = out_dir / RUN_RECORD
    old_record = record.read_bytes() if record.is_file() else None
    state = {"started": False}
    try:
        yield lambda: state.update(started=True)
    except BaseException:
        if not state["started"]:
            if not existed:
                shutil.rmtree(out_dir, ignore_errors=True)
            else:
                for p in set(out_dir.iterdir()) - before:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                if old_record is not None:
                    record.write_bytes(old_record)
        raise


def _cluster_for(opts: ClusterOptions, client, cluster: ClusterOptions | None):
    """The caller's client (given, or active when no cluster was asked for), else a cluster of ``opts``."""
    from relabel.run.clusters import active_client, given_client

    if client is None and cluster is None:
        client = active_client()
    if client is not None:
        return given_client(client, opts.worker_timeout)
    return start_cluster(opts)


def cluster_options(cluster: ClusterOptions | None, wf: Workflow, out_dir: Path) -> ClusterOptions:
    """The caller's choices over the workflow's ``cluster`` section; job-queue settings merged key by key.

    Parameters
    ----------
    cluster : ClusterOptions or None
        What the caller chose; None for the workflow's choice.
    wf : Workflow
        Its ``cluster`` section supplies what the caller left unset.
    out_dir : Path
        The run's output folder (job logs, TLS credentials).

    Returns
    -------
    ClusterOptions
        A new object; ``cluster`` is not modified.
    """
    opts = dataclasses.replace(cluster) if cluster else ClusterOptions()
    opts.kind = opts.kind or wf.cluster.get("kind", "local")
    opts.out_dir = str(out_dir)
    if opts.kind in JOB_QUEUES and not (opts.scheduler or opts.scheduler_file):
        from relabel.run.jobqueue import merged_settings

        opts.queue_settings = merged_settings(opts.kind, opts.queue_settings, wf.cluster)
    return opts


def dry_run(catalog, model, out_dir, *, workflow=None, cluster: ClusterOptions | None = None) -> str:
    """The job script ``--cluster QUEUE`` would submit; nothing is submitted and no output is written.

    Parameters
    ----------
    catalog : str or Path
        The catalog the run would read (the recorded workflow's paths resolve from its folder).
    model : str or Path
        The checkpoint.
    out_dir : str or Path
        Where the run would write (job logs are shown under it).
    workflow : str, Path or Workflow, optional
        Default: the mapping recorded in the checkpoint.
    cluster : ClusterOptions, optional
        Its ``kind`` must be a job queue, here or in the workflow.

    Returns
    -------
    str
        The job script.

    Raises
    ------
    ConfigError
        The cluster kind is not a job queue, or one of its settings would be refused.
    """
    from relabel.run.jobqueue import job_script

    _, meta = read_checkpoint(Path(model))
    wf = resolve_workflow(workflow, meta, Path(catalog).resolve().parent, model)
    opts = cluster_options(cluster, wf, Path(out_dir))
    if opts.kind not in JOB_QUEUES:
        raise ConfigError(f"--dry-run shows a job script: use it with --cluster {'|'.join(JOB_QUEUES)}")
    return job_script(opts)


def validate_catalog(cat: Catalog, wf: Workflow, classes) -> None:
    """Fail before any work is submitted: missing or non-numeric columns, bad probabilities, duplicate ids.

    Parameters
    ----------
    cat : Catalog
        The opened catalog (:func:`relabel.catalog.reader.open_catalog`).
    wf : Workflow
        Its columns, label thresholds and missing-value codes.
    classes : sequence of str
        The model's classes, which the label columns must name.

    Raises
    ------
    CatalogError
        Naming the catalog, the column and the offending count / first rows.
    """
    numeric = [*wf.intrinsic, *wf.observable_columns]
    if wf.labels.probabilities:
        numeric += wf.labels.columns
    if wf.cutouts.layout == "tiles":
        numeric.append(wf.cutouts.index_column)
    cat.require(catalog_columns(wf), numeric=numeric, what=f"workflow {wf.source or wf.name}")
    for col in (wf.catalog.ra, wf.catalog.dec):  # numbers in their unit, or sexagesimal text
        if cat.shape(col) or getattr(cat.dtype(col), "kind", "O") not in "iufOSU":
            raise CatalogError(f"{cat.path}: coordinate column {col} must hold one number or one sexagesimal text "
                               f"per row for workflow {wf.source or wf.name}, but it holds {cat.dtype(col)} values")
    complex_columns = [c for c in wf.catalog.passthrough if getattr(cat.dtype(c), "kind", "O") == "c"]
    if complex_columns:
        raise CatalogError(f"{cat.path}: passthrough column(s) {', '.join(complex_columns)} hold complex numbers, "
                           "which Parquet cannot store; leave them out of catalog.passthrough")
    ids_seen = []
    prob_cols = wf.labels.columns if wf.labels.probabilities else []
    for chunk in cat.iter_chunks([wf.catalog.id, *prob_cols]):
        for col in prob_cols:
            values = chunk[col].to_numpy(dtype=np.float64, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                # missing vote fractions (relabel.catalog.missing) are allowed: label_original is null there
                bad = ((values < 0) | (values > 1)) & ~missing_mask(chunk[col], wf.catalog.missing.get(col, ()))
            if bad.any():
                first = chunk.index[np.flatnonzero(bad)[:3]].tolist()
                raise CatalogError(
                    f"{cat.path}: column {col} holds {int(bad.sum())} value(s) outside [0, 1] "
                    f"(first at rows {first}); label probabilities must be vote fractions.{fraction_hint(values)}"
                )
        ids_seen.append(chunk[wf.catalog.id])
    if ids_seen:
        check_ids(pd.concat(ids_seen), cat.path, wf.catalog.id)  # nulls and repeats, naming their rows


def _execute(handle, shards, ctx: RunContext, progress: bool) -> list[dict]:
    from relabel.progress import progress_bar

    bar = progress_bar(len(shards), "relabel", "shard", progress)
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
            for future in as_completed(futures, loop=handle.client.loop):
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
    """Counts read back from the files (so a resumed run counts every shard), timings, and L.

    Parameters
    ----------
    out_dir : Path
        The run's output folder, every shard written.
    wf : Workflow
        The run's workflow (for L).
    record : dict
        The run record (``catalog_rows``, ``n_shards``, ``classes``, ``model_hash``).
    results : list of dict
        :func:`relabel.run.task.run_shard`'s return of each shard run this time.
    elapsed : float
        Seconds the shards took (wall clock).
    t_plan : float
        Seconds spent planning.
    bias : bool
        Compute L of the original and new labels (:func:`output_bias`).

    Returns
    -------
    dict
        What ``_summary.json`` holds: ``rows_in``, ``rows_out``, ``status`` counts, null counts,
        timings, workers, SLURM job ids and, with ``bias``, ``labeling_bias``.
    """
    import pyarrow.dataset as ds

    files = sorted(out_dir.glob("part-*.parquet"))
    status = {}
    rows_out = label_missing = 0
    nulls: dict[str, int] = {}
    if files:
        table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["status", "label_original"])
        label_missing = table.column("label_original").null_count  # rows predicted without a catalog label
        nulls = null_counts(files)
        values, counts = np.unique(np.asarray(table.column("status").to_pylist(), dtype=object).astype(str),
                                   return_counts=True)
        status = dict(zip(values.tolist(), counts.tolist()))
        rows_out = int(counts.sum())
    n_new = sum(r["rows"] for r in results)
    seconds: dict[str, float] = {}
    for r in results:
        for k, v in r["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
    summary = {
        "relabel_version": __version__,
        "rows_in": record["catalog_rows"],
        "rows_out": rows_out,
        "status": status,
        "rows_label_missing": label_missing,
        # nulls by output column: missing catalog values (relabel.catalog.missing); label: rows not predicted
        "null_values": {c: n for c, n in nulls.items() if n},
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

    Parameters
    ----------
    out_dir : Path
        The run's output folder.
    wf : Workflow
        The run's workflow.
    classes : list of str
        The model's classes (the new labels').

    Returns
    -------
    dict
        ``original`` and ``new``: :meth:`relabel.bias.metric.BiasResult.to_dict`, or ``{"error": text}``.
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
