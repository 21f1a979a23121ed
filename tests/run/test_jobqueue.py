"""`relabel run --cluster slurm` against a real one-node SLURM (started by .ci/slurm-up)."""

import shutil
import subprocess
import threading
import urllib.request

import dask
import numpy as np
import pandas as pd
import pytest
import yaml

from relabel.cli import main
from relabel.run.clusters import ClusterOptions
from relabel.model import load_checkpoint, predict_proba, preprocess
from relabel.run.pipeline import run_catalog
from relabel.run.jobqueue import WorkersMissing, build_cluster_kwargs, lifetime_for


def _slurm_reachable() -> str | None:
    if not shutil.which("sinfo"):
        return "no SLURM client (sinfo) on PATH: run .ci/slurm-up as root"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0 or not out.stdout.strip():
        return f"no SLURM controller reachable ({out.stderr.strip() or 'sinfo printed nothing'}): run .ci/slurm-up"
    return None


needs_slurm = pytest.mark.skipif(_slurm_reachable() is not None, reason=str(_slurm_reachable()))
SLURM_TEST = {"cores": 1, "memory": "2GB", "walltime": "00:10:00", "interface": "lo", "worker_timeout": 120}


@pytest.mark.slurm
@needs_slurm
def test_run_inside_slurm_jobs_with_dashboard(tiny_run):
    root, data, images, model = tiny_run
    seen = {"dashboard": None, "status": None}
    stop = threading.Event()

    def poll(url):
        while not stop.is_set() and seen["status"] is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    seen["status"] = response.status
            except OSError:
                stop.wait(0.2)

    def echo(line):
        print(line)
        if line.startswith("dashboard: "):
            seen["dashboard"] = line.split(" ", 1)[1]
            threading.Thread(target=poll, args=(seen["dashboard"],), daemon=True).start()

    opts = ClusterOptions(kind="slurm", dashboard_address="127.0.0.1:0", extra={"slurm": {**SLURM_TEST, "jobs": 2}})
    result = run_catalog(root / "catalog.fits", model, root / "out", workflow=root / "workflow.yaml", cluster=opts,
                         shard_size=8, bias=False, progress=False, echo=echo)
    stop.set()
    assert seen["dashboard"].startswith("http://127.0.0.1:")
    assert seen["status"] == 200, "the dashboard answered HTTP during the run"
    df = pd.read_parquet(root / "out").sort_values("row")
    assert df["row"].tolist() == list(range(40))
    net, meta = load_checkpoint(model)
    np.testing.assert_allclose(df[["p_elliptical", "p_spiral"]].to_numpy(), predict_proba(net, preprocess(images, meta)),
                               atol=1e-6)
    # every shard ran inside a SLURM job, and the pool had two
    job_ids = {r["slurm_job_id"] for r in result.shard_results}
    assert None not in job_ids and 1 <= len(job_ids) <= 2
    assert set(result.summary["slurm_job_ids"]) == job_ids
    logs = list((root / "out" / "_logs" / "slurm").glob("*.err"))
    assert len(logs) == 2
    assert not list((root / "out").glob("_cluster/.dask-jobqueue*")), "temporary TLS files are removed at the end"


@pytest.mark.slurm
@needs_slurm
def test_workers_that_never_start_are_explained(tiny_run):
    root, _, _, model = tiny_run
    wf = yaml.safe_load((root / "workflow.yaml").read_text())
    # a job that cannot start for an hour: SLURM keeps it PENDING (BeginTime)
    wf["cluster"] = {"kind": "slurm", "slurm": {**SLURM_TEST, "worker_timeout": 6, "job_extra_directives": ["--begin=now+3600"]}}
    (root / "pending.yaml").write_text(yaml.safe_dump(wf))
    with pytest.raises(WorkersMissing) as err:
        run_catalog(root / "catalog.fits", model, root / "out", workflow=root / "pending.yaml",
                    cluster=ClusterOptions(dashboard_address="127.0.0.1:0"), bias=False, progress=False)
    message = str(err.value)
    assert message.startswith("0 of 1 workers after 6 s; squeue says: job ")
    assert "PENDING (BeginTime)" in message


def test_scheduler_refuses_clients_without_the_tls_credentials(tmp_path):
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    kwargs, _ = build_cluster_kwargs({}, tmp_path, ClusterOptions(dashboard_address="127.0.0.1:0"))
    with SLURMCluster(**kwargs) as cluster:  # no job is submitted: only the scheduler starts
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        with Client(cluster, security=cluster.security, timeout="10s") as client:
            assert client.scheduler_info()["address"] == address
        from distributed.security import Security

        with pytest.raises((OSError, TimeoutError)):  # a certificate the scheduler's CA did not sign
            Client(address, security=Security.temporary(), timeout="3s")
        with pytest.raises(TypeError, match="TLS expects"):  # no credentials at all
            Client(address, timeout="3s")
        with pytest.raises((OSError, TimeoutError)):
            Client(address.replace("tls://", "tcp://"), timeout="3s")


def test_dry_run_prints_job_script_with_precedence(tiny_run, capsys):
    root, _, _, model = tiny_run
    wf = yaml.safe_load((root / "workflow.yaml").read_text())
    wf["cluster"] = {"kind": "slurm", "slurm": {"queue": "from-workflow", "walltime": "02:00:00", "cores": 8,
                                                 "job_script_prologue": ["module load cuda/12"]}}
    (root / "gpu.yaml").write_text(yaml.safe_dump(wf))
    args = ["run", str(root / "catalog.fits"), "--model", str(model), "--out", str(root / "out"),
            "--config", str(root / "gpu.yaml"), "--gpus-per-job", "2", "--partition", "gpu-a100",
            "--dashboard-address", "127.0.0.1:0", "--dry-run"]
    with dask.config.set({"jobqueue.slurm.account": "astro-from-dask-config"}):
        assert main(args) == 0
    script = capsys.readouterr().out
    assert "#SBATCH -p gpu-a100" in script            # the command line beats the workflow
    assert "#SBATCH -t 02:00:00" in script            # the workflow beats the default
    assert "#SBATCH -A astro-from-dask-config" in script  # dask's jobqueue config fills the rest
    assert "#SBATCH --gres=gpu:2" in script and "--nworkers 2" in script and "--resources GPU=1" in script
    assert "module load cuda/12" in script
    assert "--lifetime 6300s --lifetime-stagger 300s" in script  # 2 h minus margin and stagger
    assert "--tls-cert" in script
    assert not (root / "out").exists(), "a dry run writes nothing"


def test_lifetime_leaves_a_margin_before_the_walltime():
    assert lifetime_for("00:30:00") == ("1530s", "90s")
    life, stagger = lifetime_for("1-00:00:00")
    assert int(life[:-1]) + int(stagger[:-1]) + 600 == 86400


@pytest.mark.slurm
@needs_slurm
def test_a_job_whose_worker_retires_is_replaced_and_the_run_uses_the_new_one(tiny_run, tmp_path):
    """Workers retire before the walltime (--lifetime); the pool submits a new job and work goes on there."""
    import os
    import time

    from relabel.run.clusters import start_cluster
    from relabel.run.jobqueue import merged_settings

    root, data, images, model = tiny_run
    settings = merged_settings({**SLURM_TEST, "jobs": 1, "lifetime": "10s", "lifetime_stagger": "0s", "tls": False}, {})
    opts = ClusterOptions(kind="slurm", dashboard_address="127.0.0.1:0",
                          extra={"out_dir": str(tmp_path / "pool"), "settings": settings})

    def job_ids(client) -> set:
        try:
            return set(client.run(os.getenv, "SLURM_JOB_ID").values())
        except Exception:  # a worker closing while asked: ask again
            return set()

    with start_cluster(opts) as handle:
        first = job_ids(handle.client)
        assert len(first) == 1 and None not in first
        deadline = time.monotonic() + 150
        later = set()
        while time.monotonic() < deadline and not (later and not later & first):
            time.sleep(1)
            later = job_ids(handle.client)
        assert later and not later & first, f"no new job replaced job {first} within 150 s"
        result = run_catalog(root / "catalog.fits", model, root / "out", workflow=root / "workflow.yaml",
                             cluster=ClusterOptions(scheduler=handle.client.scheduler.address), shard_size=8,
                             bias=False, progress=False, echo=lambda line: None)
    df = pd.read_parquet(root / "out")
    assert sorted(df["row"]) == list(range(40))
    ran_in = {r["slurm_job_id"] for r in result.shard_results}
    assert None not in ran_in and not ran_in & first, "the retired job ran nothing after it retired"
