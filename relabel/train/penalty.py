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
    reference
        Optional fixed class shares (m, n_leaves, K) that the reference cells stand for
        (NaN where unknown), e.g. :func:`label_reference`: the other bins are pulled
        towards these instead of towards the model's own, moving, reference means,
        and the reference cells themselves are held to them (they differ from
        them only as far as the model departs from its best-observed labels).

    Examples
    --------
    >>> pen = BiasPenalty(torch.zeros(4, dtype=torch.long), torch.tensor([[0], [0], [1], [1]]), n_leaves=1,
    ...                   bins_obs=2, reference_bins=[1], n_classes=2, memory=False)
    >>> probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> round(float(pen(probs, torch.arange(4))), 6)  # sqrt((1 + 1) / 2 / (1 * 2 * 1))
    0.707107
    """

    def __init__(self, leaf: torch.Tensor, obs_bin: torch.Tensor, n_leaves: int, bins_obs: int, reference_bins,
                 n_classes: int, memory: bool = True, device: str | torch.device = "cpu",
                 reference: torch.Tensor | np.ndarray | None = None):
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
        # A fixed target (m, n_leaves, 1, K) for the reference cells instead of the model's own means; NaN = none.
        self.reference = None if reference is None else torch.as_tensor(
            reference, dtype=torch.float64, device=device).reshape(self.n_observables, self.n_leaves, 1, self.n_classes)
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
        if self.reference is not None:
            ref = torch.nan_to_num(self.reference)
            ref_seen = ~torch.isnan(self.reference[..., 0])
        # A cell without objects yet, or whose reference has none, adds 0, as an empty leaf does in L.
        valid = (seen & ref_seen)[..., None]
        diff = torch.where(valid, means - ref, torch.zeros_like(means))
        total = (diff**2).sum() / self.bins_obs / (m * K * self.n_leaves)
        # The small floor keeps the gradient of the square root finite when B reaches 0.
        return torch.sqrt(total + 1e-12).to(torch.float32)


def penalty_cells(intrinsic, observables, best, log2_bins_int: int, bins_obs: int) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsic leaf (n,) and observable bin (n, m) of each object: L's own cells.

    A thin name for :func:`relabel.bias.metric.object_cells`, which bins with the
    metric's code, so the penalty and L cannot drift apart.

    Parameters
    ----------
    intrinsic : array-like, shape (n,) or (n, d)
        Intrinsic properties (e.g. absolute magnitude, size in kpc, colour).
    observables : array-like, shape (n,) or (n, m)
        Observing conditions (e.g. PSF FWHM in arcsec, resolution).
    best : list of {"low", "high"}
        The best-observed end of each observable.
    log2_bins_int : int
        Depth of the intrinsic k-d tree.
    bins_obs : int
        Equal-count bins per observable within each leaf.

    Returns
    -------
    leaf : numpy.ndarray of int, shape (n,)
    obs_bin : numpy.ndarray of int, shape (n, m)
        0 holds the lowest values (:func:`relabel.bias.metric.reference_bin` gives the best-observed one).

    Examples
    --------
    >>> leaf, obs_bin = penalty_cells(np.zeros(4), np.array([4.0, 3.0, 2.0, 1.0]), ["low"], 0, 2)
    >>> leaf.tolist(), obs_bin[:, 0].tolist()
    ([0, 0, 0, 0], [1, 1, 0, 0])
    """
    from relabel.bias.metric import object_cells

    return object_cells(_columns(intrinsic), _columns(observables), best, log2_bins_int, bins_obs)


def _columns(values) -> pd.DataFrame:
    if isinstance(values, pd.DataFrame):
        return values.reset_index(drop=True)
    values = np.asarray(values)
    return pd.DataFrame(values if values.ndim == 2 else values[:, None])


def label_reference(cells_leaf: np.ndarray, obs_bin: np.ndarray, codes: np.ndarray, n_leaves: int,
                    reference_bins, n_classes: int) -> np.ndarray:
    """Class shares of the confident labels in each reference cell: (m, n_leaves, K), NaN where it has none.

    The target of the penalty. Why the labels and not the model's own predictions
    in the reference cell: the network is shared, so every push on the worse bins
    also moves its reference predictions, and the detached reference becomes a
    moving target that the penalty chases (the class balance swung from 0.80 to
    0.37 spiral and back within four epochs at lambda 10, 3,000-galaxy survey).
    In the best-observed bin the labels are the trustworthy ones, and a constant
    target closes that loop.

    Parameters
    ----------
    cells_leaf : numpy.ndarray of int, shape (N,)
        Intrinsic leaf of each training object (:func:`penalty_cells`).
    obs_bin : numpy.ndarray of int, shape (N, m)
        Observable bin of each object.
    codes : numpy.ndarray of int, shape (N,)
        Class code, negative for objects without a confident label (ignored).
    n_leaves, n_classes : int
    reference_bins : sequence of int, length m
        The best-observed bin of each observable.

    Examples
    --------
    >>> label_reference(np.zeros(4, int), np.array([[0], [0], [1], [1]]), np.array([0, 1, 1, -1]), 1, [1], 2)
    array([[[0., 1.]]])
    """
    obs_bin = obs_bin.reshape(len(cells_leaf), -1)
    m = obs_bin.shape[1]
    counts = np.zeros((m, n_leaves, n_classes))
    has = codes >= 0
    for j, ref in enumerate(reference_bins):
        in_ref = has & (obs_bin[:, j] == ref)
        np.add.at(counts[j], (cells_leaf[in_ref], codes[in_ref]), 1.0)
    total = counts.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.maximum(total, 1), np.nan)


def penalty_loss(bias_value: torch.Tensor, scale: float) -> torch.Tensor:
    """The loss term of de-biased training: ``B**2 / scale``, B the soft L of :class:`BiasPenalty`.

    Why not B itself: the square root's gradient has the same size whatever B is,
    so at a large lambda the penalty pushes the worse-observed bins at full force
    until they overshoot the reference, then at full force back (a bang-bang loop,
    made worse by the memory's half-epoch lag): the validation class balance
    swung 0.67 -> 0.41 -> 0.43 -> 0.70 -> 0.48 over five epochs at lambda 10 on a
    3,000-galaxy simulated survey. The square's gradient shrinks in proportion to
    the remaining bias (a restoring force), so the run comes to rest.

    ``scale`` is B when lambda starts to rise (the warm-up model's soft L, a plain
    number): at that point the term equals ``B`` and its gradient is twice the
    old one, so a given lambda starts as strong as before and then eases off.

    Parameters
    ----------
    bias_value : torch.Tensor
        Scalar B carrying the gradient.
    scale : float
        Positive normaliser (B at the end of the warm-up).

    Examples
    --------
    >>> round(float(penalty_loss(torch.tensor(0.2), 0.2)), 6), round(float(penalty_loss(torch.tensor(0.1), 0.2)), 6)
    (0.2, 0.05)
    """
    return bias_value**2 / max(float(scale), 1e-6)
