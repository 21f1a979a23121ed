"""A run survives lost workers, interruptions and broken inputs, and loses or duplicates no row."""

import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import fitsio
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from relabel import status as st
from relabel.run.clusters import ClusterOptions
from relabel.errors import CatalogError, CheckpointError, OutputError
from relabel.run.pipeline import run_catalog

from conftest import write_untrained_checkpoint

NONE = ClusterOptions(kind="none")


def _run(survey, model, out, **kw):
    kw.setdefault("cluster", NONE)
    kw.setdefault("bias", False)
    kw.setdefault("progress", False)
    return run_catalog(survey.catalog, model, out, workflow=survey.workflow, **kw)


def _sorted(out):
    return pd.read_parquet(out).sort_values("row").reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(small_survey, small_model, tmp_path_factory):
    """An undisturbed in-process run of the small survey."""
    out = tmp_path_factory.mktemp("ref") / "out"
    _run(small_survey, small_model, out, shard_size=600)
    return _sorted(out)


def test_sigkill_of_a_worker_mid_run_loses_and_duplicates_nothing(small_survey, small_model, reference, tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=50) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        killed = {}

        def kill_one_when_work_started():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not list(out.glob("part-*.parquet")):
                time.sleep(0.01)
            killed["files_before"] = len(list(out.glob("part-*.parquet")))
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed["pid"] = victim

        killer = threading.Thread(target=kill_one_when_work_started)
        killer.start()
        _run(small_survey, small_model, out, shard_size=10,
             cluster=ClusterOptions(scheduler=cluster.scheduler_address))
        killer.join()
    assert killed["pid"] in pids.values()
    assert killed["files_before"] < 60, "the worker died while shards were still to do"
    got = _sorted(out)
    assert got["row"].tolist() == list(range(600))  # every row exactly once
    pd.testing.assert_frame_equal(got, reference)  # identical to the undisturbed run


def _start_cli_run(survey, model, out, extra=()):
    args = [sys.executable, "-m", "relabel.cli", "run", str(survey.catalog), "--model", str(model), "--out", str(out),
            "--config", str(survey.workflow), "--shard-size", "10", "--workers", "1",
            "--dashboard-address", "127.0.0.1:0", "--no-bias", "--no-progress", *extra]
    # A test run started in the background (`cmd &`, nohup) inherits SIGINT ignored, and so would
    # this child: give it the disposition of a foreground command, where Ctrl-C interrupts.
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_files(out, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(out.glob("part-*.parquet"))) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the run wrote no shard in time")


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_interrupted_client_then_resume(small_survey, small_model, reference, tmp_path, how):
    out = tmp_path / "out"
    proc = _start_cli_run(small_survey, small_model, out)
    _wait_for_files(out, 3, proc)
    if how == "SIGINT":
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "--resume" in err
    else:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, its scheduler and its workers all die at once
        proc.communicate(timeout=60)
    written = sorted(out.glob("part-*.parquet"))
    assert 3 <= len(written) < 60
    for f in written:  # whatever is visible is complete
        assert pq.read_metadata(f).num_rows == 10
    partial = pd.read_parquet(out)
    assert partial["row"].is_unique
    result = subprocess.run([sys.executable, "-m", "relabel.cli", "run",
                             str(small_survey.catalog), "--model", str(small_model), "--out", str(out),
                             "--config", str(small_survey.workflow), "--shard-size", "10", "--cluster", "none",
                             "--no-bias", "--no-progress", "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"({len(written)} already written)" in result.stdout
    got = _sorted(out)
    pd.testing.assert_frame_equal(got, reference)
    import json

    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_out"] == 600 == sum(summary["status"].values())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_every_cutout_fault_is_a_status_and_counted(small_survey, small_model, tmp_path):
    """Per-object files with every kind of fault; the rest of the shard is predicted."""
    from relabel.catalog import open_catalog
    from relabel.cutouts import open_cutout_source
    from relabel.config import load_workflow

    wf = load_workflow(small_survey.workflow)
    cat = open_catalog(small_survey.catalog)
    rows = cat.read(cat.columns, 0, 20)
    with open_cutout_source(wf) as source:
        images = source.read(rows).images
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for i in range(20):
        fitsio.write(str(folder / f"{i}.fits"), images[i])
    assert images.shape[1] == 2  # g and r
    from astropy.io import fits

    fits.PrimaryHDU().writeto(folder / "3.fits", overwrite=True)                     # zero-size HDU
    (folder / "4.fits").write_bytes((folder / "4.fits").read_bytes()[:4000])       # truncated
    (folder / "5.fits").write_bytes(b"not a FITS file at all")                       # corrupt
    fitsio.write(str(folder / "6.fits"), images[6, :1].repeat(3, axis=0), clobber=True)  # 3 bands, model has 2
    fitsio.write(str(folder / "7.fits"), images[7, :, :32, :32], clobber=True)           # 32x32, model has 64x64
    nan = images[8].copy(); nan[:] = np.nan
    fitsio.write(str(folder / "8.fits"), nan, clobber=True)                          # all NaN
    part = images[9].copy(); part[:, :5] = np.nan
    fitsio.write(str(folder / "9.fits"), part, clobber=True)                         # 5 of 64 rows NaN: filled
    most = images[10].copy(); most[:, :40] = np.nan
    fitsio.write(str(folder / "10.fits"), most, clobber=True)                        # 62% NaN
    (folder / "11.fits").unlink()                                                    # missing
    table = rows.drop(columns=["TILE", "TILE_INDEX"]).reset_index(drop=True)
    table["CUTOUT"] = [f"cutouts/{i}.fits" for i in range(20)]
    table.loc[12, "RA"] = np.nan
    table.loc[13, "DEC"] = -91.0
    table.to_parquet(tmp_path / "catalog.parquet")
    raw = yaml.safe_load(small_survey.workflow.read_text())
    raw["cutouts"] = {**raw["cutouts"], "layout": "files", "root": str(tmp_path), "path_column": "CUTOUT"}
    (tmp_path / "files.yaml").write_text(yaml.safe_dump(raw))
    result = run_catalog(tmp_path / "catalog.parquet", small_model, tmp_path / "out", workflow=tmp_path / "files.yaml",
                         cluster=NONE, bias=False, progress=False)
    got = _sorted(tmp_path / "out")
    expected = {3: st.EMPTY_HDU, 4: st.CORRUPT_FILE, 5: st.CORRUPT_FILE, 6: st.WRONG_BANDS, 7: st.WRONG_SHAPE,
                8: st.ALL_NAN, 9: st.NAN_FILLED, 10: st.TOO_MANY_NAN, 11: st.MISSING_FILE, 12: st.BAD_COORDINATES,
                13: st.BAD_COORDINATES}
    assert {i: got.loc[i, "status"] for i in expected} == expected
    assert (got.drop(index=list(expected))["status"] == st.OK).all()
    assert got.loc[got["status"].isin(st.PREDICTED), "p_spiral"].notna().all()
    assert got.loc[~got["status"].isin(st.PREDICTED), "p_spiral"].isna().all()
    counts = result.summary["status"]
    assert counts[st.OK] == 9 and counts[st.CORRUPT_FILE] == 2 and counts[st.BAD_COORDINATES] == 2
    assert sum(counts.values()) == 20


@pytest.mark.parametrize("fault, message", [
    ("missing", "does not exist"),
    ("not_fits", "not a FITS file"),
    ("wrong_hdu", "HDU 0 is not a table"),
    ("missing_column", "needs column(s) P_CS which the catalog does not have"),
    ("non_numeric", "column REDSHIFT must be numeric"),
])
def test_catalog_faults_fail_before_submitting(small_survey, small_model, tmp_path, fault, message):
    wf = yaml.safe_load(small_survey.workflow.read_text())
    wf["cutouts"]["root"] = str(small_survey.root)
    catalog = tmp_path / "catalog.fits"
    data = fitsio.read(str(small_survey.catalog), ext=1)
    if fault == "missing":
        catalog = tmp_path / "nope.fits"
    elif fault == "not_fits":
        catalog.write_text("OBJID,RA\n1,2\n")
    elif fault == "wrong_hdu":
        fitsio.write(str(catalog), data, extname="CATALOG")
        wf["catalog"]["hdu"] = 0
    elif fault == "missing_column":
        names = [n for n in data.dtype.names if n != "P_CS"]
        fitsio.write(str(catalog), data[names], extname="CATALOG")
    elif fault == "non_numeric":
        import numpy.lib.recfunctions as rf

        text = rf.drop_fields(data, "REDSHIFT", usemask=False)
        text = rf.append_fields(text, "REDSHIFT", np.array(["0.1"] * len(data)), usemask=False)
        fitsio.write(str(catalog), text, extname="CATALOG")
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_catalog(catalog, small_model, tmp_path / "out", workflow=tmp_path / "wf.yaml", cluster=NONE,
                    bias=False, progress=False)
    assert not (tmp_path / "out").exists(), "nothing was written"


def test_model_faults_are_refused(small_survey, small_model, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(small_model.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        _run(small_survey, truncated, tmp_path / "out")

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    hostile = tmp_path / "hostile.pt"
    import torch

    torch.save({"format": "relabel-checkpoint", "meta": "{}", "state_dict": {}, "x": Exploit()}, hostile)
    with pytest.raises(CheckpointError, match="refused without running it"):
        _run(small_survey, hostile, tmp_path / "out")
    assert not marker.exists(), "loading executed code from the checkpoint"
    hostile.write_bytes(pickle.dumps(Exploit()))  # a bare pickle, not even a torch file
    with pytest.raises(CheckpointError):
        _run(small_survey, hostile, tmp_path / "out")
    assert not marker.exists()
    other = write_untrained_checkpoint(tmp_path / "other.pt", size=32)
    with pytest.raises(CheckpointError, match="cutout size 64 where the model was trained on 32"):
        _run(small_survey, other, tmp_path / "out")


def test_resume_with_another_workflow_is_refused(small_survey, small_model, tmp_path):
    _run(small_survey, small_model, tmp_path / "out", shard_size=300)
    raw = yaml.safe_load(small_survey.workflow.read_text())
    raw["cutouts"]["root"] = str(small_survey.root)
    raw["observables"] = raw["observables"][:2]  # the model's inputs (the intrinsic columns) are all still there
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(OutputError, match="workflow_hash"):
        run_catalog(small_survey.catalog, small_model, tmp_path / "out", workflow=tmp_path / "other.yaml",
                    cluster=NONE, shard_size=300, resume=True, bias=False, progress=False)


def test_bit_identical_whatever_workers_and_shard_size(small_survey, small_model, reference, tmp_path):
    _run(small_survey, small_model, tmp_path / "a", shard_size=7, batch_size=64)
    _run(small_survey, small_model, tmp_path / "b", shard_size=250, batch_size=64,
         cluster=ClusterOptions(kind="local", workers=2, dashboard_address="127.0.0.1:0"))
    a, b = _sorted(tmp_path / "a"), _sorted(tmp_path / "b")
    for col in a.columns:
        assert a[col].to_numpy().tobytes() == b[col].to_numpy().tobytes() or a[col].equals(b[col]), col
    np.testing.assert_array_equal(a["p_spiral"].to_numpy(), b["p_spiral"].to_numpy())


def test_resume_under_another_shard_plan_is_refused(small_survey, small_model, tmp_path):
    # the shard names are positions in a plan: another plan (another relabel's row order or image
    # packing) under the same names would skip rows and write others twice
    import json

    _run(small_survey, small_model, tmp_path / "out", shard_size=300)
    record_path = tmp_path / "out" / "_run.json"
    record = json.loads(record_path.read_text())
    assert len(record["plan"]) == 32
    record["plan"] = "0" * 32
    record_path.write_text(json.dumps(record))
    with pytest.raises(OutputError, match="plan"):
        run_catalog(small_survey.catalog, small_model, tmp_path / "out", cluster=NONE, shard_size=300, resume=True,
                    bias=False, progress=False)
    del record["plan"]  # a record from before plans had a digest: resumed on the shard size and count
    record_path.write_text(json.dumps(record))
    run_catalog(small_survey.catalog, small_model, tmp_path / "out", cluster=NONE, shard_size=300, resume=True,
                bias=False, progress=False)


def test_plan_digest_tells_row_orders_apart():
    from relabel.run.plan import Shard, plan_digest

    one = [Shard(0, 0, 3, rows=(0, 1, 2)), Shard(1, 3, 5, rows=(3, 4))]
    other = [Shard(0, 0, 3, rows=(0, 2, 1)), Shard(1, 3, 5, rows=(3, 4))]
    assert plan_digest(one) == plan_digest(list(one)) != plan_digest(other)
    assert plan_digest([Shard(0, 0, 5)]) != plan_digest([Shard(0, 0, 4), Shard(1, 4, 5)])
