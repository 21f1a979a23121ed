"""Job queues: dry-run scripts for slurm|pbs|sge|lsf|htcondor, per-key precedence, options checked as the
queue reads them, and real runs against the one-node SLURM (started by .ci/slurm-up)."""

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
from relabel.errors import ClusterError, ConfigError, WorkersMissing
from relabel.run.jobqueue import build_cluster_kwargs, job_script, lifetime_for, merged_settings, resolve


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
# Tests keep every scheduler on loopback by an explicit option (the default is this host's routable address).
SLURM_TEST = {"cores": 1, "memory": "2GB", "walltime": "00:10:00", "interface": "lo", "worker_timeout": 120,
              "scheduler_host": "127.0.0.1"}


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

    opts = ClusterOptions(kind="slurm", dashboard_address="127.0.0.1:0", queue_settings={**SLURM_TEST, "jobs": 2})
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
    assert message.startswith("slurm cluster tls://127.0.0.1:")
    assert "has 0 of 1 workers after 6 s; nothing was run; squeue says: job " in message
    assert "PENDING (BeginTime)" in message
    assert not (root / "out").exists(), "a refused run leaves nothing"


@pytest.mark.slurm
@needs_slurm
def test_a_job_slurm_can_never_start_is_reported_at_once(tiny_run):
    import time

    root, _, _, model = tiny_run
    failed = subprocess.run(["sbatch", "--parsable", "--wait", "--output=/dev/null", "--wrap", "exit 3"],
                            capture_output=True, text=True, timeout=120).stdout.strip().split(";")[0]
    wf = yaml.safe_load((root / "workflow.yaml").read_text())
    # a job that depends on one that failed: squeue says DependencyNeverSatisfied, forever
    wf["cluster"] = {"kind": "slurm", "slurm": {**SLURM_TEST, "job_extra_directives": [f"--dependency=afterok:{failed}"]}}
    (root / "never.yaml").write_text(yaml.safe_dump(wf))
    t0 = time.monotonic()
    with pytest.raises(WorkersMissing) as err:
        run_catalog(root / "catalog.fits", model, root / "out", workflow=root / "never.yaml",
                    cluster=ClusterOptions(dashboard_address="127.0.0.1:0"), bias=False, progress=False)
    assert time.monotonic() - t0 < 60, "not after the whole --worker-timeout (120 s)"
    assert "SLURM will never start job " in str(err.value) and "DependencyNeverSatisfied" in str(err.value)
    assert not (root / "out").exists()


@pytest.mark.slurm
@needs_slurm
@pytest.mark.parametrize("settings, message", [
    ({"cores": 64}, "a job asks 64 cores but the nodes of partition default have at most "),
    ({"queue": "nosuch"}, "SLURM refuses the worker job: sbatch: error: invalid partition specified: nosuch"),
])
def test_jobs_slurm_would_refuse_fail_before_anything_is_submitted(tiny_run, capsys, settings, message):
    root, _, _, model = tiny_run
    flags = [f"--{k}={v}" for k, v in settings.items()]
    rc = main(["run", str(root / "catalog.fits"), "--model", str(model), "--out", str(root / "out"),
               "--config", str(root / "workflow.yaml"), "--cluster", "slurm", "--scheduler-host", "127.0.0.1",
               "--dashboard-address", "127.0.0.1:0", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0]
    assert not (root / "out").exists()


def test_scheduler_refuses_clients_without_the_tls_credentials(tmp_path):
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    (tmp_path / "_cluster").mkdir()
    kwargs, _ = build_cluster_kwargs("slurm", resolve("slurm", {"queue": "nosuch", "cores": 1, "memory": "1GB"}),
                                     tmp_path, ClusterOptions(host="127.0.0.1", dashboard_address="127.0.0.1:0"))
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


QUEUE_DIRECTIVES = {
    "slurm": ["#SBATCH -J relabel", "#SBATCH -p gpuq", "#SBATCH -A astro", "#SBATCH -t 02:00:00",
              "#SBATCH --cpus-per-task=2", "#SBATCH --mem=4G", "#SBATCH --gres=gpu:1"],
    "pbs": ["#PBS -N relabel", "#PBS -q gpuq", "#PBS -A astro", "#PBS -l select=1:ncpus=2:mem=",
            "#PBS -l walltime=02:00:00", "#PBS -l ngpus=1"],
    "sge": ["#$ -N relabel", "#$ -q gpuq", "#$ -P astro", "#$ -l h_rt=02:00:00", "#$ -l gpu=1"],
    "lsf": ["#BSUB -J relabel", "#BSUB -q gpuq", '#BSUB -P "astro"', "#BSUB -n 2", "#BSUB -W 02:00",
            '#BSUB -gpu "num=1"'],
    "htcondor": ["MY.DaskWorkerCores = 2", "MY.DaskWorkerMemory = 4000000000", "request_gpus = 1"],
}


@pytest.mark.parametrize("queue", sorted(QUEUE_DIRECTIVES))
def test_dry_run_job_script_for_each_queue(tiny_run, capsys, queue):
    root, _, _, model = tiny_run
    where = [] if queue == "htcondor" else ["--queue", "gpuq", "--account", "astro"]  # HTCondor has neither
    args = ["run", str(root / "catalog.fits"), "--model", str(model), "--out", str(root / "out"),
            "--config", str(root / "workflow.yaml"), "--cluster", queue, *where, "--walltime", "02:00:00",
            "--cores", "2", "--memory", "4GB", "--gpus-per-job", "1", "--prologue", "source ~/envs/relabel/bin/activate",
            "--scheduler-host", "127.0.0.1", "--dry-run"]
    assert main(args) == 0
    script = capsys.readouterr().out
    lines = script.splitlines()
    for directive in QUEUE_DIRECTIVES[queue]:
        assert any(line.startswith(directive) for line in lines), f"{directive!r} missing from\n{script}"
    worker = script[script.index("distributed.cli.dask_worker tls://127.0.0.1:"):]
    # the prologue's environment chooses the Python, not this login node's absolute path
    assert "source ~/envs/relabel/bin/activate" in script[:script.index("python -m distributed.cli.dask_worker")]
    assert "--lifetime 6300s --lifetime-stagger 300s" in worker  # 2 h minus margin and stagger
    assert "--resources GPU=1" in worker and "--tls-cert" in worker
    assert "DASK_RELABEL__WORKER_CORES=2" in script and "RELABEL_WORKER_CORES=" not in script.replace("DASK_RELABEL", "")
    assert not (root / "out").exists(), "a dry run writes nothing"


def test_scheduler_listens_where_compute_nodes_reach_it(tmp_path):
    from distributed.utils import get_ip

    def address(**given):
        opts = ClusterOptions(kind="pbs", out_dir=str(tmp_path), dashboard_address="127.0.0.1:0",
                              queue_settings={"cores": 1, "memory": "1GB", **given})
        script = job_script(opts)
        return script.split("distributed.cli.dask_worker ", 1)[1].split()[0]

    assert address().startswith(f"tls://{get_ip()}:")  # this host's routable address, not loopback
    assert address(scheduler_interface="lo").startswith("tls://127.0.0.1:")
    assert address(scheduler_host="127.0.0.1", tls=False).startswith("tcp://127.0.0.1:")
    resolved = resolve("pbs", {"cores": 1, "memory": "1GB"})
    kwargs, _ = build_cluster_kwargs("pbs", resolved, tmp_path, ClusterOptions())
    assert kwargs["scheduler_options"]["dashboard_address"].startswith("127.0.0.1:"), "the dashboard stays on loopback"


#: key, command line, workflow, the user's jobqueue.slurm config (key, value), how the job script shows it,
#: relabel's default as shown (None: no line at all).
PRECEDENCE = [
    ("queue", "q-cli", "q-wf", ("queue", "q-cfg"), "#SBATCH -p {}", None),
    ("account", "a-cli", "a-wf", ("account", "a-cfg"), "#SBATCH -A {}", None),
    ("walltime", "03:00:00", "02:00:00", ("walltime", "05:00:00"), "#SBATCH -t {}", "#SBATCH -t 01:00:00"),
    ("cores", 3, 5, ("cores", 6), "#SBATCH --cpus-per-task={}", "#SBATCH --cpus-per-task=4"),
    ("memory", "2GB", "3GB", ("memory", "5GB"), "#SBATCH --mem={}", "#SBATCH --mem=14G"),  # 15GB in GiB
    ("python", "/cli/bin/python", "/wf/bin/python", ("python", "/cfg/bin/python"), "{} -m distributed.cli.dask_worker",
     None),
    ("log_directory", "/cli/logs", "/wf/logs", ("log-directory", "/cfg/logs"), "#SBATCH -e {}/",
     "/_logs/slurm/relabel-%J.err"),
]


def _slurm_script(tmp_path, cli: dict, workflow: dict, config: dict) -> str:
    base = {"queue": "relabel-test-partition"}  # no such partition: sinfo says nothing, relabel's defaults show
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in config.items()}):
        settings = merged_settings("slurm", cli, {"slurm": {**base, **workflow}})
        return job_script(ClusterOptions(kind="slurm", out_dir=str(tmp_path), host="127.0.0.1",
                                         queue_settings=settings))


@pytest.mark.parametrize("key, cli, wf, cfg, shown, default", PRECEDENCE, ids=[p[0] for p in PRECEDENCE])
def test_precedence_per_key(tmp_path, key, cli, wf, cfg, shown, default):
    def fmt(value):
        value = f"{int(value[:-2])}G" if key == "memory" else value
        return shown.format(value)

    levels = [({}, {}, {}, default), ({}, {}, dict([cfg]), fmt(cfg[1])), ({}, {key: wf}, dict([cfg]), fmt(wf)),
              ({key: cli}, {key: wf}, dict([cfg]), fmt(cli))]
    if key == "queue":  # the base test partition is itself a workflow value
        levels = levels[2:]
    for given_cli, given_wf, config, expected in levels:
        script = _slurm_script(tmp_path, given_cli, given_wf, config)
        if expected is None:
            assert shown.split("{}")[0] not in script or key == "python", script
        else:
            assert expected in script, f"{key}: cli={given_cli} wf={given_wf} cfg={config}: {expected!r} not in\n{script}"
    if key == "python":
        assert f"{__import__('sys').executable} -m distributed.cli.dask_worker" in _slurm_script(tmp_path, {}, {}, {})


def test_lists_from_the_users_config_are_merged_not_replaced(tmp_path):
    script = _slurm_script(tmp_path, {"job_script_prologue": ["source cli-env"]},
                           {"job_script_prologue": ["module load wf"], "job_extra_directives": ["--qos=wf"]},
                           {"job-script-prologue": ["module load cfg"], "job-extra-directives": ["--exclusive"],
                            "worker-extra-args": ["--no-dashboard"], "name": "my-jobs"})
    # the user's config lines first, then the command line's, which replace the workflow's (key precedence)
    assert script.index("module load cfg") < script.index("source cli-env") and "module load wf" not in script
    assert "#SBATCH --exclusive" in script and "#SBATCH --qos=wf" in script
    assert "--no-dashboard" in script and "--lifetime " in script  # the user's worker args and relabel's
    assert "#SBATCH -J my-jobs" in script  # the user's job name beats relabel's default
    assert _slurm_script(tmp_path, {}, {}, {}).count("#SBATCH -J relabel") == 1


@pytest.mark.parametrize("flags, message", [
    (["--walltime", "4h"], "slurm walltime must be [D-]HH:MM:SS, MM:SS or MM (e.g. 04:00:00), got '4h'"),
    (["--memory", "lots"], "cluster.slurm.memory must be a size such as 32GB or 15GiB, got 'lots'"),
    (["--cluster", "pbs", "--walltime", "45"], "pbs walltime must be HH:MM:SS or HH:MM (e.g. 04:00:00), got '45'"),
    (["--cluster", "htcondor", "--queue", "q"], "cluster.htcondor.queue: htcondor jobs take no queue option"),
    (["--min-jobs", "3", "--max-jobs", "1"], "max_jobs (1) is below min_jobs (3)"),
])
def test_options_are_checked_as_the_queue_reads_them(tiny_run, capsys, flags, message):
    root, _, _, model = tiny_run
    args = ["run", str(root / "catalog.fits"), "--model", str(model), "--out", str(root / "out"),
            "--config", str(root / "workflow.yaml"), "--cluster", "slurm", "--queue", "relabel-test-partition",
            "--cores", "1", "--memory", "1GB", "--scheduler-host", "127.0.0.1", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (root / "out").exists()


def test_lifetime_leaves_a_margin_before_the_walltime():
    assert lifetime_for(1800) == ("1530s", "90s")
    life, stagger = lifetime_for(86400)
    assert int(life[:-1]) + int(stagger[:-1]) + 600 == 86400


@pytest.mark.slurm
@needs_slurm
def test_a_job_whose_worker_retires_is_replaced_and_the_run_uses_the_new_one(tiny_run, tmp_path):
    """Workers retire before the walltime (--lifetime); the pool submits a new job and work goes on there."""
    import os
    import time

    from relabel.run.clusters import start_cluster

    root, data, images, model = tiny_run
    settings = merged_settings("slurm", {**SLURM_TEST, "jobs": 1, "lifetime": "10s", "lifetime_stagger": "0s",
                                         "tls": False}, {})
    opts = ClusterOptions(kind="slurm", dashboard_address="127.0.0.1:0", out_dir=str(tmp_path / "pool"),
                          queue_settings=settings)

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


@pytest.mark.parametrize("queue, command", [("pbs", "qsub"), ("sge", "qsub"), ("lsf", "bsub"), ("htcondor", "condor_submit")])
def test_a_queue_without_its_submit_command_is_one_line_before_anything(tiny_run, capsys, queue, command):
    if shutil.which(command):
        pytest.skip(f"{command} exists here")
    root, _, _, model = tiny_run
    assert main(["run", str(root / "catalog.fits"), "--model", str(model), "--out", str(root / "out"),
                 "--config", str(root / "workflow.yaml"), "--cluster", queue, "--cores", "1", "--memory", "1GB",
                 "--scheduler-host", "127.0.0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"relabel: error: --cluster {queue} needs {command} on PATH: run relabel on a login node of "
                   "that queue (see the job script with --dry-run)"]
    assert not (root / "out").exists()
