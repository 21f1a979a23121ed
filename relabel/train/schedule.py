"""Schedules of one training run: the learning rate (torch's own schedulers) and the penalty's lambda."""

from __future__ import annotations

import torch


def learning_rate_schedule(optimiser: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up of the learning rate over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    Parameters
    ----------
    optimiser : torch.optim.Optimizer
    total_steps, warmup_steps : int
        Optimiser steps of the whole run, and of the warm-up (one epoch).

    Returns
    -------
    torch.optim.lr_scheduler.SequentialLR
        Step it once per optimiser step.
    """
    warmup_steps = max(1, min(warmup_steps, total_steps))
    warmup = torch.optim.lr_scheduler.LinearLR(optimiser, start_factor=1.0 / warmup_steps, end_factor=1.0,
                                               total_iters=max(1, warmup_steps - 1))
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.SequentialLR(optimiser, [warmup, decay], milestones=[warmup_steps])


def lambda_share(epochs_done: float, warmup_epochs: int) -> float:
    """Share of lambda applied after ``epochs_done`` epochs: 0 during the warm-up, then up to 1 over one epoch.

    Parameters
    ----------
    epochs_done : float
        Epochs completed, fractional within an epoch (steps / steps per epoch).
    warmup_epochs : int
        Epochs of cross-entropy alone.

    Returns
    -------
    float
        In [0, 1].

    Examples
    --------
    >>> [lambda_share(e, 2) for e in (0, 2, 2.5, 3, 7)]
    [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    return float(min(1.0, max(0.0, epochs_done - warmup_epochs)))
