"""Device policy: which GPU (or the CPU) a process runs the network on, and its mixed precision."""

from __future__ import annotations

import contextlib
import os

import torch

from relabel.errors import ConfigError


def choose_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``requested``, or with None/"auto" CUDA when torch sees a GPU, else the CPU.

    With several GPUs and one worker process per GPU (a SLURM job, or a LocalCluster on a
    multi-GPU machine), worker ``name-i`` (or ``i``) takes GPU ``i``: the processes start
    with the same environment, so CUDA_VISIBLE_DEVICES cannot tell them apart.

    Parameters
    ----------
    requested : str or torch.device, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a device, or None / ``"auto"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        A CUDA device was asked for and torch sees none.

    Examples
    --------
    >>> choose_device("cpu")
    device(type='cpu')
    """
    if requested not in (None, "auto"):
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {requested} was asked for but torch sees no CUDA device")
        return device
    if not torch.cuda.is_available():
        return torch.device("cpu")
    per_job = int(os.environ.get("RELABEL_GPUS_PER_JOB", "1") or 1)
    if per_job > 1:
        try:
            from distributed import get_worker

            index = int(str(get_worker().name).rsplit("-", 1)[-1])
            return torch.device(f"cuda:{index % torch.cuda.device_count()}")
        except (ImportError, ValueError):
            pass
    return torch.device("cuda")


def autocast_for(device: torch.device):
    """bfloat16 autocast on CUDA (convolutions on tensor cores); nothing on CPU, which stays exact and deterministic.

    Parameters
    ----------
    device : torch.device
        The device the forward passes run on.

    Returns
    -------
    contextlib.AbstractContextManager
        ``torch.autocast`` on CUDA, a null context elsewhere.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
