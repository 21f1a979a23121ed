"""The differentiable labeling-bias term of de-biased training (torch).

It is the metric L of :mod:`relabel.bias.metric` in its soft form, on the network's
predicted probabilities: the mean probability of each class per cell
(observable, intrinsic bin, observable bin) is compared with the reference
(best-observed) bin of the same intrinsic bin and observable,

    B = sqrt( sum_{j, leaf, b, k} (f[j, leaf, b, k] - f[j, leaf, ref_j, k])^2 / bins_obs
              / (n_observables * K * n_leaves) ).

A batch holds one or two objects per cell, so batch means alone are far too
noisy to train on. With ``memory=True`` the term keeps the latest predicted
probabilities of every training object (a running average per cell over the
whole training set, each entry at most one epoch old), so B's *value* is the
soft L of the training set. Its *gradient* is that of the batch's own cell
means (straight through): each batch object moves its cell as if the batch
stood for the whole cell, a stochastic gradient of the training set's B.
The reference cells are detached: the best-observed objects stay anchored by
the labels, and the worse observed ones are pulled towards them, never the
other way round. With ``memory=False`` and one batch holding every object,
``B`` is exactly the soft L of :func:`relabel.bias.labeling_bias` on the same bins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


class BiasPenalty:
    """Soft L over the fixed cells of a training set; call it on each batch's probabilities.

    Parameters
    ----------
    leaf
        (N,) intrinsic bin of every training object.
    obs_bin
        (N, m) observable bin of every training object inside its leaf, one column per observable.
    n_leaves
        Number of intrinsic bins (2**depth of the k-d tree), empty ones included.
    bins_obs
        Number of observable bins inside each intrinsic bin.
    reference_bins
        For each observable, the index of its best-quality bin (0 when low values are
        best, ``bins_obs - 1`` when high values are).
    n_classes
        Number of classes K.
    memory
        Keep every object's latest probabilities (True), or use the batch alone (False).

    Examples
    --------
    >>> pen = BiasPenalty(torch.zeros(4, dtype=torch.long), torch.tensor([[0], [0], [1], [1]]), n_leaves=1,
    ...                   bins_obs=2, reference_bins=[1], n_classes=2, memory=False)
    >>> probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> round(float(pen(probs, torch.arange(4))), 6)  # sqrt((1 + 1) / 2 / (1 * 2 * 1))
    0.707107
    """

    def __init__(self, leaf: torch.Tensor, obs_bin: torch.Tensor, n_leaves: int, bins_obs: int, reference_bins,
                 n_classes: int, memory: bool = True, device: str | torch.device = "cpu"):
        leaf = torch.as_tensor(leaf, dtype=torch.long, device=device)
        obs_bin = torch.as_tensor(obs_bin, dtype=torch.long, device=device)
        if obs_bin.ndim == 1:
            obs_bin = obs_bin[:, None]
        self.n_leaves, self.bins_obs, self.n_classes = int(n_leaves), int(bins_obs), int(n_classes)
        self.reference_bins = torch.as_tensor(list(reference_bins), dtype=torch.long, device=device)
        self.n_observables = obs_bin.shape[1]
        if len(self.reference_bins) != self.n_observables:
            raise ValueError(f"{len(self.reference_bins)} reference bins for {self.n_observables} observables")
        j = torch.arange(self.n_observables, device=device)[None, :]
        # Flat cell of each (object, observable): (j * n_leaves + leaf) * bins_obs + bin.
        self.cells = (j * self.n_leaves + leaf[:, None]) * self.bins_obs + obs_bin
        self.n_cells = self.n_observables * self.n_leaves * self.bins_obs
        self.memory = bool(memory)
        if self.memory:
            n = len(leaf)
            # float64: the cell sums are updated incrementally over many thousands of steps.
            self.latest = torch.zeros(n, self.n_classes, dtype=torch.float64, device=device)
            self.seen = torch.zeros(n, dtype=torch.bool, device=device)
            self.sums = torch.zeros(self.n_cells, self.n_classes, dtype=torch.float64, device=device)
            self.counts = torch.zeros(self.n_cells, dtype=torch.float64, device=device)

    def __call__(self, probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """B after this batch (a scalar carrying the gradient of ``probs``); the memory takes the batch in.

        ``probs`` (n, K) are softmax probabilities of the training objects at positions
        ``index`` (n,) of the arrays the term was built with; each object once per batch.
        """
        probs = probs.to(torch.float64)
        index = torch.as_tensor(index, dtype=torch.long, device=probs.device)
        m, K = self.n_observables, self.n_classes
        flat = self.cells[index].reshape(-1)
        expanded = probs[:, None, :].expand(-1, m, -1).reshape(-1, K)
        batch_sums = torch.zeros(self.n_cells, K, dtype=torch.float64, device=probs.device).index_add(0, flat, expanded)
        batch_counts = torch.bincount(flat, minlength=self.n_cells).to(torch.float64)

        if self.memory:
            with torch.no_grad():
                old = self.seen[index]
                old_flat = self.cells[index[old]].reshape(-1)
                old_probs = self.latest[index[old]][:, None, :].expand(-1, m, -1).reshape(-1, K)
                sums = self.sums.index_add(0, old_flat, old_probs, alpha=-1.0) + batch_sums.detach()
                counts = self.counts - torch.bincount(old_flat, minlength=self.n_cells) + batch_counts
                self.sums, self.counts = sums, counts
                self.latest[index] = probs.detach()
                self.seen[index] = True
            running = sums / counts.clamp_min(1.0)[:, None]
            in_batch = (batch_counts > 0)[:, None]
            batch_means = batch_sums / batch_counts.clamp_min(1.0)[:, None]
            # Value of the whole training set's cell mean, gradient of the batch's.
            means = running + torch.where(in_batch, batch_means - batch_means.detach(), torch.zeros_like(running))
        else:
            counts = batch_counts
            means = batch_sums / counts.clamp_min(1.0)[:, None]

        shape = (m, self.n_leaves, self.bins_obs)
        means = means.reshape(*shape, K)
        seen = (counts > 0).reshape(shape)
        ref = means.gather(2, self.reference_bins[:, None, None, None].expand(m, self.n_leaves, 1, K)).detach()
        ref_seen = seen.gather(2, self.reference_bins[:, None, None].expand(m, self.n_leaves, 1))
        # A cell without objects yet, or whose reference has none, adds 0, as an empty leaf does in L.
        valid = (seen & ref_seen)[..., None]
        diff = torch.where(valid, means - ref, torch.zeros_like(means))
        total = (diff**2).sum() / self.bins_obs / (m * K * self.n_leaves)
        # The small floor keeps the gradient of the square root finite when B reaches 0.
        return torch.sqrt(total + 1e-12).to(torch.float32)


def penalty_cells(intrinsic, observables, best, log2_bins_int: int, bins_obs: int) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsic leaf (n,) and observable bin (n, m) of each object, exactly as L bins them.

    The leaves come from :func:`relabel.bias.bin_fractions` (the same k-d tree of
    median splits). Inside each leaf, each observable is stably sorted and cut at
    ``round(linspace(0, n_leaf, bins_obs + 1))``, as L does; the penalty needs the
    cell of every single object, which L only ever counts.

    Examples
    --------
    >>> leaf, obs_bin = penalty_cells(np.zeros(4), np.array([4.0, 3.0, 2.0, 1.0]), ["low"], 0, 2)
    >>> leaf.tolist(), obs_bin[:, 0].tolist()
    ([0, 0, 0, 0], [1, 1, 0, 0])
    """
    from relabel.bias.metric import bin_fractions

    observables = _columns(observables)
    n = len(observables)
    placeholder = np.zeros(n, dtype=np.intp)
    leaf = bin_fractions(intrinsic, observables, placeholder, 1, log2_bins_int, bins_obs, best).leaf.astype(np.int64)
    n_leaf = np.bincount(leaf, minlength=1 << log2_bins_int)
    start = np.cumsum(n_leaf) - n_leaf
    cuts = np.round(np.linspace(0, n_leaf, bins_obs + 1)).astype(np.int64)  # (B + 1, leaves)
    obs_bin = np.empty((n, observables.shape[1]), dtype=np.int64)
    for j, column in enumerate(observables.columns):
        order = np.argsort(observables[column].to_numpy(), kind="stable")
        rows = order[np.argsort(leaf[order], kind="stable")]
        rank = np.arange(n) - start[leaf[rows]]
        obs_bin[rows, j] = (rank[None, :] >= cuts[1:bins_obs, leaf[rows]]).sum(axis=0)
    return leaf, obs_bin


def _columns(values) -> pd.DataFrame:
    if isinstance(values, pd.DataFrame):
        return values.reset_index(drop=True)
    values = np.asarray(values)
    return pd.DataFrame(values if values.ndim == 2 else values[:, None])
