"""Where shards run: a LocalCluster, an existing scheduler, the caller's Client, or no cluster.

Each kind is a context manager yielding a :class:`ClusterHandle` whose ``client`` is a
:class:`distributed.Client` (or ``None`` for ``none``, which runs shards in this process
for plain tracebacks). Job queues (SLURM, PBS, SGE, LSF, HTCondor) live in
:mod:`relabel.run.jobqueue`. Every kind either yields a client with workers or raises a
:class:`relabel.errors.ClusterError` that says what arrived and what to check: nothing
waits forever, and no Client leaves ``dask.config['scheduler']`` set behind it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from relabel import settings
from relabel.config import JOB_QUEUES
from relabel.errors import ClusterError, ConfigError, WorkersMissing

if TYPE_CHECKING:  # distributed is imported when a cluster starts, not when relabel is
    from distributed import Client

log = logging.getLogger(__name__)

#: Protocols a Dask scheduler address may use.
PROTOCOLS = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


@dataclass
class ClusterOptions:
    """What the caller chose; ``None`` everywhere means "the workflow's, else relabel's default".

    ``queue_settings`` holds the job-queue options given on the command line (keys of
    :class:`relabel.config.JobQueueSettings`); ``host`` is where a scheduler relabel starts
    listens (``None``: loopback for a LocalCluster, this host's routable address for a job queue).
    """

    kind: str | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    dashboard_address: str | None = None
    host: str | None = None
    worker_timeout: float | None = None
    queue_settings: dict = field(default_factory=dict)
    out_dir: str | None = None


@dataclass
class ClusterHandle:
    """A started cluster: the client, whether its workers have GPUs, and what to tell the user."""

    client: object | None
    gpu: bool = False
    dashboard: str | None = None
    description: str = ""


def worker_environment(cores: int, gpus: int = 0) -> dict[str, str]:
    """Variables each worker process starts with, given through ``distributed.nanny.pre-spawn-environ``.

    The worker's core count travels as Dask configuration (``relabel.worker-cores``);
    ``MALLOC_TRIM_THRESHOLD_`` keeps large blocks for reuse: Dask's 65536 makes every
    forward-pass activation a fresh mmap (measured: 40 % of CPU inference speed lost).

    Parameters
    ----------
    cores : int
        Cores each worker process may use (torch's thread count).
    gpus : int
        GPUs per job; with more than one, each worker process is given one.

    Returns
    -------
    dict of str to str
        Environment variable -> value.
    """
    env = {"DASK_RELABEL__WORKER_CORES": str(max(1, cores)), "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20)}
    if gpus > 1:
        env["RELABEL_GPUS_PER_JOB"] = str(gpus)  # worker i takes GPU i (relabel.model.device.choose_device)
    return env


@contextlib.contextmanager
def local_cluster(opts: ClusterOptions) -> Iterator[ClusterHandle]:
    """A LocalCluster bound to loopback; with GPUs, one worker per GPU advertising ``GPU=1``.

    Parameters
    ----------
    opts : ClusterOptions
        ``workers``, ``threads_per_worker``, ``dashboard_address``, ``host`` and ``worker_timeout``
        (None: relabel's defaults).

    Yields
    ------
    ClusterHandle
        The connected client, whether its workers have GPUs, the dashboard link.
    """
    import dask
    import torch
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # One worker per GPU: several processes on one GPU would oversubscribe it.
    workers = opts.workers or (n_gpus if n_gpus else min(cores, 2))
    threads = opts.threads_per_worker or 1
    env = worker_environment(max(1, cores // workers), n_gpus)
    from relabel.interrupts import children_ignore_interrupt

    # Ctrl-C reaches the workers too (one process group): only relabel answers it.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {
            **dask.config.get("distributed.nanny.pre-spawn-environ", {}), **env}}), _environment_kept() as saved, \
            children_ignore_interrupt():
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               host=opts.host or "127.0.0.1",
                               dashboard_address=settings.get("dashboard-address", opts.dashboard_address),
                               resources={"GPU": 1} if n_gpus else None,
                               # CRITICAL, not ERROR: at shutdown (after Ctrl-C too) a worker's heartbeat can race the
                               # closing scheduler and log a 30-line traceback; task failures still reach relabel.
                               silence_logs=logging.CRITICAL)
    try:
        with connected(cluster) as client:
            yield ClusterHandle(client, gpu=bool(n_gpus), dashboard=client.dashboard_link,
                                description=f"LocalCluster: {workers} workers x {threads} threads"
                                            + (f", {n_gpus} GPU(s)" if n_gpus else ", CPU"))
    finally:
        cluster.close()
        _restore_environment(saved)  # a worker restarted during the run wrote them again


@contextlib.contextmanager
def _environment_kept() -> Iterator[dict]:
    """Put this process's environment back: in-process nannies write their pre-spawn-environ
    (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_, ...) into ``os.environ`` before each spawn."""
    saved = dict(os.environ)
    try:
        yield saved
    finally:
        _restore_environment(saved)


def _restore_environment(saved: dict) -> None:
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


@contextlib.contextmanager
def connected(target, timeout: float | str | None = None, security=None) -> Iterator[Client]:
    """A Client of ``target`` (a cluster or an address) that sets no global Dask state.

    ``set_as_default=False``: relabel submits through this client only, so the caller's
    ``dask.config['scheduler']`` and default client stay as they were, even when connecting fails.

    Parameters
    ----------
    target : distributed.deploy.Cluster or str
        A cluster object, or a scheduler address such as ``tcp://host:8786``.
    timeout : float or str, optional
        Seconds (or a Dask duration such as ``"30s"``) to wait for the connection.
    security : distributed.Security, optional
        TLS credentials of a scheduler that requires them.

    Yields
    ------
    distributed.Client
        Closed when the block ends.

    Raises
    ------
    ClusterError
        ``target`` is an address that cannot be reached within ``timeout`` (the cause named).
    """
    import dask
    from distributed import Client

    if isinstance(target, str):
        _refused_at_once(target)
    before = dask.config.get("scheduler", None)
    try:
        client = Client(target, timeout=timeout or settings.get("connect-timeout"), set_as_default=False,
                        security=security)
    except (OSError, TimeoutError) as exc:
        cause = "connection refused" if "refused" in str(exc).lower() else str(exc).split("\n")[0]
        raise ClusterError(f"cannot reach the Dask scheduler at {target} ({cause}; waited up to "
                           f"{timeout or settings.get('connect-timeout')}); is it running, and is the "
                           "address as `dask scheduler` printed it?") from None
    except Exception as exc:  # something listens there, but it does not speak Dask's protocol
        if not isinstance(target, str):
            raise
        raise ClusterError(f"cannot use the Dask scheduler at {target}: what answers there is not a Dask "
                           f"scheduler, or not this version's ({type(exc).__name__}: {str(exc)[:120]})") from None
    finally:
        if before is None:
            dask.config.config.pop("scheduler", None)
    try:
        yield client
    finally:
        client.close()


def _refused_at_once(address: str) -> None:
    """Fail in a second on a port where nothing listens: Dask's own connect retries for its whole timeout."""
    import socket

    from distributed.comm import parse_address, parse_host_port

    protocol, location = parse_address(address)
    if protocol not in ("tcp", "tls"):
        return
    host, port = parse_host_port(location)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} (connection refused: nothing listens "
                           "on that port); is it running, and is the address as `dask scheduler` printed it?") from None
    except OSError:
        pass  # unresolvable or filtered: Dask's connect says more, within its timeout


def scheduler_address(address: str | None, scheduler_file: str | None) -> str:
    """The scheduler address from ``--scheduler`` or ``--scheduler-file``.

    The file is read as ``dask scheduler --scheduler-file`` writes it.

    A path given as ``--scheduler`` that names an existing file is read as a scheduler file.

    Parameters
    ----------
    address : str or None
        ``--scheduler``: ``protocol://host:port``, or the path of a scheduler file.
    scheduler_file : str or None
        ``--scheduler-file``: the JSON file ``dask scheduler --scheduler-file`` wrote.

    Returns
    -------
    str
        The address, e.g. ``tcp://10.0.0.5:8786``.

    Raises
    ------
    ClusterError
        A missing or unreadable scheduler file, or an address that is not ``protocol://host:port``.
    """
    if scheduler_file or (address and "://" not in address and Path(address).is_file()):
        path = Path(scheduler_file or address or "")  # one of them is set: the condition above
        try:
            info = json.loads(path.read_text())
            address = info["address"]
        except FileNotFoundError:
            raise ClusterError(f"scheduler file {path} does not exist (start the scheduler with "
                               f"`dask scheduler --scheduler-file {path}`)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClusterError(f"scheduler file {path} is not one `dask scheduler --scheduler-file` wrote "
                               f"(JSON with an 'address'): {exc}") from None
    from distributed.comm import parse_address, parse_host_port

    if not address:
        raise ClusterError("attaching to a scheduler needs --scheduler tcp://host:8786 or --scheduler-file PATH")
    try:
        protocol, location = parse_address(address)
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
        if protocol != "inproc":
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"--scheduler takes an address such as tcp://host:8786 (or use --scheduler-file "
                           f"PATH), got {address!r}: {exc}") from None
    return address


def wait_for_workers(client, want: int, timeout: float, where: str, explain: Callable[[], str] | None = None,
                     poll: float = 1.0) -> int:
    """Wait until ``want`` workers are connected; return how many there are.

    ``explain`` is asked on every poll: a non-empty answer (e.g. a job the queue can never
    start) ends the wait at once.

    Parameters
    ----------
    client : distributed.Client
        Connected to the scheduler to watch.
    want : int
        Workers to wait for.
    timeout : float
        Seconds to wait at most.
    where : str
        The cluster, as named in the error message.
    explain : callable, optional
        Returns why workers cannot come (e.g. ``squeue``'s pending reason), or ``""``.
    poll : float
        Seconds between checks.

    Returns
    -------
    int
        Workers connected when the wait ended (at least ``want``).

    Raises
    ------
    WorkersMissing
        Fewer than ``want`` workers after ``timeout`` seconds, or ``explain`` said why none will come.
    """
    deadline = time.monotonic() + timeout
    have = 0
    while True:
        have = len(client.scheduler_info(n_workers=-1)["workers"])
        if have >= want:
            return have
        reason = explain() if explain else ""
        if reason:
            raise WorkersMissing(f"{where}: {have} of {want} workers; {reason}; nothing was run")
        if time.monotonic() >= deadline:
            raise WorkersMissing(f"{where} has {have} of {want} workers after {timeout:g} s; nothing was run. "
                                 + (explain_hint(where)))
        time.sleep(poll)


def explain_hint(where: str) -> str:
    """What to check when no worker joined the scheduler at ``where``.

    Parameters
    ----------
    where : str
        The scheduler, as the message names it.

    Returns
    -------
    str
        One sentence for the end of :class:`relabel.errors.WorkersMissing`'s message.
    """
    return ("Check that workers were started against it (`dask worker ADDRESS`) and can reach it "
            "(firewall, interface), or wait longer with --worker-timeout")


def _gpu_pool(client) -> bool:
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return any(w.get("resources", {}).get("GPU") for w in workers.values())


@contextlib.contextmanager
def existing_scheduler(opts: ClusterOptions) -> Iterator[ClusterHandle]:
    """Attach to a running scheduler; wait (bounded) for a worker; its GPU resources decide where shards go.

    Parameters
    ----------
    opts : ClusterOptions
        ``scheduler`` (an address) or ``scheduler_file``, and ``worker_timeout``.

    Yields
    ------
    ClusterHandle
        A client of the scheduler at ``opts.scheduler`` or in ``opts.scheduler_file``.

    Raises
    ------
    ClusterError
        The address is malformed or unreachable.
    WorkersMissing
        No worker joined within the worker timeout.
    """
    address = scheduler_address(opts.scheduler, opts.scheduler_file)
    with connected(address) as client:
        n = wait_for_workers(client, 1, float(settings.get("worker-timeout", opts.worker_timeout)),
                             f"scheduler {address}")
        gpu = _gpu_pool(client)
        yield ClusterHandle(client, gpu=gpu, dashboard=client.dashboard_link,
                            description=f"scheduler {address}: {n} workers" + (" with GPUs" if gpu else ""))


@contextlib.contextmanager
def given_client(client, timeout: float | None = None) -> Iterator[ClusterHandle]:
    """The caller's own Client: used as it is, never closed, no second cluster made.

    Parameters
    ----------
    client : distributed.Client
        The caller's client; relabel submits through it and leaves it open.
    timeout : float, optional
        Seconds to wait for a first worker (default: ``relabel.worker-timeout``).

    Yields
    ------
    ClusterHandle
        Wrapping ``client``.
    """
    n = wait_for_workers(client, 1, float(settings.get("worker-timeout", timeout)),
                         f"the Client's scheduler {client.scheduler.address}")
    gpu = _gpu_pool(client)
    yield ClusterHandle(client, gpu=gpu, dashboard=client.dashboard_link,
                        description=f"the active Client ({client.scheduler.address}): {n} workers"
                                    + (" with GPUs" if gpu else ""))


def active_client():
    """The caller's default ``distributed.Client`` when there is one (LSDB's rule), else ``None``."""
    import sys

    if "distributed" not in sys.modules:  # no Client can exist without it: do not import Dask for nothing
        return None
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:
        return None
    return client if client.status == "running" else None


@contextlib.contextmanager
def no_cluster(opts: ClusterOptions) -> Iterator[ClusterHandle]:
    """Shards run one after another in this process: plain tracebacks for debugging.

    Parameters
    ----------
    opts : ClusterOptions
        The caller's choices, already merged with the workflow's ``cluster`` section. Unused: nothing is started.

    Yields
    ------
    ClusterHandle
        Without a client; ``gpu`` when torch sees a GPU in this process.
    """
    import torch

    yield ClusterHandle(None, gpu=torch.cuda.is_available(), description="no cluster (in-process)")


CLUSTERS: dict[str, Callable[[ClusterOptions], contextlib.AbstractContextManager]] = {
    "local": local_cluster,
    "none": no_cluster,
}


def start_cluster(opts: ClusterOptions):
    """The context manager for ``opts`` (a scheduler given: attach to it, whatever ``kind`` says).

    Parameters
    ----------
    opts : ClusterOptions
        The caller's choices, already merged with the workflow's ``cluster`` section.

    Returns
    -------
    contextlib.AbstractContextManager
        Entering it starts (or attaches to) the cluster and yields a :class:`ClusterHandle`;
        leaving it stops what it started.

    Raises
    ------
    ConfigError
        ``opts.kind`` is none of ``local``, ``none`` and the job queues.
    """
    if opts.scheduler or opts.scheduler_file:
        return existing_scheduler(opts)
    if opts.kind in JOB_QUEUES:
        from relabel.run.jobqueue import jobqueue_cluster  # imports dask-jobqueue only when asked for

        return jobqueue_cluster(opts)
    if opts.kind not in CLUSTERS:
        raise ConfigError(f"unknown cluster kind {opts.kind!r}; choose one of {', '.join([*CLUSTERS, *JOB_QUEUES])}")
    return CLUSTERS[opts.kind](opts)
