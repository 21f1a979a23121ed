"""The differentiable labeling-bias term of de-biased training (torch).

It is the metric L of :mod:`relabel.bias` in its soft form, on the network's
predicted probabilities: the mean probability of each class per cell
(intrinsic bin, observable, observable bin) is compared with the reference
(best-observed) bin of the same intrinsic bin and observable,

    B = sqrt( sum_{j, leaf, b, k} (f[j, leaf, b, k] - f[j, leaf, ref_j, k])^2 / bins_obs
              / (n_observables * K * n_leaves) ).

A batch holds a few objects per cell, so batch means alone are too noisy to
train on. Each cell keeps an exponential moving average of its probability sum
and object count; a batch's cell mean is
``(momentum * S_past + sum_batch p) / (momentum * N_past + n_batch)``, where only
the batch's own probabilities carry the gradient. The reference cells' means are
detached: the best-observed objects stay anchored by the labels, and the worse
observed ones are pulled towards them, never the other way round.
With ``momentum=0`` and one batch holding every object, ``B`` equals the soft L of
:func:`relabel.bias` on the same bins.
"""

from __future__ import annotations

import torch


class BiasPenalty:
    """Running-average soft L over fixed cells; call it on each batch's probabilities.

    Parameters
    ----------
    n_leaves
        Number of intrinsic bins (2**depth of the k-d tree).
    bins_obs
        Number of observable bins inside each intrinsic bin.
    reference_bins
        For each observable, the index of its best-quality bin (0 when low values are
        best, ``bins_obs - 1`` when high values are).
    n_classes
        Number of classes K.
    momentum
        Decay of the running sums per batch, in [0, 1). 0 uses the batch alone.

    Examples
    --------
    >>> pen = BiasPenalty(n_leaves=1, bins_obs=2, reference_bins=[1], n_classes=2, momentum=0.0)
    >>> probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> leaf = torch.zeros(4, dtype=torch.long)
    >>> obs_bin = torch.tensor([[0], [0], [1], [1]])
    >>> round(float(pen(probs, leaf, obs_bin)), 6)  # sqrt((1 + 1) / 2 / (1 * 2 * 1))
    0.707107
    """

    def __init__(self, n_leaves: int, bins_obs: int, reference_bins, n_classes: int, momentum: float = 0.99,
                 device: str | torch.device = "cpu"):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.n_leaves = int(n_leaves)
        self.bins_obs = int(bins_obs)
        self.reference_bins = torch.as_tensor(list(reference_bins), dtype=torch.long, device=device)
        self.n_observables = len(self.reference_bins)
        self.n_classes = int(n_classes)
        self.momentum = float(momentum)
        shape = (self.n_observables, self.n_leaves, self.bins_obs)
        # float64: the running sums add thousands of batches of small numbers.
        self.sums = torch.zeros(shape + (self.n_classes,), dtype=torch.float64, device=device)
        self.counts = torch.zeros(shape, dtype=torch.float64, device=device)

    def __call__(self, probs: torch.Tensor, leaf: torch.Tensor, obs_bin: torch.Tensor, update: bool = True) -> torch.Tensor:
        """B for this batch (a scalar carrying the gradient of ``probs``); then fold the batch into the averages.

        ``probs`` (n, K) are softmax probabilities, ``leaf`` (n,) the intrinsic bin and
        ``obs_bin`` (n, n_observables) the observable bin of each object in its leaf.
        """
        n_obs, n_leaves, bins = self.n_observables, self.n_leaves, self.bins_obs
        probs = probs.to(torch.float64)
        # Flat cell index per (object, observable): ((j * n_leaves) + leaf) * bins + bin.
        j = torch.arange(n_obs, device=probs.device)[None, :]
        flat = ((j * n_leaves + leaf[:, None]) * bins + obs_bin).reshape(-1)
        expanded = probs[:, None, :].expand(-1, n_obs, -1).reshape(-1, self.n_classes)
        n_cells = n_obs * n_leaves * bins
        batch_sums = torch.zeros(n_cells, self.n_classes, dtype=torch.float64, device=probs.device)
        batch_sums = batch_sums.index_add(0, flat, expanded)
        batch_counts = torch.zeros(n_cells, dtype=torch.float64, device=probs.device)
        batch_counts = batch_counts.index_add(0, flat, torch.ones_like(flat, dtype=torch.float64))

        sums = self.momentum * self.sums.reshape(n_cells, -1) + batch_sums
        counts = self.momentum * self.counts.reshape(n_cells) + batch_counts
        seen = counts > 0
        means = torch.where(seen[:, None], sums / counts.clamp_min(1e-12)[:, None], torch.zeros_like(sums))
        means = means.reshape(n_obs, n_leaves, bins, self.n_classes)
        seen = seen.reshape(n_obs, n_leaves, bins)

        ref_index = self.reference_bins[:, None, None, None].expand(n_obs, n_leaves, 1, self.n_classes)
        ref = means.gather(2, ref_index).detach()
        ref_seen = seen.gather(2, self.reference_bins[:, None, None].expand(n_obs, n_leaves, 1))
        # A cell without objects yet, or whose reference has none, adds 0, as an empty leaf does in L.
        valid = (seen & ref_seen)[..., None]
        diff = torch.where(valid, means - ref, torch.zeros_like(means))
        total = (diff**2).sum() / bins / (n_obs * self.n_classes * n_leaves)
        # The small floor keeps the gradient of the square root finite when B reaches 0.
        penalty = torch.sqrt(total + 1e-12)

        if update:
            with torch.no_grad():
                self.sums.mul_(self.momentum).add_(batch_sums.detach().reshape(self.sums.shape))
                self.counts.mul_(self.momentum).add_(batch_counts.reshape(self.counts.shape))
        return penalty.to(torch.float32)
