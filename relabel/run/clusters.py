"""Where shards run: a LocalCluster, an existing scheduler, or no cluster at all.

Each kind is a context manager yielding a :class:`distributed.Client` (or ``None``
for ``none``, which runs shards in this process for plain tracebacks). A new kind
(SLURM via dask-jobqueue) is one more function registered in :data:`CLUSTERS`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch


@dataclass
class ClusterOptions:
    """Options common to every cluster kind, plus a free-form ``extra`` for kind-specific ones."""

    kind: str | None = None  # None: the workflow's cluster.kind, else "local"
    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    dashboard_address: str = "127.0.0.1:8787"
    host: str = "127.0.0.1"
    extra: dict = field(default_factory=dict)


@dataclass
class ClusterHandle:
    """A started cluster: the client, whether its workers have GPUs, and what to tell the user."""

    client: object | None
    gpu: bool = False
    dashboard: str | None = None
    description: str = ""


@contextlib.contextmanager
def local_cluster(opts: ClusterOptions) -> Iterator[ClusterHandle]:
    """A LocalCluster bound to loopback; with GPUs, one worker per GPU advertising ``GPU=1``."""
    from distributed import Client, LocalCluster

    cores = os.cpu_count() or 1
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus:
        # One worker per GPU: several processes on one GPU would oversubscribe it.
        workers = opts.workers or n_gpus
        threads = opts.threads_per_worker or 1
        resources = {"GPU": 1}
    else:
        workers = opts.workers or min(cores, 2 if cores >= 2 else 1)
        threads = opts.threads_per_worker or 1
        resources = None
    worker_cores = max(1, cores // workers)
    env = {"RELABEL_WORKER_CORES": str(worker_cores)}
    if n_gpus > 1:
        env["RELABEL_GPUS_PER_JOB"] = str(n_gpus)  # worker i takes GPU i (relabel.model.choose_device)
    from relabel.interrupts import children_ignore_interrupt

    with children_ignore_interrupt():  # Ctrl-C reaches the workers too: only relabel answers it
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host=opts.host,
            dashboard_address=opts.dashboard_address,
            resources=resources,
            # CRITICAL, not ERROR: at shutdown (after Ctrl-C too) a worker's heartbeat can race the closing
            # scheduler and log a 30-line traceback; task failures still reach relabel through their futures.
            silence_logs=50,
            env=env,
        )
    try:
        with Client(cluster) as client:
            yield ClusterHandle(client, gpu=bool(n_gpus), dashboard=client.dashboard_link,
                                description=f"LocalCluster: {workers} workers x {threads} threads"
                                            + (f", {n_gpus} GPU(s)" if n_gpus else ", CPU"))
    finally:
        cluster.close()


@contextlib.contextmanager
def existing_scheduler(opts: ClusterOptions) -> Iterator[ClusterHandle]:
    """Attach to a running scheduler; its workers' GPU resources decide where shards go."""
    from distributed import Client

    with Client(opts.scheduler, timeout="30s") as client:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        gpu = any(w.get("resources", {}).get("GPU") for w in workers.values())
        yield ClusterHandle(client, gpu=gpu, dashboard=client.dashboard_link,
                            description=f"scheduler {opts.scheduler}: {len(workers)} workers" + (" with GPUs" if gpu else ""))


@contextlib.contextmanager
def no_cluster(opts: ClusterOptions) -> Iterator[ClusterHandle]:
    """Shards run one after another in this process: plain tracebacks for debugging."""
    yield ClusterHandle(None, gpu=torch.cuda.is_available(), description="no cluster (in-process)")


CLUSTERS: dict[str, Callable[[ClusterOptions], contextlib.AbstractContextManager]] = {
    "local": local_cluster,
    "none": no_cluster,
}


def start_cluster(opts: ClusterOptions):
    """The context manager for ``opts`` (``scheduler`` set: attach to it, whatever ``kind`` says)."""
    if opts.scheduler:
        return existing_scheduler(opts)
    if opts.kind == "slurm":
        from relabel.run.jobqueue import slurm_cluster  # imports dask-jobqueue only when asked for

        return slurm_cluster(opts)
    try:
        return CLUSTERS[opts.kind](opts)
    except KeyError:
        from relabel.errors import ConfigError

        raise ConfigError(f"unknown cluster kind {opts.kind!r}; choose one of {', '.join([*CLUSTERS, 'slurm'])}") from None
