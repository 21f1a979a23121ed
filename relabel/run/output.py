"""The output Parquet dataset: one file per shard, written atomically, plus run records.

Everything in the output folder that is not shard data starts with ``_`` (or ``.`` for
files being written), which Arrow and pandas skip, so ``pandas.read_parquet(OUT_DIR)``
reads exactly the shards. A shard file appears only complete: it is written under a
hidden temporary name and renamed, so a killed worker or a Ctrl-C leaves no half file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from relabel.errors import OutputError
from relabel.files import atomic_path, write_bytes_atomic

RUN_RECORD = "_run.json"
SUMMARY = "_summary.json"
COMMON_METADATA = "_common_metadata"
METADATA_KEY = b"relabel"


def shard_path(out_dir: Path, name: str) -> Path:
    """The Parquet file of shard ``name`` (e.g. ``part-000003``) in ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        The run's output folder.
    name : str
        The shard's file stem (:attr:`relabel.run.plan.Shard.name`).

    Returns
    -------
    Path
        ``out_dir / (name + ".parquet")``.
    """
    return out_dir / f"{name}.parquet"


def prepare_output(out_dir: Path, record: dict, resume: bool, overwrite: bool) -> set[str]:
    """Check the output folder against this run; return the shard names already written.

    Parameters
    ----------
    out_dir : Path
        The output folder (created if missing).
    record : dict
        This run's record (model hash, workflow hash, catalog, shard plan), written as ``_run.json``.
    resume : bool
        Keep the shard files already written and return their names.
    overwrite : bool
        Delete relabel's files of an earlier run first.

    Returns
    -------
    set of str
        Names of shards already written (empty unless ``resume``).

    Raises
    ------
    OutputError
        Non-empty folder without ``resume``/``overwrite``; ``resume`` into a run made with
        another model, workflow, catalog or shard plan; files relabel did not write, with ``overwrite``.
    """
    if resume and overwrite:
        raise OutputError("--resume and --overwrite exclude each other: resume keeps written shards, "
                          "overwrite deletes them")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    entries = list(out_dir.iterdir())
    if entries and not (resume or overwrite):
        raise OutputError(
            f"output folder {out_dir} is not empty ({len(entries)} entries); use --resume to complete the run "
            "that wrote it, or --overwrite to replace it"
        )
    if overwrite and entries:
        foreign = [p.name for p in entries if not _is_ours(p)]
        if foreign:
            raise OutputError(
                f"--overwrite would delete only relabel's files, but {out_dir} also holds "
                f"{', '.join(sorted(foreign)[:5])}; "
                "choose another output folder"
            )
        for p in entries:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    done: set[str] = set()
    if resume and (out_dir / RUN_RECORD).exists():
        previous = json.loads((out_dir / RUN_RECORD).read_text())
        for key in ("model_hash", "workflow_hash", "catalog", "catalog_rows", "shard_size", "n_shards", "tta", "plan"):
            if key == "plan" and "plan" not in previous:
                continue  # written before plans had a digest: the shard size and count are what it checked
            if previous.get(key) != record.get(key):
                raise OutputError(
                    f"cannot --resume into {out_dir}: it was written with {key} = {previous.get(key)!r}, this run has "
                    f"{record.get(key)!r}; use another output folder, or --overwrite"
                )
        done = {p.stem for p in out_dir.glob("part-*.parquet")}
    elif resume and entries:
        raise OutputError(f"cannot --resume into {out_dir}: it has no {RUN_RECORD} (not a relabel run output)")
    write_json_atomic(out_dir / RUN_RECORD, record)
    return done


def _is_ours(path: Path) -> bool:
    return path.name.startswith(("_", ".")) or (path.name.startswith("part-") and path.suffix == ".parquet")


def _remove_stale_temporaries(out_dir: Path) -> None:
    for p in out_dir.glob(".*.tmp-*"):
        p.unlink(missing_ok=True)


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file under a hidden temporary name, then rename it into place.

    Parameters
    ----------
    table : pyarrow.Table
        The rows to write.
    path : Path
        The final file; a reader never sees it half written.
    """
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON through a temporary file renamed into place.

    Parameters
    ----------
    path : Path
        The final file.
    data : dict
        JSON-serialisable content.
    """
    write_bytes_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def write_common_metadata(out_dir: Path, schema: pa.Schema) -> None:
    """``_common_metadata`` from the schema the shards were written with (on the client, after all shards).

    Parameters
    ----------
    out_dir : Path
        The run's output folder.
    schema : pyarrow.Schema
        The shards' schema (:func:`relabel.run.task.output_schema`).
    """
    files = sorted(out_dir.glob("part-*.parquet"))
    for f in files:
        other = pq.read_schema(f)
        if not other.equals(schema, check_metadata=False):
            raise OutputError(f"{f} has schema {other} which differs from the run's {schema}")
    with atomic_path(out_dir / COMMON_METADATA) as tmp:
        pq.write_metadata(schema, tmp)


def null_counts(files: list[Path]) -> dict[str, int]:
    """Nulls per column over shard files, from their footers' statistics (no data is read).

    Parameters
    ----------
    files : list of Path
        Shard Parquet files.

    Returns
    -------
    dict of str to int
        Column -> number of null values over all files.
    """
    counts: dict[str, int] = {}
    for path in files:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                name = column.path_in_schema.split(".")[0]
                stats = column.statistics
                if stats is not None and stats.has_null_count and "." not in column.path_in_schema:
                    counts[name] = counts.get(name, 0) + int(stats.null_count)
    return counts
