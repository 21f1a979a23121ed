"""`--cluster slurm|pbs|sge|lsf|htcondor`: Dask workers as batch jobs through dask-jobqueue, one code path.

Each setting follows the precedence dask-jobqueue users know, key by key: the command
line, then the workflow's ``cluster.<queue>`` section, then the user's own
``jobqueue.<queue>`` Dask configuration (list keys such as ``job-script-prologue`` are
merged, never replaced), then relabel's defaults (``relabel.jobqueue.*``, with cores and
memory from ``sinfo`` on SLURM). Every option is checked as the queue reads it before
anything is submitted or written. The scheduler listens on this host's routable address
(compute nodes must reach it); only the dashboard stays on loopback. By default it speaks
TLS with temporary credentials that reach the workers through a private folder.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask

from relabel import settings
from relabel.errors import ClusterError, ConfigError, WorkersMissing
from relabel.optional import require
from relabel.run.clusters import ClusterHandle, ClusterOptions, connected, wait_for_workers, worker_environment

log = logging.getLogger(__name__)

#: dask-jobqueue's class per queue, the command that submits a job, and how a job asks for n GPUs.
QUEUES: dict[str, tuple[str, str, Callable[[int], list[str] | dict[str, str]]]] = {
    "slurm": ("SLURMCluster", "sbatch", lambda n: [f"--gres=gpu:{n}"]),
    "pbs": ("PBSCluster", "qsub", lambda n: [f"-l ngpus={n}"]),
    "sge": ("SGECluster", "qsub", lambda n: [f"-l gpu={n}"]),
    "lsf": ("LSFCluster", "bsub", lambda n: [f'-gpu "num={n}"']),
    "htcondor": ("HTCondorCluster", "condor_submit", lambda n: {"request_gpus": str(n)}),
}

#: Settings each queue's dask-jobqueue class takes, and under which keyword (its own names: SGE and LSF
#: charge a "project", LSF reserves "ncpus"/"mem"; HTCondor has no queue, account or walltime keyword).
KEYWORDS = {
    "slurm": {"queue": "queue", "account": "account", "walltime": "walltime", "job_cpu": "job_cpu",
              "job_mem": "job_mem"},
    "pbs": {"queue": "queue", "account": "account", "walltime": "walltime"},
    "sge": {"queue": "queue", "account": "project", "walltime": "walltime"},
    "lsf": {"queue": "queue", "account": "project", "walltime": "walltime", "job_cpu": "ncpus", "job_mem": "mem"},
    "htcondor": {},
}
#: Settings every queue's class takes.
COMMON = {"interface": "interface", "local_directory": "local_directory"}
#: List keys: the user's config, then the workflow / command line, then relabel's own lines.
LISTS = {"job_script_prologue": "job-script-prologue", "job_extra_directives": "job-extra-directives",
         "worker_extra_args": "worker-extra-args"}

#: squeue reasons for a pending job that cannot resolve by waiting (slurm.schedmd.com/resource_limits.html).
NEVER_STARTS = ("DependencyNeverSatisfied", "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit",
                "ReqNodeNotAvail", "BadConstraints",
                "InvalidAccount", "InvalidQOS", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "AssocMaxCpuPerJobLimit",
                "Resources_Unavailable", "PartitionDown", "NodeDown", "JobHeldAdmin")


def merged_settings(queue: str, cli: dict, workflow_cluster: dict | None) -> dict:
    """Command-line values (not None) over the workflow's ``cluster.<queue>`` section.

    Parameters
    ----------
    queue : str
        ``slurm``, ``pbs``, ``sge``, ``lsf`` or ``htcondor``.
    cli : dict
        Job-queue options from the command line (None: not given).
    workflow_cluster : dict or None
        The workflow's ``cluster`` section.

    Returns
    -------
    dict
        Setting name -> value, only the keys given somewhere.
    """
    merged = {k: v for k, v in ((workflow_cluster or {}).get(queue) or {}).items() if v is not None}
    merged.update({k: v for k, v in (cli or {}).items() if v is not None})
    return merged


def user_config(queue: str) -> dict:
    """The user's own ``jobqueue.<queue>`` keys: the Dask config minus dask-jobqueue's shipped defaults.

    Parameters
    ----------
    queue : str
        A job-queue name, e.g. ``slurm``.

    Returns
    -------
    dict
        Dask-config keys (hyphenated, e.g. ``job-script-prologue``) the user set themselves.
    """
    import yaml

    dask_jobqueue = require("dask_jobqueue", "queues", "--cluster with a job queue")
    package_file = dask_jobqueue.__file__
    assert package_file is not None  # an installed package, not a namespace: it ships jobqueue.yaml
    shipped = yaml.safe_load((Path(package_file).with_name("jobqueue.yaml")).read_text())
    shipped = shipped["jobqueue"].get(queue, {})
    current = dask.config.get(f"jobqueue.{queue}", {}) or {}
    return {k: v for k, v in current.items() if v is not None and v != shipped.get(k)}


def walltime_seconds(walltime: str, queue: str = "slurm") -> int:
    """A walltime as ``queue`` reads it, in seconds: SLURM ``[D-]HH:MM:SS``, ``MM:SS`` or ``MM``; others ``HH:MM[:SS]``.

    >>> walltime_seconds("01:30:00"), walltime_seconds("2-00:00:00"), walltime_seconds("45")
    (5400, 172800, 2700)

    Parameters
    ----------
    walltime : str
        As written in the workflow or on the command line.
    queue : str
        The queue that will read it.

    Returns
    -------
    int
        The walltime in seconds.

    Raises
    ------
    ConfigError
        A walltime the queue would refuse (``4h``), naming the key.
    """
    text = str(walltime).strip()
    pattern = r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?" if queue == "slurm" else r"()(\d+):(\d+)(?::(\d+))?"
    match = re.fullmatch(pattern, text)
    if not match:
        form = "[D-]HH:MM:SS, MM:SS or MM" if queue == "slurm" else "HH:MM:SS or HH:MM"
        raise ConfigError(f"{queue} walltime must be {form} (e.g. 04:00:00), got {walltime!r}")
    days, first, b, c = (int(g) if g else None for g in match.groups())
    a = int(first or 0)  # the pattern's one required group: always digits
    if queue == "slurm" and b is None:
        seconds = a * 60 if days is None else a * 3600
    elif queue == "slurm" and c is None and days is None:
        seconds = a * 60 + (b or 0)
    else:
        seconds = a * 3600 + (b or 0) * 60 + (c or 0)
    return (days or 0) * 86400 + seconds


def lifetime_for(walltime_s: int) -> tuple[str, str]:
    """Worker ``--lifetime`` and ``--lifetime-stagger`` that retire workers before the queue kills them.

    A tenth of the walltime (between 2 and 10 minutes) is kept back, so a worker hands its
    tasks over and exits cleanly; the stagger spreads the retirements out.

    >>> lifetime_for(3600)
    ('3060s', '180s')

    Parameters
    ----------
    walltime_s : int
        The job's walltime in seconds.

    Returns
    -------
    lifetime, stagger : str
        Durations in seconds, e.g. ``"3060s"``, as ``dask worker`` takes them.
    """
    margin = min(max(walltime_s // 10, 120), 600)
    stagger = min(margin // 2, 300)
    return f"{max(walltime_s - margin - stagger, 60)}s", f"{stagger}s"


def memory_bytes(memory: str, key: str = "memory") -> int:
    """``memory`` as dask-jobqueue parses it (``32GB``, ``15 GiB``), or a ConfigError naming ``key``.

    Parameters
    ----------
    memory : str
        A memory size, e.g. ``32GB``.
    key : str
        The setting's name, for the error message.

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    ConfigError
        ``memory`` is not a size dask-jobqueue can parse.
    """
    from dask.utils import parse_bytes

    try:
        value = parse_bytes(str(memory))
    except (ValueError, TypeError):
        value = 0
    if value <= 0:
        raise ConfigError(f"{key} must be a size such as 32GB or 15GiB, got {memory!r}")
    return value


def partition_node(partition: str | None) -> tuple[int, int] | None:
    """(CPUs, memory in MB) of the largest node of a SLURM partition, from ``sinfo``; ``None`` when unknown.

    Parameters
    ----------
    partition : str or None
        A SLURM partition; None for the default one.

    Returns
    -------
    tuple of (int, int) or None
        CPUs and memory in MB, or None without ``sinfo`` or when it fails.
    """
    if not shutil.which("sinfo"):
        return None
    cmd = ["sinfo", "-h", "-o", "%c %m"] + (["-p", partition] if partition else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    nodes = [(int(re.sub(r"\D", "", f[0]) or 0), int(re.sub(r"\D", "", f[1]) or 0))
             for f in (line.split() for line in out.splitlines()) if len(f) >= 2]
    return max(nodes) if nodes else None


def resolve(queue: str, given: dict) -> dict:
    """Every setting the run needs, each from the first of: ``given`` (CLI over workflow), the user's
    ``jobqueue.<queue>`` config, the partition (SLURM's sinfo), relabel's defaults.

    Parameters
    ----------
    queue : str
        ``slurm``, ``pbs``, ``sge``, ``lsf`` or ``htcondor``.
    given : dict
        Settings from the command line over the workflow (:func:`merged_settings`).

    Returns
    -------
    dict
        ``given`` completed with ``cores``, ``memory``, ``walltime``, and ``walltime_s`` (seconds).

    Raises
    ------
    ConfigError
        A value the queue would refuse, or a job larger than any node of the partition.
    """
    user = user_config(queue)
    ours = dask.config.get("relabel.jobqueue")
    out = dict(given)
    node = partition_node(out.get("queue") or user.get("queue")) if queue == "slurm" else None
    for key, fallback in (("cores", node[0] if node else ours["cores"]),
                          ("memory", f"{int(node[1] * 0.95)}MB" if node else ours["memory"]),
                          ("walltime", ours["walltime"])):
        out.setdefault(key, user.get(key, fallback))
    memory_bytes(out["memory"], f"cluster.{queue}.memory")
    for key in ("job_mem",):
        if out.get(key):
            memory_bytes(out[key], f"cluster.{queue}.{key}")
    out["walltime_s"] = walltime_seconds(out["walltime"], queue)
    if node and int(out["cores"]) > node[0]:
        raise ConfigError(f"{queue}: a job asks {out['cores']} cores but the nodes of partition "
                          f"{out.get('queue') or 'default'} have at most {node[0]} (sinfo): SLURM would never start it")
    if node and memory_bytes(out["memory"]) > node[1] * 2**20:
        raise ConfigError(f"{queue}: a job asks {out['memory']} but the nodes of partition "
                          f"{out.get('queue') or 'default'} have at most {node[1]} MB (sinfo)")
    if out.get("scheduler_interface"):
        _check_interface(out["scheduler_interface"])
    return out


def _check_interface(name: str) -> None:
    import psutil

    have = sorted(psutil.net_if_addrs())
    if name not in have:
        raise ConfigError(f"network interface {name!r} does not exist on this host (it has {', '.join(have)})")


def build_cluster_kwargs(queue: str, resolved: dict, out_dir: Path, opts: ClusterOptions) -> tuple[dict, dict]:
    """Keyword arguments for the queue's dask-jobqueue class, and the scaling plan.

    Only what the command line, the workflow or relabel's defaults decide is passed; for the
    rest dask-jobqueue reads the user's ``jobqueue.<queue>`` config itself. List keys are the
    user's config + the workflow's / command line's + relabel's.

    Parameters
    ----------
    queue : str
        A job-queue name.
    resolved : dict
        Settings from :func:`resolve`.
    out_dir : Path
        The run's output folder (worker logs default to ``out_dir/_logs/<queue>``).
    opts : ClusterOptions
        The caller's cluster options (scheduler host, TLS, timeout).

    Returns
    -------
    kwargs : dict
        For the dask-jobqueue class of ``queue``.
    scaling : dict
        ``minimum_jobs``, ``maximum_jobs``, ``wait_for`` (jobs), ``workers_per_job`` and ``timeout`` (s).

    Raises
    ------
    ConfigError
        Adaptive scaling asked for a GPU pool, ``max_jobs`` below ``min_jobs``, or a ``queue``,
        ``account``, ``job_cpu`` or ``job_mem`` setting the queue's class does not take.
    """
    user = user_config(queue)
    gpus = int(resolved.get("gpus_per_job") or 0)
    # One worker process per GPU, each advertising GPU=1: shard tasks ask for that resource.
    processes = max(gpus, 1)
    cores = int(resolved["cores"])
    lifetime, stagger = lifetime_for(resolved["walltime_s"])
    lists = {key: list(user.get(cfg) or []) + list(resolved.get(key) or []) for key, cfg in LISTS.items()}
    lists["worker_extra_args"] += ["--lifetime", resolved.get("lifetime") or lifetime,
                                   "--lifetime-stagger", resolved.get("lifetime_stagger") or stagger]
    if gpus:
        lists["worker_extra_args"] += ["--resources", "GPU=1"]
    directives = _job_directives(queue, resolved, user, lists["job_extra_directives"], gpus)
    env = worker_environment(max(1, cores // processes), gpus)
    # The job's nanny would override MALLOC_TRIM_THRESHOLD_ with its own pre-spawn-environ; workers set it
    # themselves (relabel.run.inference.relax_malloc_trimming). The rest reaches them through the job's environment.
    lists["job_script_prologue"] += [f"export {k}={v}" for k, v in env.items() if not k.startswith("MALLOC_")]
    kwargs = {"cores": cores, "processes": processes, "memory": str(resolved["memory"]),
              "walltime": _queue_walltime(resolved["walltime_s"], queue),
              "job_script_prologue": lists["job_script_prologue"], "job_extra_directives": directives,
              "worker_extra_args": lists["worker_extra_args"],
              "log_directory": str(resolved.get("log_directory") or user.get("log-directory")
                                   or out_dir / "_logs" / queue),
              "scheduler_options": _scheduler_options(resolved, user, opts)}
    for key in ("queue", "account", "job_cpu", "job_mem"):
        if resolved.get(key) is not None and key not in KEYWORDS[queue]:
            raise ConfigError(f"cluster.{queue}.{key}: {queue} jobs take no {key} option in dask-jobqueue; "
                              "give it as a job_extra_directives line instead")
    names = {**KEYWORDS[queue], **COMMON}
    kwargs.update({kw: resolved[key] for key, kw in names.items()
                   if key != "walltime" and resolved.get(key) is not None})
    if "walltime" not in names:
        kwargs.pop("walltime")
    if "name" not in user:
        kwargs["job_name"] = dask.config.get("relabel.jobqueue.name")
    python = resolved.get("python") or user.get("python")
    if python or resolved.get("job_script_prologue") or user.get("job-script-prologue"):
        # A prologue that activates an environment must choose the Python: not this login node's.
        kwargs["python"] = python or "python"
    if queue == "htcondor":
        kwargs["disk"] = user.get("disk") or kwargs["memory"]
    if resolved.get("tls", True):
        kwargs["security"] = True
        kwargs["shared_temp_directory"] = str(out_dir / "_cluster")
    return kwargs, _scaling(resolved, gpus, processes)


def _job_directives(queue: str, resolved: dict, user: dict, lines: list[str], gpus: int
                    ) -> list[str] | dict[str, str]:
    """The job's extra directives (``lines``: the user's config + ours) with the queue's GPU request."""
    asked = QUEUES[queue][2](gpus) if gpus else []
    if queue == "htcondor":  # submit-file entries ("key = value"), not directive lines
        given = dict(str(line).split("=", 1) for line in resolved.get("job_extra_directives") or [] if "=" in str(line))
        return {**dict(user.get("job-extra-directives") or {}),
                **{k.strip(): v.strip() for k, v in given.items()}, **(asked if isinstance(asked, dict) else {})}
    return lines + (asked if isinstance(asked, list) else [])


def _queue_walltime(seconds: int, queue: str) -> str:
    h, rem = divmod(seconds, 3600)
    return f"{h:02d}:{rem // 60:02d}" if queue == "lsf" else f"{h:02d}:{rem // 60:02d}:{rem % 60:02d}"


def _scheduler_options(resolved: dict, user: dict, opts: ClusterOptions) -> dict:
    """Listen where compute nodes reach the scheduler (routable address or given interface); dashboard on loopback."""
    from distributed.utils import get_ip

    out = {"dashboard_address": settings.get("dashboard-address", opts.dashboard_address)}
    out.update(user.get("scheduler-options") or {})
    if resolved.get("scheduler_interface"):
        out.pop("host", None)
        out["interface"] = resolved["scheduler_interface"]
    elif resolved.get("scheduler_host") or opts.host:
        out.pop("interface", None)
        out["host"] = resolved.get("scheduler_host") or opts.host
    elif "interface" not in out and "host" not in out:
        out["host"] = get_ip()
    return out


def _scaling(resolved: dict, gpus: int, processes: int) -> dict:
    if resolved.get("min_jobs") is not None or resolved.get("max_jobs") is not None:
        if gpus:
            raise ConfigError("adaptive scaling (min_jobs/max_jobs) is for CPU pools; give GPU pools a fixed --jobs")
        lo = int(resolved.get("min_jobs") or 0)
        hi = int(resolved.get("max_jobs") or max(lo, 1))
        if hi < lo:
            raise ConfigError(f"max_jobs ({hi}) is below min_jobs ({lo})")
        scaling: dict[str, Any] = {"minimum_jobs": lo, "maximum_jobs": hi, "wait_for": max(lo, 1)}
    else:
        jobs = int(resolved.get("jobs") or 1)
        # adapt(min = max) keeps the pool at `jobs`: a job that ends (lifetime, walltime) is replaced.
        scaling = {"minimum_jobs": jobs, "maximum_jobs": jobs, "wait_for": jobs}
    scaling["workers_per_job"] = processes
    scaling["timeout"] = float(settings.get("worker-timeout", resolved.get("worker_timeout")))
    return scaling


def _queue_of(opts: ClusterOptions) -> str:
    """The job queue ``opts`` names, checked."""
    if opts.kind is None or opts.kind not in QUEUES:
        raise ConfigError(f"--cluster {opts.kind} is not a job queue (one of {', '.join(QUEUES)})")
    return opts.kind


def cluster_class(queue: str):
    """The dask-jobqueue cluster class of ``queue`` (e.g. ``SLURMCluster``).

    Parameters
    ----------
    queue : str
        A key of :data:`QUEUES`.

    Returns
    -------
    type
        The class, imported from dask_jobqueue.
    """
    dask_jobqueue = require("dask_jobqueue", "queues", "--cluster with a job queue")
    return getattr(dask_jobqueue, QUEUES[queue][0])


def job_script(opts: ClusterOptions) -> str:
    """The batch script ``relabel run --cluster QUEUE`` would submit (``--dry-run``).

    Nothing is submitted or written.

    Parameters
    ----------
    opts : ClusterOptions
        With ``kind`` a job queue and the merged ``queue_settings``.

    Returns
    -------
    str
        The script, with its temporary paths shown under ``opts.out_dir``.

    Raises
    ------
    ConfigError
        ``opts.kind`` is not a job queue, or a setting would be refused.
    """
    queue = _queue_of(opts)
    with tempfile.TemporaryDirectory() as scratch:
        resolved = resolve(queue, opts.queue_settings)
        kwargs, _ = build_cluster_kwargs(queue, resolved, Path(scratch), opts)
        kwargs["scheduler_options"] = {**kwargs["scheduler_options"], "dashboard_address": ":0"}
        if kwargs.get("shared_temp_directory"):
            Path(kwargs["shared_temp_directory"]).mkdir(mode=0o700)
        with cluster_class(queue)(**kwargs) as cluster:
            script = cluster.job_script()
            _remove_credentials(cluster)
    return script.replace(scratch, str(Path(opts.out_dir or ".").resolve()))


@contextlib.contextmanager
def jobqueue_cluster(opts: ClusterOptions) -> Iterator[ClusterHandle]:
    """Start the queue's pool, wait for its workers (or say at once why they cannot come), yield a client.

    Parameters
    ----------
    opts : ClusterOptions
        With ``kind`` a job queue, ``out_dir`` and the merged ``queue_settings``.

    Yields
    ------
    ClusterHandle
        A client of the pool's scheduler.

    Raises
    ------
    ClusterError
        The queue's submit command is missing, or SLURM refuses the job (``sbatch --test-only``).
    WorkersMissing
        No worker came within the timeout, or the queue says none ever will.
    """
    queue = _queue_of(opts)
    resolved = resolve(queue, opts.queue_settings)
    out_dir = Path(opts.out_dir or ".")
    kwargs, scaling = build_cluster_kwargs(queue, resolved, out_dir, opts)
    submit = QUEUES[queue][1]
    if not shutil.which(submit):
        raise ClusterError(f"--cluster {queue} needs {submit} on PATH: run relabel on a login node of that "
                           f"queue (see the job script with --dry-run)")
    if queue == "slurm":
        _sbatch_test_only(kwargs)
    if kwargs.get("security"):
        Path(kwargs["shared_temp_directory"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    Path(kwargs["log_directory"]).mkdir(parents=True, exist_ok=True)
    gpus = int(resolved.get("gpus_per_job") or 0)
    description = (f"{queue.upper()}: {scaling['minimum_jobs']}..{scaling['maximum_jobs']} jobs x "
                   f"{scaling['workers_per_job']} worker(s), {kwargs['cores']} cores, {kwargs['memory']}"
                   + (f", {gpus} GPU(s) each" if gpus else "") + (", TLS" if kwargs.get("security") else ", no TLS"))
    cluster = cluster_class(queue)(**kwargs)
    try:
        cluster.adapt(minimum_jobs=scaling["minimum_jobs"], maximum_jobs=scaling["maximum_jobs"])
        with connected(cluster, security=cluster.security) as client:
            want = scaling["wait_for"] * scaling["workers_per_job"]
            log_dir = Path(kwargs["log_directory"])
            try:
                wait_for_workers(client, want, scaling["timeout"], f"{queue} cluster {cluster.scheduler_address}",
                                 explain=lambda: _jobs_stuck(queue, cluster, log_dir), poll=2.0)
            except WorkersMissing as exc:
                raise WorkersMissing(f"{str(exc).split('. Check')[0]}; {_jobs_state(queue, cluster)}\n"
                                     f"{_log_tail(log_dir)}") from None
            yield ClusterHandle(client, gpu=bool(gpus), dashboard=client.dashboard_link, description=description)
    finally:
        cluster.close()
        _remove_credentials(cluster)


def _sbatch_test_only(kwargs: dict) -> None:
    """Ask SLURM whether it would accept the job (``sbatch --test-only``) before anything starts."""
    probe = {**kwargs, "scheduler_options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    probe.pop("security", None)
    probe.pop("shared_temp_directory", None)
    with cluster_class("slurm")(**probe) as cluster, tempfile.NamedTemporaryFile("w", suffix=".sh") as fh:
        fh.write(cluster.job_script())
        fh.flush()
        out = subprocess.run(["sbatch", "--test-only", fh.name], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        said = "; ".join(line.strip() for line in (out.stderr or out.stdout).strip().splitlines())
        raise ClusterError(f"SLURM refuses the worker job: {said} "
                           "(see the script with --dry-run)")


def _jobs_stuck(queue: str, cluster, log_dir: Path) -> str:
    """Why no worker will come, at once, when the queue says so; '' while waiting still makes sense."""
    job_ids = [str(job.job_id) for job in cluster.workers.values() if getattr(job, "job_id", None)]
    if queue != "slurm" or not job_ids:
        return ""
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    fields = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
    stuck = [(i, s, r) for i, s, r in fields if s == "PENDING" and r.split(",")[0].split("(")[0] in NEVER_STARTS]
    if not stuck:
        return ""
    return ("SLURM will never start " + "; ".join(f"job {i} (squeue: {s}, {r})" for i, s, r in stuck)
            + f"; ask for less (--cores, --memory, --queue) or see `scontrol show partition`; logs in {log_dir}")


def _remove_credentials(cluster) -> None:
    """Delete the temporary TLS files now: dask-jobqueue would leave them until garbage collection."""
    for name in [n for n in vars(cluster) if n.startswith("_job_")]:
        handle = getattr(cluster, name)
        if hasattr(handle, "close"):
            handle.close()


def _jobs_state(queue: str, cluster) -> str:
    job_ids = [j for j in (getattr(job, "job_id", None) for job in cluster.workers.values()) if j]
    submit = QUEUES[queue][1]
    if not job_ids:
        return (f"no job was submitted ({submit} failed: run `relabel run ... --dry-run` and submit the script "
                f"with {submit} to see the queue's message)")
    if queue != "slurm":
        return f"jobs {', '.join(job_ids)} were submitted: ask the queue about them"
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"squeue could not be asked ({exc})"
    if not out:
        return f"squeue no longer lists jobs {', '.join(job_ids)} (they ended: see their logs)"
    return "squeue says: " + "; ".join(f"job {i} {st} ({r})" for i, st, r in (ln.split("|") for ln in out.splitlines()))


def _log_tail(log_dir: Path, lines: int = 20) -> str:
    logs = sorted(log_dir.glob("*.err"), key=lambda p: p.stat().st_mtime)[-1:]
    if not logs:
        return f"no worker log in {log_dir} yet"
    text = logs[0].read_text(errors="replace").splitlines()[-lines:]
    return f"end of {logs[0]}:\n" + "\n".join(text)
