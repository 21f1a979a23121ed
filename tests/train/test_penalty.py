"""The penalty's cells are the metric's cells; its label-anchored reference; its squared loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from relabel.bias.metric import BiasError, bin_fractions, object_cells
from relabel.train.penalty import BiasPenalty, label_reference, penalty_cells, penalty_loss


def _table(n, seed, ties):
    rng = np.random.default_rng(seed)
    intrinsic = pd.DataFrame({"M": rng.normal(size=n).astype(np.float32), "R": rng.integers(0, 4, n).astype(float)})
    z = rng.integers(0, 6, n).astype(np.float64) if ties else rng.uniform(size=n)
    observables = pd.DataFrame({"RES": rng.uniform(size=n).astype(np.float32), "Z": z})
    return intrinsic, observables, rng.integers(0, 3, n)


@pytest.mark.parametrize("n, seed, ties, depth, bins", [(600, 0, False, 3, 4), (997, 1, True, 2, 5),
                                                        (333, 2, True, 4, 3), (50, 3, False, 0, 7)])
def test_metric_and_penalty_give_the_same_cells(n, seed, ties, depth, bins):
    intrinsic, observables, labels = _table(n, seed, ties)
    best = ["high", "low"]
    leaf, obs_bin = penalty_cells(intrinsic, observables, best, depth, bins)
    bf = bin_fractions(intrinsic, observables, labels, 3, depth, bins, best)
    assert np.array_equal(leaf, bf.leaf)
    counts = np.zeros_like(bf.counts)
    for j in range(2):
        np.add.at(counts[j], (leaf, obs_bin[:, j], labels), 1)
    # Every object in the cell L counts it in, class by class (ties in Z included).
    assert np.array_equal(counts, bf.counts)
    assert np.array_equal(object_cells(intrinsic, observables, best, depth, bins)[1], obs_bin)


def test_object_cells_refuses_what_L_refuses():
    intrinsic, observables, _ = _table(40, 0, False)
    observables.loc[3, "RES"] = np.nan
    with pytest.raises(BiasError, match="RES"):
        object_cells(intrinsic, observables, ["high", "low"], 1, 2)


def test_label_reference_is_the_share_of_confident_labels_in_the_best_bin():
    leaf = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    obs_bin = np.array([[0, 1], [1, 0], [1, 0], [1, 1], [0, 0], [1, 1], [1, 1], [0, 0]])
    codes = np.array([0, 1, 0, -1, 1, 1, 0, -1])
    ref = label_reference(leaf, obs_bin, codes, 2, [1, 0], 2)
    # Observable 0, best bin 1: leaf 0 holds codes 1, 0 (the unlabelled one ignored); leaf 1 holds 1, 0.
    assert ref[0].tolist() == [[0.5, 0.5], [0.5, 0.5]]
    # Observable 1, best bin 0: leaf 0 holds codes 1, 0; leaf 1 holds code 1 and an unlabelled one.
    assert ref[1].tolist() == [[0.5, 0.5], [0.0, 1.0]]
    # A reference cell without confident labels is unknown (NaN) and adds nothing to B.
    assert np.isnan(label_reference(leaf, obs_bin, np.full(8, -1), 2, [1, 0], 2)).all()


def test_a_label_reference_pulls_the_worse_bin_towards_the_labels_not_the_model():
    leaf = torch.zeros(4, dtype=torch.long)
    obs_bin = torch.tensor([[0], [0], [1], [1]])
    target = np.array([[[0.3, 0.7]]])  # labels in the best bin (1): 70 % class 1
    pen = BiasPenalty(leaf, obs_bin, 1, 2, [1], 2, memory=False, reference=target)
    logits = torch.zeros(4, 2, requires_grad=True)  # the model says 50/50 everywhere
    value = pen(torch.softmax(logits, dim=1), torch.arange(4))
    # Both bins differ from the labels' shares by 0.2 per class: sqrt(2 * (0.2^2 + 0.2^2) / 2 / (1 * 2 * 1)).
    assert float(value.detach()) == pytest.approx(0.2, rel=1e-5)
    value.backward()
    # Descending raises class 1 in the worse bin, and in the best bin too (held to its labels).
    assert (logits.grad[:, 1] < 0).all() and (logits.grad[:, 0] > 0).all()
    # Without a target, the same model has no bias at all (every bin alike): the model's own reference.
    assert float(BiasPenalty(leaf, obs_bin, 1, 2, [1], 2, memory=False)(torch.full((4, 2), 0.5),
                                                                         torch.arange(4))) < 1e-5


def test_penalty_loss_eases_off_as_the_bias_falls():
    b = torch.tensor([0.2, 0.1, 0.02], requires_grad=True)
    loss = penalty_loss(b, 0.2)
    loss.sum().backward()
    assert loss.tolist() == pytest.approx([0.2, 0.05, 0.002])
    # The gradient shrinks in proportion to B (the square root's had the same size whatever B).
    assert b.grad.tolist() == pytest.approx([2.0, 1.0, 0.2])
