"""The labeling-bias metric L against a plain implementation of docs/bias.md's definition, and its errors."""

from __future__ import annotations

import json
import math
import textwrap

import fitsio
import numpy as np
import pandas as pd
import pytest

from relabel.bias import BiasError, BiasResult, bias_with_errors, bin_fractions, fraction_curves, labeling_bias
from relabel.bias.table import bias_of_table, format_result
from relabel.errors import CatalogError, ConfigError, RelabelError


# --- the reference: docs/bias.md's text, loop by loop ------------------------------------------


def reference_leaves(intrinsic: list[np.ndarray], depth: int) -> list[list[int]]:
    """Objects of each leaf, in input order: ``depth`` levels of median splits."""
    n = len(intrinsic[0])
    nodes = [list(range(n))]
    for t in range(depth):
        x = intrinsic[t % len(intrinsic)]
        children = []
        for members in nodes:
            if not members:
                children += [[], []]
                continue
            median = np.median(x[members])  # numpy's: mean of the two middle values when even
            children.append([i for i in members if not x[i] >= median])
            children.append([i for i in members if x[i] >= median])  # >= median goes right
        nodes = children  # child 2p + bit: first split is the most significant bit
    return nodes


def reference_fractions(members, o, labels, n_classes, n_bins):
    """f[b][k] of one leaf for one observable: stable sort, cuts at round-half-even(i n / B)."""
    ordered = sorted(members, key=lambda i: o[i])  # Python's sort is stable: ties keep input order
    n = len(ordered)
    if n < n_bins:
        raise BiasError(f"leaf with {n} objects < {n_bins}")
    cuts = [int(c) for c in np.round(np.linspace(0, n, n_bins + 1))]
    fractions = []
    for b in range(n_bins):
        in_bin = ordered[cuts[b]:cuts[b + 1]]
        if labels.ndim == 2:  # soft: mean probability
            fractions.append([sum(labels[i, k] for i in in_bin) / len(in_bin) for k in range(n_classes)])
        else:
            fractions.append([sum(1 for i in in_bin if labels[i] == k) / len(in_bin) for k in range(n_classes)])
    return fractions


def reference_L(intrinsic, observables, labels, n_classes, depth, n_bins, best):
    total = 0.0
    leaves = reference_leaves(intrinsic, depth)
    for j, o in enumerate(observables):
        ref = 0 if best[j] == "low" else n_bins - 1
        for members in leaves:
            if not members:
                continue  # empty leaf: sigma^2 = 0, still counted in the denominator
            f = reference_fractions(members, o, labels, n_classes, n_bins)
            for k in range(n_classes):
                total += sum((f[b][k] - f[ref][k]) ** 2 for b in range(n_bins)) / n_bins
    return math.sqrt(total / (len(observables) * n_classes * 2**depth))


# --- tables ---------------------------------------------------------------------------------


def random_table(rng, n, d, m, n_classes, kind, soft=False):
    if kind == "ties_int":
        intrinsic = [rng.integers(0, 6, n) for _ in range(d)]
        observables = [rng.integers(0, 4, n) for _ in range(m)]
    elif kind == "ties_float":
        intrinsic = [rng.integers(0, 5, n).astype(np.float64) for _ in range(d)]
        observables = [np.round(rng.normal(size=n), 1) for _ in range(m)]
    elif kind == "float32":
        intrinsic = [rng.normal(size=n).astype(np.float32) for _ in range(d)]
        observables = [rng.uniform(size=n).astype(np.float32) for _ in range(m)]
    else:
        intrinsic = [rng.normal(size=n) for _ in range(d)]
        observables = [rng.normal(size=n) for _ in range(m)]
    # Labels that depend on the first observable, so L is not just noise.
    shift = (observables[0] > np.median(observables[0])).astype(float)
    if soft:
        logits = rng.normal(size=(n, n_classes)) + np.outer(shift, np.arange(n_classes))
        labels = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    else:
        labels = (rng.integers(0, n_classes, n) + shift.astype(int) * rng.integers(0, 2, n)) % n_classes
    return intrinsic, observables, labels


CASES = [
    # kind, n, d, m, K, depth, B, best, soft
    ("normal", 300, 2, 1, 2, 3, 4, ["low"], False),
    ("normal", 257, 3, 2, 3, 4, 3, ["high", "low"], False),
    ("ties_int", 600, 2, 2, 2, 3, 4, ["low", "high"], False),
    ("ties_int", 400, 1, 3, 3, 2, 5, ["high", "high", "low"], False),
    ("ties_float", 500, 2, 2, 2, 3, 6, ["high", "low"], False),
    ("float32", 333, 3, 2, 2, 5, 3, ["low", "high"], False),
    ("float32", 200, 2, 1, 3, 0, 7, ["high"], False),
    ("normal", 301, 2, 2, 3, 3, 4, ["low", "high"], True),
    ("float32", 250, 1, 2, 2, 2, 5, ["high", "low"], True),
]


@pytest.mark.parametrize("kind,n,d,m,K,depth,B,best,soft", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_reference_on_random_tables(kind, n, d, m, K, depth, B, best, soft, seed):
    rng = np.random.default_rng(seed)
    intrinsic, observables, labels = random_table(rng, n, d, m, K, kind, soft)
    try:
        expected = reference_L(intrinsic, observables, labels, K, depth, B, best)
    except BiasError:
        with pytest.raises(BiasError, match="fewer than"):
            labeling_bias(intrinsic, observables, labels, K, depth, B, best)
        return
    got = labeling_bias(intrinsic, observables, labels, None if soft else K, depth, B, best)
    assert got == pytest.approx(expected, abs=1e-12, rel=0)
    assert expected > 0.01  # the labels depend on the observable: a real, non-trivial number


def test_inputs_as_2d_array_dataframe_or_columns_agree():
    rng = np.random.default_rng(3)
    intrinsic, observables, labels = random_table(rng, 400, 2, 2, 2, "normal")
    best = ["low", "high"]
    as_columns = labeling_bias(intrinsic, observables, labels, 2, 3, 4, best)
    as_array = labeling_bias(np.column_stack(intrinsic), np.column_stack(observables), labels, 2, 3, 4, best)
    frame = pd.DataFrame({"M": intrinsic[0], "R": intrinsic[1]})
    as_frame = labeling_bias(frame, pd.DataFrame({"Z": observables[0], "RES": observables[1]}), labels, 2, 3, 4, best)
    assert as_columns == as_array == as_frame


def test_hand_computed_value():
    # Intrinsic s splits at its median 4.5: leaf 0 = objects 0-3, leaf 1 = objects 4-7.
    # B = 3 bins of a 4-object leaf: cuts round([0, 1.33, 2.67, 4]) = [0, 1, 3, 4], sizes 1, 2, 1.
    # best = high: the reference is the last bin.
    # leaf 0, sorted by o: objects 0, 2, 3, 1 with labels 0, 0, 1, 1 -> bins [0] [0, 1] [1]
    #   class 1 shares 0, 0.5, 1 vs ref 1: (1 + 0.25 + 0) / 3 = 1.25/3; class 0 the same: 1.25/3
    # leaf 1, sorted by o: objects 4, 5, 7, 6 with labels 0, 1, 1, 1 -> bins [0] [1, 1] [1]
    #   class 1 shares 0, 1, 1 vs ref 1: 1/3; class 0 the same: 1/3
    # sum = 2.5/3 + 2/3 = 1.5; L = sqrt(1.5 / (m=1 * K=2 * 2^l=2)) = sqrt(0.375)
    s = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=float)
    o = np.array([0.1, 0.4, 0.2, 0.3, 0.5, 0.6, 0.8, 0.7])
    y = np.array([0, 1, 0, 1, 0, 1, 1, 1])
    assert labeling_bias(s, o, y, 2, 1, 3, ["high"]) == pytest.approx(math.sqrt(0.375), abs=1e-15)
    assert reference_L([s], [o], y, 2, 1, 3, ["high"]) == pytest.approx(math.sqrt(0.375), abs=1e-15)


def test_absent_class_and_empty_leaf_count_in_the_denominator():
    s = np.array([1.0, 2.0, 3.0, 4.0])
    o = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([0, 0, 1, 1])
    base = labeling_bias(s, o, y, 2, 0, 2, "low")  # sqrt(1/2): see the doctest
    # A third, absent class: same sum, denominator K = 3.
    assert labeling_bias(s, o, y, 3, 0, 2, "low") == pytest.approx(base * math.sqrt(2 / 3), abs=1e-15)
    # Constant s: every object is >= the median, so each split sends all right; 2 of 4 leaves... no,
    # 3 of 4 leaves are empty after two levels, and they still count: L / sqrt(4).
    constant = np.zeros(4)
    assert labeling_bias(constant, o, y, 2, 2, 2, "low") == pytest.approx(base / 2, abs=1e-15)


def test_ties_go_right():
    # Median of [1, 1, 2, 2, 2, 3] is 2: the objects equal to it go right.
    s = np.array([1, 2, 1, 2, 3, 2])
    leaf = bin_fractions(s, np.arange(6.0), np.zeros(6, int), 1, 1, 2, "low").leaf
    assert leaf.tolist() == [0, 1, 0, 1, 1, 1]


def test_first_split_is_the_most_significant_bit():
    first = np.array([1, 2, 3, 4, 5, 6, 7, 8.0])
    second = np.array([8, 7, 6, 5, 4, 3, 2, 1.0])
    leaf = bin_fractions([first, second], np.arange(8.0), np.zeros(8, int), 1, 2, 2, "low").leaf
    # first split on `first` at 4.5 (bit 1 = high), then on `second` at 6.5 (left node) and 2.5 (right node)
    assert leaf.tolist() == [1, 1, 0, 0, 3, 3, 2, 2]


def test_float32_median_is_numpys_float32_mean():
    a = np.float32(1.0)
    b = np.nextafter(a, np.float32(2.0))
    s = np.array([a, a, b, b], dtype=np.float32)
    # In float32 (a + b) / 2 rounds to a, so every object is >= the median; float64 would split 2 | 2.
    assert np.median(s) == a
    leaf = bin_fractions(s, np.arange(4.0), np.zeros(4, int), 1, 1, 2, "low").leaf
    assert leaf.tolist() == [1, 1, 1, 1]
    assert bin_fractions(s.astype(np.float64), np.arange(4.0), np.zeros(4, int), 1, 1, 2, "low").leaf.tolist() \
        == [0, 0, 1, 1]


def test_observable_ties_keep_input_order():
    # One leaf, B = 2, all observable values equal: the bins are the first and second half in input order.
    y = np.array([1, 1, 0, 0])
    bf = bin_fractions(np.zeros(4), np.ones(4), y, 2, 0, 2, "low")
    assert bf.fractions[0, 0].tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_cuts_round_half_to_even():
    # n = 6, B = 4: linspace 0, 1.5, 3, 4.5, 6 -> round-half-even 0, 2, 3, 4, 6: bin sizes 2, 1, 1, 2.
    bf = bin_fractions(np.zeros(6), np.arange(6.0), np.zeros(6, int), 1, 0, 4, "low")
    assert bf.n_bin[0, 0].tolist() == [2, 1, 1, 2]


# --- resamples ------------------------------------------------------------------------------


def test_a_resample_equals_the_reference_on_the_repeated_rows():
    """A repetition's multiplicities mean: these rows, repeated, in ascending input order."""
    from relabel.bias.metric import _Table, _bin_fractions  # the resample path has no public door of its own

    rng = np.random.default_rng(5)
    for kind, soft in (("ties_int", False), ("float32", False), ("normal", True)):
        intrinsic, observables, labels = random_table(rng, 300, 2, 2, 3, kind, soft)
        weights = np.bincount(rng.integers(0, 300, 300), minlength=300)
        weights[rng.choice(300, 60, replace=False)] = 0  # a subsample, too
        rows = np.repeat(np.arange(300), weights)
        best = ["high", "low"]
        expected = reference_L([x[rows] for x in intrinsic], [o[rows] for o in observables], labels[rows], 3, 3, 4, best)
        got = _bin_fractions(_Table(intrinsic, observables, labels, 3, best), 3, 4, weights).L
        assert got == pytest.approx(expected, abs=1e-12, rel=0)


def test_bias_with_errors_without_repetitions_is_the_plain_value():
    rng = np.random.default_rng(2)
    intrinsic, observables, labels = random_table(rng, 400, 2, 2, 2, "normal")
    result = bias_with_errors(intrinsic, observables, labels, 2, 2, 5, ["low", "high"], n_boot=0, n_null=0)
    assert result.L == pytest.approx(reference_L(intrinsic, observables, labels, 2, 2, 5, ["low", "high"]), abs=1e-12)
    assert result.L_std is None and result.null_L is None and result.excess is None


def test_repetitions_are_seeded_and_do_not_depend_on_threads(monkeypatch):
    import relabel.bias.metric as metric

    monkeypatch.setattr(metric, "THREADS_MIN_OBJECTS", 0)  # threads even on this small table
    rng = np.random.default_rng(4)
    intrinsic, observables, labels = random_table(rng, 2000, 2, 2, 2, "float32")
    args = (intrinsic, observables, labels, 2, 3, 4, ["low", "high"])
    one = bias_with_errors(*args, n_boot=6, n_null=3, seed=7, workers=1)
    two = bias_with_errors(*args, n_boot=6, n_null=3, seed=7, workers=2)
    other = bias_with_errors(*args, n_boot=6, n_null=3, seed=8, workers=1)
    assert one.to_dict() == two.to_dict()
    assert one.L != other.L
    assert one.L_std > 0 and one.null_L_std > 0
    assert one.excess == pytest.approx(one.L - one.null_L)


def test_subsample_size_and_too_few_objects():
    rng = np.random.default_rng(6)
    intrinsic, observables, labels = random_table(rng, 1000, 2, 1, 2, "normal")
    result = bias_with_errors(intrinsic, observables, labels, 2, 2, 4, "low", n_boot=3, n_per_bin=50, n_null=2)
    assert result.n_sample == 50 * 4 * 4 and result.n_objects == 1000
    with pytest.raises(BiasError) as err:
        bias_with_errors(intrinsic, observables, labels, 2, 2, 4, "low", n_boot=3, n_per_bin=70, n_null=0)
    message = str(err.value)
    assert "needs 1120 objects" in message and "only 1000" in message


def _dependent_table(rng, n, strength):
    """Spiral share falls with worse resolution by `strength` at fixed intrinsic properties."""
    mag = rng.normal(size=n)
    size = rng.normal(size=n)
    resolution = rng.uniform(size=n)
    p_spiral = np.clip(0.4 + 0.1 * mag + strength * (resolution - 0.5), 0, 1)
    labels = (rng.uniform(size=n) < p_spiral).astype(int)
    return [mag, size], [resolution], labels


def test_null_matches_l_without_dependence_and_excess_grows_with_it():
    rng = np.random.default_rng(11)
    excess = []
    for strength in (0.0, 0.15, 0.3, 0.6):
        intrinsic, observables, labels = _dependent_table(rng, 16000, strength)
        r = bias_with_errors(intrinsic, observables, labels, 2, 3, 5, ["high"], n_boot=8, n_null=8, seed=1)
        excess.append(r.excess)
        if strength == 0.0:
            # Only noise: L and its null agree within their spreads.
            assert abs(r.excess) < 3 * math.hypot(r.L_std, r.null_L_std)
        else:
            assert r.excess > 5 * math.hypot(r.L_std, r.null_L_std)
    assert excess == sorted(excess)
    assert excess[-1] > 4 * excess[1] > 0


def test_monte_carlo_target_adds_repetitions_until_the_excess_is_that_precise():
    rng = np.random.default_rng(12)
    intrinsic, observables, labels = _dependent_table(rng, 3000, 0.2)
    args = (intrinsic, observables, labels, 2, 3, 5, ["high"])
    fixed = bias_with_errors(*args, n_boot=20, n_null=10, seed=3)
    spread = [fixed.L_std, fixed.null_L_std]
    # 20 + 10 repetitions leave a Monte-Carlo error several times the target
    assert fixed.mc_error == pytest.approx(math.sqrt(sum(
        (s * math.sqrt(r / (r - 1))) ** 2 / r for s, r in zip(spread, (20, 10)))))
    assert fixed.mc_error > 0.002
    aimed = bias_with_errors(*args, n_boot=20, n_null=10, seed=3, mc_error=0.001)
    assert aimed.n_boot > 20 and aimed.n_null > 10
    assert aimed.mc_error < 0.0012  # the target, up to the first round's estimate of the spreads
    # Neyman allocation: the counts follow the spreads of the two terms
    assert aimed.n_boot / aimed.n_null == pytest.approx(spread[0] / spread[1], rel=0.5)
    # repetition r keeps its seed: the same as asking for the final counts at once
    same = bias_with_errors(*args, n_boot=aimed.n_boot, n_null=aimed.n_null, seed=3)
    assert (aimed.L, aimed.null_L, aimed.L_std) == (same.L, same.null_L, same.L_std)
    # and other seeds agree within the stated error (before: a few times the target apart)
    other = bias_with_errors(*args, n_boot=20, n_null=10, seed=4, mc_error=0.001)
    assert abs(other.excess - aimed.excess) < 4 * math.hypot(aimed.mc_error, other.mc_error)


def test_monte_carlo_target_respects_the_cap_and_the_asked_counts():
    rng = np.random.default_rng(13)
    intrinsic, observables, labels = _dependent_table(rng, 1500, 0.2)
    args = (intrinsic, observables, labels, 2, 3, 5, ["high"])
    capped = bias_with_errors(*args, n_boot=20, n_null=10, mc_error=1e-5, max_repetitions=80)
    assert 70 <= capped.n_boot + capped.n_null <= 80 and capped.n_boot >= 20 and capped.n_null >= 10
    assert capped.mc_error > 1e-5  # the cap won: the error says so
    loose = bias_with_errors(*args, n_boot=20, n_null=10, mc_error=1.0)
    assert (loose.n_boot, loose.n_null) == (20, 10)
    off = bias_with_errors(*args, n_boot=20, n_null=10, mc_error=0)
    assert (off.n_boot, off.n_null, off.mc_error) == (20, 10, loose.mc_error)
    # L exact (n_boot = 0): only the null has a Monte-Carlo error, and only it grows
    exact = bias_with_errors(*args, n_boot=0, n_null=5, mc_error=0.001)
    assert exact.n_boot == 0 and exact.n_null > 5 and exact.L_std is None
    assert exact.mc_error == pytest.approx(np.std([0.0]) + exact.null_L_std * math.sqrt(
        1 / (exact.n_null - 1)), rel=1e-9)
    for bad in (-0.1, "0.1", True):
        with pytest.raises(BiasError, match="mc_error"):
            bias_with_errors(*args, n_boot=2, n_null=2, mc_error=bad)
    with pytest.raises(BiasError, match="max_repetitions"):
        bias_with_errors(*args, n_boot=2, n_null=2, mc_error=0.01, max_repetitions=0)


def test_an_added_repetition_with_a_leaf_too_small_is_dropped_and_counted():
    # Repeated values (a catalog's rounded magnitudes) make ties at the medians, and now and
    # then a resample's leaf holds fewer objects than bins: about 1 repetition in 250 here.
    rng = np.random.default_rng(2)
    intrinsic = [np.round(rng.normal(size=240) * 20), np.round(rng.normal(size=240) * 20)]
    args = (intrinsic, [rng.uniform(size=240)], (rng.uniform(size=240) < 0.5).astype(int), 2, 4, 5, ["high"])
    aimed = bias_with_errors(*args, n_boot=20, n_null=10, mc_error=0.0005)
    assert aimed.dropped_repetitions > 0
    assert aimed.n_boot + aimed.n_null + aimed.dropped_repetitions <= 2000
    assert f"{aimed.dropped_repetitions} added repetitions dropped: a leaf with fewer objects than bins" in \
        format_result(aimed)
    # asked for, the same repetitions are an error naming the one that failed
    with pytest.raises(BiasError, match="repetition [0-9]+: intrinsic leaf"):
        bias_with_errors(*args, n_boot=aimed.n_boot + aimed.dropped_repetitions, n_null=aimed.n_null + 10)


def test_null_keeps_the_intrinsic_leaves():
    # Labels fixed by the intrinsic leaf alone: any shuffle that stayed inside leaves finds L = 0 exactly.
    rng = np.random.default_rng(8)
    s = rng.normal(size=800)
    o = rng.normal(size=800)
    labels = (s > np.median(s)).astype(int)
    r = bias_with_errors(s, o, labels, 2, 2, 4, "low", n_boot=0, n_null=4)
    assert r.L == 0 and r.null_L == 0


# --- errors ---------------------------------------------------------------------------------


def test_small_leaf_is_an_error_naming_leaf_and_counts():
    s = np.arange(10.0)
    with pytest.raises(BiasError) as err:
        labeling_bias(s, s, np.zeros(10, int), 1, 1, 6, "low")
    message = str(err.value)
    assert "intrinsic leaf 0 has 5 object(s), fewer than the 6 observable bins" in message


def test_small_leaf_in_a_repetition_says_which_repetition():
    s = np.arange(40.0)
    with pytest.raises(BiasError, match=r"bootstrap repetition \d+: intrinsic leaf \d+ has"):
        bias_with_errors(s, s, np.zeros(40, int), 1, 3, 5, "low", n_boot=20, n_null=0, seed=0)


def test_nan_in_a_used_column_names_it_and_counts():
    frame = pd.DataFrame({"ABS_MAG": [1.0, np.nan, 2.0, np.nan], "R50": [1.0, 2, 3, 4]})
    with pytest.raises(BiasError, match=r"intrinsic column ABS_MAG has 2 NaN and 0 infinite value\(s\) of 4"):
        labeling_bias(frame, pd.DataFrame({"Z": [0.1, 0.2, 0.3, 0.4]}), np.zeros(4, int), 1, 0, 2, "low")
    with pytest.raises(BiasError, match="observable column Z has 1 NaN"):
        labeling_bias(frame.fillna(0), pd.DataFrame({"Z": [0.1, np.nan, 0.3, 0.4]}), np.zeros(4, int), 1, 0, 2, "low")
    with pytest.raises(BiasError, match="1 NaN"):
        labeling_bias(np.zeros(4), np.arange(4.0), np.array([[1, 0], [np.nan, 1], [0, 1], [1, 0]]), 2, 0, 2, "low")


def test_bad_codes_best_and_bins_are_errors():
    s = np.arange(8.0)
    with pytest.raises(BiasError, match=r"2 code\(s\) outside 0..1"):
        labeling_bias(s, s, np.array([0, 1, -1, 2, 0, 1, 0, 1]), 2, 0, 2, "low")
    with pytest.raises(BiasError, match="best must be 'low' or 'high'"):
        labeling_bias(s, [s, s], np.zeros(8, int), 1, 0, 2, ["low"])
    with pytest.raises(BiasError, match="bins_obs must be an integer >= 2"):
        labeling_bias(s, s, np.zeros(8, int), 1, 0, 1, "low")
    assert issubclass(BiasError, RelabelError) and issubclass(BiasError, ValueError)


# --- fraction curves ------------------------------------------------------------------------


def test_fraction_curves_hold_the_cells_of_l():
    rng = np.random.default_rng(9)
    intrinsic, observables, labels = random_table(rng, 300, 2, 2, 3, "ties_float")
    frame_int = pd.DataFrame({"M": intrinsic[0], "R": intrinsic[1]})
    frame_obs = pd.DataFrame({"RES": observables[0], "Z": observables[1]})
    curves = fraction_curves(frame_int, frame_obs, labels, 3, 2, 4, ["high", "low"], classes=["e", "s", "u"])
    assert len(curves) == 4 * 2 * 4 * 3  # leaves x observables x bins x classes (no leaf is empty here)
    leaves = reference_leaves(intrinsic, 2)
    for (leaf, name), group in curves.groupby(["leaf", "observable"]):
        j = ["RES", "Z"].index(name)
        members = leaves[leaf]
        expected = reference_fractions(members, observables[j], labels, 3, 4)
        got = group.pivot(index="bin", columns="class", values="fraction")[["e", "s", "u"]].to_numpy()
        np.testing.assert_allclose(got, expected, atol=1e-15)
        ordered = sorted(members, key=lambda i: observables[j][i])
        cuts = [int(c) for c in np.round(np.linspace(0, len(ordered), 5))]
        firsts = group.drop_duplicates("bin")
        for b, row in zip(range(4), firsts.itertuples()):
            in_bin = observables[j][ordered[cuts[b]:cuts[b + 1]]]
            assert (row.n, row.obs_low, row.obs_high, row.obs_centre) == (len(in_bin), in_bin.min(), in_bin.max(),
                                                                         np.median(in_bin))
            assert row.reference == (b == (3 if name == "RES" else 0))
        assert group["M_min"].iloc[0] == intrinsic[0][members].min()
        assert group["R_max"].iloc[0] == intrinsic[1][members].max()


# --- results and tables on disk -------------------------------------------------------------


def test_format_result_and_json():
    r = BiasResult(L=0.12344, L_std=0.0021, null_L=0.031, null_L_std=0.0015, excess=0.09244, n_objects=123456,
                   n_sample=123456, log2_bins_int=9, bins_obs=8, classes=["e", "s"], intrinsic=["M"],
                   observables=["Z"], best=["low"], n_boot=20, n_per_bin=None, n_null=10, seed=0)
    assert format_result(r) == "L = 0.1234 +- 0.0021 (null 0.0310 +- 0.0015, N = 123456, 512 x 8 bins)"
    r.n_table, r.dropped = 123470, {"NaN or inf in Z": 4, "passing no threshold": 10}
    assert format_result(r).splitlines()[1] == "dropped 14 of 123470 rows: 4 NaN or inf in Z, 10 passing no threshold"
    assert json.loads(json.dumps(r.to_dict()))["L"] == 0.12344


def _write_survey(path, n=3000, seed=0):
    """A FITS catalog with NaN in an intrinsic column and votes below both thresholds."""
    rng = np.random.default_rng(seed)
    data = np.zeros(n, dtype=[("ABS_MAG", ">f4"), ("R50_KPC", ">f4"), ("RESOLUTION", ">f4"), ("REDSHIFT", ">f8"),
                              ("P_EL", ">f4"), ("P_CS", ">f4"), ("CLASS", "S10")])
    data["ABS_MAG"] = rng.normal(-20, 1, n)
    data["R50_KPC"] = rng.lognormal(1, 0.3, n)
    data["RESOLUTION"] = rng.uniform(0.5, 5, n)
    data["REDSHIFT"] = rng.uniform(0.01, 0.1, n)
    p_cs = np.clip(rng.uniform(0, 1, n) + 0.1 * (data["RESOLUTION"] - 2.75), 0, 1).astype("f4")
    data["P_CS"], data["P_EL"] = p_cs, 1 - p_cs
    data["ABS_MAG"][:7] = np.nan
    data["CLASS"] = np.where(p_cs > 0.5, b"spiral", b"elliptical")
    fitsio.write(str(path), data, extname="CATALOG", clobber=True)
    return data


WORKFLOW = textwrap.dedent(
    """\
    name: test
    catalog: {path: survey.fits, hdu: CATALOG}
    labels:
      probabilities:
        - {column: P_EL, class: elliptical, threshold: 0.7}
        - {column: P_CS, class: spiral, threshold: 0.7}
    intrinsic: [ABS_MAG, R50_KPC]
    observables:
      - {column: RESOLUTION, best: high}
      - {column: REDSHIFT, best: low}
    bias: {log2_bins_int: 2, bins_obs: 4, n_boot: 0, n_null: 0, seed: 0}
    """
)


def test_bias_of_fits_table_drops_and_reports_rows(tmp_path):
    data = _write_survey(tmp_path / "survey.fits")
    (tmp_path / "workflow.yaml").write_text(WORKFLOW)
    result = bias_of_table(tmp_path / "survey.fits", tmp_path / "workflow.yaml")

    p_el = data["P_EL"].astype("f4")
    p_cs = data["P_CS"].astype("f4")
    labels = np.where(p_cs >= np.float32(0.7), 1, np.where(p_el >= np.float32(0.7), 0, -1))
    keep = ~np.isnan(data["ABS_MAG"]) & (labels >= 0)
    expected = reference_L([data["ABS_MAG"][keep].astype("f4"), data["R50_KPC"][keep].astype("f4")],
                           [data["RESOLUTION"][keep].astype("f4"), data["REDSHIFT"][keep].astype("f8")],
                           labels[keep], 2, 2, 4, ["high", "low"])
    assert result.L == pytest.approx(expected, abs=1e-12)
    assert result.n_objects == keep.sum() and result.n_table == 3000
    assert result.dropped == {"missing ABS_MAG": 7, "passing no threshold": int((labels[~np.isnan(data["ABS_MAG"])] < 0).sum())}
    assert result.classes == ["elliptical", "spiral"] and result.best == ["high", "low"]
    assert "dropped" in format_result(result)


def test_bias_of_parquet_dataset_with_overrides(tmp_path):
    data = _write_survey(tmp_path / "survey.fits")
    (tmp_path / "workflow.yaml").write_text(WORKFLOW)
    frame = pd.DataFrame({name: data[name].astype(data[name].dtype.newbyteorder("=")) for name in data.dtype.names
                          if name != "CLASS"})
    frame["CLASS"] = data["CLASS"].astype(str)
    (tmp_path / "out").mkdir()
    frame.iloc[:1200].to_parquet(tmp_path / "out" / "part-0.parquet")
    frame.iloc[1200:].to_parquet(tmp_path / "out" / "part-1.parquet")

    from_fits = bias_of_table(tmp_path / "survey.fits", tmp_path / "workflow.yaml", {"n_boot": 4, "null": 3})
    from_parquet = bias_of_table(tmp_path / "out", tmp_path / "workflow.yaml", {"n_boot": 4, "null": 3})
    assert from_parquet.L == from_fits.L and from_parquet.null_L == from_fits.null_L

    categorical = bias_of_table(tmp_path / "out", None, {
        "label_column": "CLASS", "classes": ["elliptical", "spiral"], "intrinsic": ["R50_KPC"],
        "observables": ["REDSHIFT"], "best": ["low"], "log2_bins_int": 1, "bins_obs": 3, "n_boot": 0, "null": 0})
    labels = (frame["CLASS"] == "spiral").to_numpy().astype(int)
    assert categorical.L == pytest.approx(reference_L([frame["R50_KPC"].to_numpy()], [frame["REDSHIFT"].to_numpy()],
                                                      labels, 2, 1, 3, ["low"]), abs=1e-12)
    assert categorical.dropped == {} and categorical.n_objects == 3000

    uncertain = bias_of_table(tmp_path / "out", tmp_path / "workflow.yaml",
                              {"labels": ["P_CS"], "thresholds": [0.5], "keep_uncertain": True, "observables": ["REDSHIFT"]})
    assert uncertain.classes == ["spiral", "uncertain"] and uncertain.best == ["low"]
    assert uncertain.dropped == {"missing ABS_MAG": 7}


def test_bias_of_table_option_errors(tmp_path):
    _write_survey(tmp_path / "survey.fits")
    (tmp_path / "workflow.yaml").write_text(WORKFLOW)
    with pytest.raises(ConfigError, match="thresholds"):
        bias_of_table(tmp_path / "survey.fits", None, {"labels": ["P_CS"], "intrinsic": ["R50_KPC"],
                                                       "observables": ["REDSHIFT"], "best": ["low"]})
    with pytest.raises(ConfigError, match="--best"):
        bias_of_table(tmp_path / "survey.fits", tmp_path / "workflow.yaml", {"observables": ["SNR_NEW"]})
    with pytest.raises(CatalogError, match="MISSING"):
        bias_of_table(tmp_path / "survey.fits", tmp_path / "workflow.yaml", {"intrinsic": ["MISSING"]})
    with pytest.raises(BiasError, match="needs 64000 objects"):
        bias_of_table(tmp_path / "survey.fits", tmp_path / "workflow.yaml", {"n_per_bin": 4000, "n_boot": 2})


def test_soft_mode_with_errors():
    rng = np.random.default_rng(12)
    intrinsic, observables, probabilities = random_table(rng, 500, 2, 1, 3, "normal", soft=True)
    result = bias_with_errors(intrinsic, observables, probabilities, None, 2, 4, "high", n_boot=0, n_null=2)
    assert result.soft and result.classes == ["0", "1", "2"]
    assert result.L == pytest.approx(reference_L(intrinsic, observables, probabilities, 3, 2, 4, ["high"]), abs=1e-12)
    assert result.null_L < result.L
