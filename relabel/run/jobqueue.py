"""`--cluster slurm`: Dask workers as SLURM jobs through dask-jobqueue.

Settings follow the precedence dask-jobqueue users know: command-line options, then
the workflow file's ``cluster.slurm`` section, then the user's ``jobqueue.slurm``
Dask configuration (which :class:`dask_jobqueue.SLURMCluster` reads itself for
anything left unset). By default the scheduler speaks TLS with temporary
credentials that reach the workers through files in a private folder of the output
(``_cluster/``), so nobody who merely reaches the scheduler's port can run code on
the workers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

from relabel.run.clusters import ClusterHandle, ClusterOptions
from relabel.errors import ConfigError, RelabelError

#: Keys of the workflow's ``cluster.slurm`` section and of the matching CLI options.
SETTINGS = (
    "jobs", "min_jobs", "max_jobs", "queue", "account", "walltime", "cores", "memory", "gpus_per_job",
    "job_cpu", "interface", "scheduler_interface", "python", "job_script_prologue", "log_directory",
    "tls", "lifetime", "lifetime_stagger", "worker_timeout", "job_extra_directives", "local_directory",
)

DEFAULT_CORES = 4
DEFAULT_MEMORY = "16GB"
DEFAULT_WORKER_TIMEOUT = 300


class WorkersMissing(RelabelError):
    """Workers did not connect in time; the message says what SLURM says about the jobs."""


def merged_settings(cli: dict, workflow_cluster: dict) -> dict:
    """CLI values (not None) over the workflow's ``cluster.slurm`` section; the rest stays unset."""
    section = dict((workflow_cluster or {}).get("slurm", {}) or {})
    unknown = sorted(set(section) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown key(s) in cluster.slurm: {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    merged = {k: v for k, v in section.items() if v is not None}
    merged.update({k: v for k, v in cli.items() if v is not None})
    return merged


def walltime_seconds(walltime: str) -> int:
    """SLURM walltime ``[D-]HH:MM:SS`` / ``MM:SS`` / ``MM`` in seconds.

    >>> walltime_seconds("01:30:00"), walltime_seconds("2-00:00:00"), walltime_seconds("45")
    (5400, 172800, 2700)
    """
    days = 0
    if "-" in walltime:
        d, walltime = walltime.split("-", 1)
        days = int(d)
    parts = [int(p) for p in walltime.split(":")]
    if len(parts) == 1:
        seconds = parts[0] * 60
    elif len(parts) == 2:
        seconds = parts[0] * 60 + parts[1]
    else:
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return days * 86400 + seconds


def lifetime_for(walltime: str) -> tuple[str, str]:
    """Worker ``--lifetime`` and ``--lifetime-stagger`` that retire workers before SLURM kills them.

    A tenth of the walltime (between 2 and 10 minutes) is kept back, so a worker hands its
    tasks over and exits cleanly; the stagger spreads the retirements out.

    >>> lifetime_for("01:00:00")
    ('3060s', '180s')
    """
    total = walltime_seconds(walltime)
    margin = min(max(total // 10, 120), 600)
    stagger = min(margin // 2, 300)
    return f"{max(total - margin - stagger, 60)}s", f"{stagger}s"


def build_cluster_kwargs(settings: dict, out_dir: Path, opts: ClusterOptions) -> tuple[dict, dict]:
    """Keyword arguments for SLURMCluster and the scaling plan, from merged settings."""
    import dask

    cfg = dask.config.get("jobqueue.slurm", {})
    gpus = int(settings.get("gpus_per_job") or 0)
    cores = settings.get("cores") or cfg.get("cores") or DEFAULT_CORES
    memory = settings.get("memory") or cfg.get("memory") or DEFAULT_MEMORY
    walltime = settings.get("walltime") or cfg.get("walltime") or "01:00:00"
    log_dir = Path(settings.get("log_directory") or out_dir / "_logs" / "slurm")
    log_dir.mkdir(parents=True, exist_ok=True)
    lifetime, stagger = lifetime_for(walltime)
    lifetime = settings.get("lifetime") or lifetime
    stagger = settings.get("lifetime_stagger") or stagger
    worker_args = ["--lifetime", lifetime, "--lifetime-stagger", stagger]
    directives = list(settings.get("job_extra_directives") or cfg.get("job-extra-directives") or [])
    env = {}
    if gpus:
        # One worker process per GPU, each advertising GPU=1: shard tasks ask for that resource.
        processes = gpus
        directives.append(f"--gres=gpu:{gpus}")
        worker_args += ["--resources", "GPU=1"]
        env["RELABEL_GPUS_PER_JOB"] = str(gpus)
    else:
        processes = 1
    # Torch in each worker process gets the job's cores; the worker runs one shard at a time per process.
    env["RELABEL_WORKER_CORES"] = str(max(1, int(cores) // processes))
    prologue = list(settings.get("job_script_prologue") or cfg.get("job-script-prologue") or [])
    prologue += [f"export {k}={v}" for k, v in env.items()]
    scheduler_options = {"dashboard_address": opts.dashboard_address}
    if settings.get("scheduler_interface"):
        scheduler_options["interface"] = settings["scheduler_interface"]
    else:
        scheduler_options["host"] = opts.host
    kwargs = {
        "cores": int(cores),
        "processes": processes,
        "memory": memory,
        "walltime": walltime,
        "queue": settings.get("queue"),
        "account": settings.get("account"),
        "job_cpu": settings.get("job_cpu") or int(cores),
        "interface": settings.get("interface"),
        "python": settings.get("python"),
        "job_script_prologue": prologue,
        "job_extra_directives": directives,
        "worker_extra_args": worker_args,
        "log_directory": str(log_dir),
        "scheduler_options": scheduler_options,
        "job_name": "relabel",
    }
    if settings.get("local_directory"):
        kwargs["local_directory"] = settings["local_directory"]
    if settings.get("tls", True):
        secrets = out_dir / "_cluster"
        secrets.mkdir(parents=True, exist_ok=True)
        os.chmod(secrets, 0o700)
        kwargs["security"] = True
        kwargs["shared_temp_directory"] = str(secrets)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    jobs = settings.get("jobs")
    if settings.get("min_jobs") is not None or settings.get("max_jobs") is not None:
        if gpus:
            raise ConfigError("adaptive scaling (min_jobs/max_jobs) is for CPU pools; give GPU pools a fixed --jobs")
        lo = int(settings.get("min_jobs") or 0)
        hi = int(settings.get("max_jobs") or max(lo, 1))
        scaling = {"minimum_jobs": lo, "maximum_jobs": hi, "wait_for": max(lo, 1)}
    else:
        jobs = int(jobs or 1)
        # adapt(min = max) keeps the pool at `jobs`: a job that ends (lifetime, walltime) is replaced.
        scaling = {"minimum_jobs": jobs, "maximum_jobs": jobs, "wait_for": jobs}
    scaling["workers_per_job"] = processes
    scaling["timeout"] = int(settings.get("worker_timeout") or DEFAULT_WORKER_TIMEOUT)
    return kwargs, scaling


def job_script(settings: dict, out_dir: Path, opts: ClusterOptions) -> str:
    """The batch script `relabel run --cluster slurm` would submit (for --dry-run)."""
    from dask_jobqueue import SLURMCluster

    kwargs, _ = build_cluster_kwargs(settings, out_dir, opts)
    with SLURMCluster(**kwargs) as cluster:
        return cluster.job_script()


@contextlib.contextmanager
def slurm_cluster(opts: ClusterOptions) -> Iterator[ClusterHandle]:
    """Start the SLURM pool, wait for its workers (or explain why they did not come), yield a client."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    settings = opts.extra.get("settings", {})
    kwargs, scaling = build_cluster_kwargs(settings, Path(opts.extra["out_dir"]), opts)
    gpus = settings.get("gpus_per_job")
    description = (f"SLURM: {scaling['minimum_jobs']}..{scaling['maximum_jobs']} jobs x "
                   f"{scaling['workers_per_job']} worker(s), {kwargs['cores']} cores, {kwargs['memory']}"
                   + (f", {gpus} GPU(s) each" if gpus else "") + (", TLS" if kwargs.get("security") else ", no TLS"))
    cluster = SLURMCluster(**kwargs)
    try:
        cluster.adapt(minimum_jobs=scaling["minimum_jobs"], maximum_jobs=scaling["maximum_jobs"])
        with Client(cluster, security=cluster.security) as client:
            want = scaling["wait_for"] * scaling["workers_per_job"]
            _wait_for_workers(client, cluster, want, scaling["timeout"], Path(kwargs["log_directory"]))
            yield ClusterHandle(client, gpu=bool(gpus), dashboard=client.dashboard_link, description=description)
    finally:
        cluster.close()
        _remove_credentials(cluster)


def _remove_credentials(cluster) -> None:
    """Delete the temporary TLS files now: dask-jobqueue would leave them until garbage collection."""
    for name in [n for n in vars(cluster) if n.startswith("_job_")]:
        handle = getattr(cluster, name)
        if hasattr(handle, "close"):
            handle.close()


def _wait_for_workers(client, cluster, want: int, timeout: int, log_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(client.scheduler_info(n_workers=-1)["workers"]) >= max(want, 1):
            return
        time.sleep(1)
    have = len(client.scheduler_info(n_workers=-1)["workers"])
    job_ids = [getattr(job, "job_id", None) for job in cluster.workers.values()]
    job_ids = [j for j in job_ids if j]
    raise WorkersMissing(
        f"{have} of {want} workers after {timeout} s; {_squeue_says(job_ids)}\n{_log_tail(log_dir)}"
    )


def _squeue_says(job_ids: list[str]) -> str:
    if not job_ids:
        return "no job was submitted (check sbatch in the log directory)"
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"squeue could not be asked ({exc})"
    if not out:
        return f"squeue no longer lists jobs {', '.join(job_ids)} (they ended: see their logs)"
    states = [line.split("|") for line in out.splitlines()]
    return "squeue says: " + "; ".join(f"job {i} {state} ({reason})" for i, state, reason in states)


def _log_tail(log_dir: Path, lines: int = 20) -> str:
    logs = sorted(log_dir.glob("*.err"), key=lambda p: p.stat().st_mtime)[-1:]
    if not logs:
        return f"no worker log in {log_dir} yet"
    text = logs[0].read_text(errors="replace").splitlines()[-lines:]
    return f"end of {logs[0]}:\n" + "\n".join(text)
