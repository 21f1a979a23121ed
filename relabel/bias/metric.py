"""The labeling-bias metric L (Cabrera-Vives, Miller & Schneider 2018): value, bootstrap, null, curves.

The definition is the normative one of ``docs/bias.md`` ("Definition"), implemented exactly
and checked against a plain loop implementation in ``tests/test_bias.py``:
k-d tree of median splits over the intrinsic columns, equal-count bins of each
observable inside each leaf, squared differences of class fractions to the
best-quality bin, one square root over everything.

Every hot step is a whole-array numpy operation; the only Python loops run over
tree levels and observables. A bootstrap resample is represented by a
multiplicity per object, and sorted orders come from one stable argsort per
column made once, so a repetition costs a few gathers and small-integer (radix)
sorts instead of fresh sorts of floats.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from relabel.config import BEST_ENDS, BIAS_DEFAULTS
from relabel.errors import RelabelError

#: Repetitions on fewer objects run in one thread: their numpy calls are too short to release
#: the GIL for long, and two threads contending for it took twice as long as one (2,500
#: objects: 1.2 ms a repetition against 0.7); the same at 10,000, 1.6x faster at 100,000.
THREADS_MIN_OBJECTS = 10_000


class BiasError(RelabelError, ValueError):
    """The data cannot give L as asked: NaN in a used column, a leaf or a table too small, bad bins."""


# --- public results -----------------------------------------------------------------------


@dataclasses.dataclass
class BinFractions:
    """Class counts per (observable, intrinsic leaf, observable bin, class) of one table.

    Attributes
    ----------
    leaf
        (N,) intrinsic leaf of each object (branch bits, first split most
        significant), in the smallest unsigned integer type that holds 2^l.
    n_leaf
        (2^l,) objects per leaf (empty leaves hold 0).
    counts
        (m, 2^l, B, K) objects of each class per cell; summed probabilities in soft mode.
    n_bin
        (m, 2^l, B) objects per cell (0 in empty leaves).
    best
        The best-quality end of each observable, ``"low"`` or ``"high"``.
    """

    leaf: np.ndarray
    n_leaf: np.ndarray
    counts: np.ndarray
    n_bin: np.ndarray
    best: list[str]

    @property
    def fractions(self) -> np.ndarray:
        """(m, 2^l, B, K) class shares f[b, k]; 0 in empty leaves."""
        return self.counts / np.maximum(self.n_bin, 1)[..., None]

    @property
    def sigma2(self) -> np.ndarray:
        """(m, 2^l, K) sigma^2[j, leaf, k] = sum over b of (f[b, k] - f[ref, k])^2 / B."""
        f = self.fractions
        n_bins = f.shape[2]
        ref = np.array([0 if b == "low" else n_bins - 1 for b in self.best])
        f_ref = f[np.arange(f.shape[0]), :, ref, :]  # (m, 2^l, K)
        return ((f - f_ref[:, :, None, :]) ** 2).sum(axis=2) / n_bins

    @property
    def L(self) -> float:
        """sqrt(sum of sigma^2 / (m K 2^l)): empty leaves and absent classes count as 0."""
        s2 = self.sigma2
        return math.sqrt(float(s2.sum()) / s2.size)


@dataclasses.dataclass
class BiasResult:
    """L of a label column with its bootstrap spread and its null (noise-only) value.

    ``L`` and ``null_L`` are means over repetitions (``n_boot`` resamples, and
    ``n_null`` resamples of tables whose observables were shuffled inside each
    intrinsic leaf), made the same way so that ``excess = L - null_L`` compares
    like with like. With ``n_boot = 0``: one evaluation on every object and
    ``L_std`` is None. ``n_sample`` is the number of objects per repetition.
    ``n_boot`` and ``n_null`` are the repetitions made (more than asked when a
    Monte-Carlo target added some); ``mc_error`` is the Monte-Carlo standard
    error of ``excess`` (of ``L`` without a null): how far the means could move
    with other repetition seeds, not the sampling spread ``L_std``.
    ``dropped_repetitions``: added repetitions left out because a resample had
    a leaf with fewer objects than bins.
    ``dropped`` maps a reason to the number of table rows it removed.
    """

    L: float
    L_std: float | None
    null_L: float | None
    null_L_std: float | None
    excess: float | None
    n_objects: int
    n_sample: int
    log2_bins_int: int
    bins_obs: int
    classes: list[str]
    intrinsic: list[str]
    observables: list[str]
    best: list[str]
    n_boot: int
    n_per_bin: int | None
    n_null: int
    seed: int
    soft: bool = False
    mc_error: float | None = None
    dropped_repetitions: int = 0
    table: str | None = None
    n_table: int | None = None
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (floats, ints, strings, lists, None)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


# --- the metric ---------------------------------------------------------------------------


def labeling_bias(
    intrinsic: Any,
    observables: Any,
    labels: Any,
    n_classes: int | None,
    log2_bins_int: int,
    bins_obs: int,
    best: Sequence[str] | str,
) -> float:
    """The labeling-bias metric L of one table (``docs/bias.md``, normative definition).

    Parameters
    ----------
    intrinsic
        (N, d) array, DataFrame, or sequence of d columns: the properties
        morphology may depend on. Each column keeps its dtype (medians are
        numpy's, in that dtype).
    observables
        (N, m) array, DataFrame, or sequence of m columns: the observing
        conditions labels must not depend on.
    labels
        (N,) integer class codes 0..K-1, or (N, K) class probabilities (soft
        mode: f[b, k] is the mean probability of class k in bin b).
    n_classes
        K. Classes absent from the table still count in the denominator.
        May be None in soft mode.
    log2_bins_int
        l: the k-d tree has 2^l leaves.
    bins_obs
        B: equal-count bins of each observable inside each leaf.
    best
        ``"low"`` or ``"high"`` per observable: which end is the best quality
        (reference bin). One string applies to all.

    Returns
    -------
    float

    Raises
    ------
    BiasError
        NaN or inf in a used column, a non-empty leaf with fewer than B
        objects, codes outside 0..K-1, or invalid bins; the message says which
        and how many.

    Examples
    --------
    Labels that follow the observable: two bins, shares 0 and 1 of class 1,
    sigma^2 = (1 - 0)^2 / 2 for each of the two classes, L = sqrt(1/2):

    >>> o = np.array([1.0, 2.0, 3.0, 4.0])
    >>> round(labeling_bias(np.zeros(4), o, np.array([0, 0, 1, 1]), 2, 0, 2, "low"), 6)
    0.707107
    """
    return bin_fractions(intrinsic, observables, labels, n_classes, log2_bins_int, bins_obs, best).L


def bin_fractions(
    intrinsic: Any, observables: Any, labels: Any, n_classes: int | None,
    log2_bins_int: int, bins_obs: int, best: Sequence[str] | str,
) -> BinFractions:
    """Per-(observable, leaf, bin, class) counts behind L; same arguments as :func:`labeling_bias`.

    Parameters
    ----------
    intrinsic, observables, labels, n_classes, log2_bins_int, bins_obs, best
        As in :func:`labeling_bias`.

    Returns
    -------
    BinFractions
        Counts, objects per cell and leaves; its ``L`` is :func:`labeling_bias`'s value.

    Raises
    ------
    BiasError
        As :func:`labeling_bias`.

    Examples
    --------
    >>> o = np.array([1.0, 2.0, 3.0, 4.0])
    >>> bf = bin_fractions(np.zeros(4), o, np.array([0, 0, 1, 1]), 2, 0, 2, "low")
    >>> bf.fractions[0, 0].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    table = _Table(intrinsic, observables, labels, n_classes, best)
    return _bin_fractions(table, log2_bins_int, bins_obs)


def reference_bin(best: str, bins_obs: int) -> int:
    """Index of the best-observed (reference) bin of an observable in :func:`object_cells`' numbering.

    Bins are numbered from the lowest values, so the reference bin is the first when
    low values are best and the last when high values are.

    Parameters
    ----------
    best : {"low", "high"}
        The observable's best-observed end.
    bins_obs : int
        Observable bins per intrinsic leaf.

    Returns
    -------
    int

    Examples
    --------
    >>> reference_bin("low", 5), reference_bin("high", 5)
    (0, 4)
    """
    return 0 if best == "low" else bins_obs - 1


def object_cells(
    intrinsic: Any,
    observables: Any,
    best: Sequence[str] | str,
    log2_bins_int: int,
    bins_obs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The cell of every object as L bins it: its intrinsic leaf and its bin of each observable.

    The same k-d tree and equal-count cuts as :func:`labeling_bias` (steps 2-3 of
    the definition in ``docs/bias.md``), from the same code, so that the training
    penalty and the metric can never disagree on which objects share a cell.

    Parameters
    ----------
    intrinsic : array-like or DataFrame, shape (N,) or (N, d)
        Intrinsic columns.
    observables : array-like or DataFrame, shape (N,) or (N, m)
        Observable columns.
    best : str or sequence of str
        ``"low"`` or ``"high"`` per observable (which end is best observed).
    log2_bins_int, bins_obs : int
        Depth of the k-d tree and observable bins per leaf.

    Returns
    -------
    leaf : numpy.ndarray of int64, shape (N,)
        Intrinsic leaf (branch bits, first split most significant).
    obs_bin : numpy.ndarray of int64, shape (N, m)
        Observable bin inside the leaf, 0 = lowest values.

    Raises
    ------
    BiasError
        As :func:`labeling_bias` (NaN, a leaf smaller than ``bins_obs``, bad bins).

    Examples
    --------
    >>> leaf, obs_bin = object_cells(np.zeros(4), np.array([4.0, 3.0, 2.0, 1.0]), "low", 0, 2)
    >>> leaf.tolist(), obs_bin[:, 0].tolist()
    ([0, 0, 0, 0], [1, 1, 0, 0])
    """
    n = len(np.asarray(observables))
    table = _Table(intrinsic, observables, np.zeros(n, dtype=np.intp), 1, best)
    depth, n_bins = _check_bins(log2_bins_int, bins_obs)
    bf, rows_per_observable, cuts = _cells(table, depth, n_bins, None, keep_rows=True)
    sizes = np.diff(cuts, axis=0).T  # (F, B): objects per bin, leaf-major as the sorted rows
    bin_of_position = np.tile(np.arange(n_bins), sizes.shape[0]).repeat(sizes.ravel())
    obs_bin = np.empty((table.n, len(rows_per_observable)), dtype=np.int64)
    for j, rows in enumerate(rows_per_observable):
        obs_bin[rows, j] = bin_of_position
    return bf.leaf.astype(np.int64), obs_bin


def bias_with_errors(
    intrinsic: Any, observables: Any, labels: Any, n_classes: int | None,
    log2_bins_int: int, bins_obs: int, best: Sequence[str] | str,
    *,
    n_boot: int = 20,
    n_per_bin: int | None = None,
    seed: int = 0,
    n_null: int = 10,
    mc_error: float | None = None,
    max_repetitions: int = 2000,
    classes: Sequence[str] | None = None,
    workers: int | None = None,
) -> BiasResult:
    """L with its bootstrap mean and std, and the null L of the same table with the observables shuffled.

    Each of the ``n_boot`` repetitions draws, when ``n_per_bin`` is given, a
    random subsample (without replacement) of ``n_per_bin * 2^l * B`` objects,
    then a bootstrap resample (with replacement) of that size, and computes L
    on it: medians, leaves and bins are recomputed. Mean and std (ddof=0) are
    reported. Rows of a resample keep ascending input order, so the stable
    sort of ties is well defined.

    The null: shuffle the observables (rows of them, jointly) within each
    intrinsic leaf of the full table, which keeps every distribution and
    destroys any dependence of the labels on the observables, then run one
    repetition exactly as above. ``n_null`` such shuffles, each with its own
    seed. ``excess = L - null_L``.

    With ``n_boot = 0`` there are no repetitions: L (and each null L) is one
    evaluation on every object, and ``L_std`` is None.

    ``L`` and ``null_L`` are Monte-Carlo means: with 20 and 10 repetitions on
    5,000 objects their error on ``excess`` is about 0.003, as large as the
    differences a study compares. With ``mc_error`` set, the first ``n_boot``
    and ``n_null`` repetitions estimate the two spreads, and more repetitions
    of each are added (at most ``max_repetitions`` in all, shared in proportion
    to the spreads, which minimises their number for the target) until the
    standard error ``sqrt(L_std^2 / n_boot + null_L_std^2 / n_null)`` is
    expected to be under ``mc_error``. Repetition ``r`` has the same seed
    whatever the total, so the result equals a run asking for the final counts.
    An added repetition whose resample has a leaf with fewer objects than bins
    (ties at a median can make one, about 1 in 1,000 on a few hundred objects
    with repeated values) is left out and counted in ``dropped_repetitions``,
    instead of failing a measurement the asked repetitions already made.

    Parameters
    ----------
    intrinsic, observables, labels, n_classes, log2_bins_int, bins_obs, best
        As in :func:`labeling_bias`. Names come from DataFrame columns.
    n_boot
        Bootstrap repetitions.
    n_per_bin
        Objects per (leaf, observable bin) in each repetition, so that L
        values of different tables compare at equal noise; None uses a
        resample of every object.
    seed
        Seeds every repetition (independent streams for L and null).
    n_null
        Shuffles for the null L; 0 skips it.
    mc_error
        Target Monte-Carlo standard error of the excess (of L when ``n_null``
        is 0); None or 0: exactly ``n_boot`` and ``n_null`` repetitions.
    max_repetitions
        The most bootstrap and null repetitions together that ``mc_error`` may
        ask for (the asked ``n_boot`` and ``n_null`` are always made).
    classes
        Class names for the result (default "0", "1", ...).
    workers
        Threads running repetitions side by side (numpy releases the GIL in
        sorts and gathers); None: the usable cores, at most 4; one thread for
        repetitions of fewer than :data:`THREADS_MIN_OBJECTS` objects. Results do
        not depend on it: every repetition has its own seed.

    Raises
    ------
    BiasError
        As :func:`labeling_bias`, or the table has fewer objects than a
        subsample needs (the message gives both numbers).
    """
    table = _Table(intrinsic, observables, labels, n_classes, best)
    depth, n_bins = _check_bins(log2_bins_int, bins_obs)
    n = table.n
    n_sample = _sample_size(n, depth, n_bins, n_boot, n_null, seed, n_per_bin)
    names = _class_names(classes, table.n_classes)
    target = _mc_target(mc_error, max_repetitions, n_boot + n_null)
    values, null_values, dropped = _repetitions(table, depth, n_bins, n_sample, n_boot, n_null, seed, workers,
                                                target)
    L = float(np.mean(values))
    null_L = float(np.mean(null_values)) if null_values else None
    n_boot = len(values) if n_boot else 0
    return BiasResult(
        L=L, L_std=float(np.std(values)) if n_boot else None,
        null_L=null_L, null_L_std=float(np.std(null_values)) if null_values else None,
        excess=L - null_L if null_L is not None else None,
        n_objects=n, n_sample=n_sample, log2_bins_int=depth, bins_obs=n_bins, classes=names,
        intrinsic=list(table.intrinsic_names), observables=list(table.observable_names), best=list(table.best),
        n_boot=int(n_boot), n_per_bin=None if n_per_bin is None else int(n_per_bin), n_null=len(null_values),
        seed=int(seed), soft=table.soft, mc_error=_mc_standard_error(values if n_boot else [], null_values),
        dropped_repetitions=dropped,
    )


def repetition_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The repetition keywords of :func:`bias_with_errors` from a workflow's ``bias`` section.

    Parameters
    ----------
    params : mapping
        ``Workflow.bias``; keys it lacks (a checkpoint written before they existed) take the
        defaults of :class:`relabel.config.BiasSettings`.

    Returns
    -------
    dict
        ``n_boot``, ``n_null``, ``seed``, ``mc_error`` and ``max_repetitions``.
    """
    keys = ("n_boot", "n_null", "seed", "mc_error", "max_repetitions")
    return {key: params.get(key, BIAS_DEFAULTS[key]) for key in keys}


def fraction_curves(
    intrinsic: Any, observables: Any, labels: Any, n_classes: int | None,
    log2_bins_int: int, bins_obs: int, best: Sequence[str] | str,
    *,
    classes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Class fraction per observable bin in each intrinsic leaf, as a tidy table for plots.

    One row per (non-empty leaf, observable, bin, class), the cells L is made
    of. Same arguments as :func:`labeling_bias`; names come from DataFrame
    columns.

    Parameters
    ----------
    intrinsic, observables, labels, n_classes, log2_bins_int, bins_obs, best
        As in :func:`labeling_bias`.
    classes : sequence of str, optional
        Class names in code order (default "0", "1", ...).

    Returns
    -------
    pandas.DataFrame
        ``leaf``, ``observable`` (name), ``bin`` (0 = lowest values),
        ``reference`` (the best-quality bin), ``obs_low``, ``obs_high`` (the
        bin's smallest and largest value), ``obs_centre`` (its median), ``n``
        (objects in the bin), ``class`` (name), ``count`` (objects of the
        class; summed probability in soft mode), ``fraction``, and for each
        intrinsic column ``<name>_min`` and ``<name>_max`` over the leaf.

    Raises
    ------
    BiasError
        As :func:`labeling_bias`, or ``classes`` does not name every class.

    Examples
    --------
    >>> o = np.array([1.0, 2.0, 3.0, 4.0])
    >>> curves = fraction_curves(np.zeros(4), o, np.array([0, 0, 1, 1]), 2, 0, 2, "low")
    >>> curves[curves["class"] == "1"][["bin", "obs_centre", "fraction"]].values.tolist()
    [[0.0, 1.5, 0.0], [1.0, 3.5, 1.0]]
    """
    table = _Table(intrinsic, observables, labels, n_classes, best)
    depth, n_bins = _check_bins(log2_bins_int, bins_obs)
    bf, rows, cuts = _cells(table, depth, n_bins, None, keep_rows=True)
    K = table.n_classes
    names = _class_names(classes, K)
    filled = np.flatnonzero(bf.n_leaf)
    n_filled = len(filled)
    starts = (np.cumsum(bf.n_leaf[filled]) - bf.n_leaf[filled])[:, None] + cuts.T[:, :-1]  # (F, B)
    sizes = np.diff(cuts, axis=0).T
    frames = []
    for j, o in enumerate(table.observables):
        values = o[rows[j]]
        lo = starts + (sizes - 1) // 2
        hi = starts + sizes // 2
        centre = _median_from_middles(values[lo.ravel()], values[hi.ravel()], (sizes % 2 == 1).ravel())
        ref = 0 if table.best[j] == "low" else n_bins - 1
        cell = {
            "leaf": np.repeat(filled, n_bins),
            "observable": table.observable_names[j],
            "bin": np.tile(np.arange(n_bins), n_filled),
            "reference": np.tile(np.arange(n_bins) == ref, n_filled),
            "obs_low": values[starts.ravel()],
            "obs_high": values[(starts + sizes - 1).ravel()],
            "obs_centre": centre,
            "n": sizes.ravel(),
        }
        frame = pd.DataFrame({key: np.repeat(val, K) if np.ndim(val) else val for key, val in cell.items()})
        frame["class"] = np.tile(names, n_filled * n_bins)
        frame["count"] = bf.counts[j, filled].reshape(-1)
        frame["fraction"] = bf.fractions[j, filled].reshape(-1)
        frames.append(frame)
    curves = pd.concat(frames, ignore_index=True)
    by_leaf = pd.DataFrame({name: col for name, col in zip(table.intrinsic_names, table.intrinsic)})
    ranges = by_leaf.groupby(bf.leaf).agg(["min", "max"])
    ranges.columns = [f"{name}_{stat}" for name, stat in ranges.columns]
    ranges.index = ranges.index.astype(np.int64)
    return curves.join(ranges, on="leaf")


def _sample_size(
    n: int, depth: int, n_bins: int, n_boot: int, n_null: int, seed: int, n_per_bin: int | None
) -> int:
    """Objects per repetition of :func:`bias_with_errors`, after checking its repetition arguments."""
    for name, value in (("n_boot", n_boot), ("n_null", n_null), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise BiasError(f"{name} must be a non-negative integer, got {value!r}")
    if n_per_bin is None:
        return n
    if n_boot == 0:
        raise BiasError("n_per_bin sets the size of each bootstrap repetition: it needs n_boot >= 1")
    if isinstance(n_per_bin, bool) or not isinstance(n_per_bin, (int, np.integer)) or n_per_bin < 1:
        raise BiasError(f"n_per_bin must be a positive integer, got {n_per_bin!r}")
    n_sample = int(n_per_bin) * (1 << depth) * n_bins
    if n_sample > n:
        raise BiasError(
            f"n_per_bin={n_per_bin} with {1 << depth} x {n_bins} bins needs {n_sample} objects per "
            f"repetition, but there are only {n}: lower n_per_bin or the number of bins"
        )
    return n_sample


def _class_names(classes: Sequence[str] | None, n_classes: int) -> list[str]:
    """Class names as strings, "0", "1", ... by default; one per class or :class:`BiasError`."""
    if classes is None:
        return [str(k) for k in range(n_classes)]
    names = [str(c) for c in classes]
    if len(names) != n_classes:
        raise BiasError(f"{len(names)} class names {names} for {n_classes} classes")
    return names


def _mc_target(mc_error: float | None, max_repetitions: int, asked: int) -> tuple[float, int] | None:
    """``(target error, most repetitions)`` after checking them; None when no target is set."""
    if mc_error is None or mc_error == 0:
        return None
    if isinstance(mc_error, bool) or not isinstance(mc_error, (int, float)) or not mc_error > 0:
        raise BiasError(f"mc_error must be a positive number (or None), got {mc_error!r}")
    if isinstance(max_repetitions, bool) or not isinstance(max_repetitions, (int, np.integer)) or max_repetitions < 1:
        raise BiasError(f"max_repetitions must be a positive integer, got {max_repetitions!r}")
    return float(mc_error), max(int(max_repetitions), asked)


def _mc_standard_error(values: Sequence[float], null_values: Sequence[float]) -> float:
    """Monte-Carlo standard error of mean(values) - mean(null_values); an empty list is exact."""
    return math.sqrt(sum(float(np.var(v, ddof=1)) / len(v) for v in (values, null_values) if len(v) > 1))


def _more_repetitions(values: list[float], null_values: list[float], target: tuple[float, int]) -> tuple[int, int]:
    """Bootstrap and null repetitions to add so that the Monte-Carlo error is expected under the target.

    Counts proportional to each spread minimise the total for a given error (Neyman
    allocation); both are scaled down together when they would pass the cap.
    """
    error, cap = target
    if _mc_standard_error(values, null_values) <= error:
        return 0, 0
    spread = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in (values, null_values)]
    want = [math.ceil(s * sum(spread) / error ** 2) if s else len(v)
            for s, v in zip(spread, (values, null_values))]
    if sum(want) > cap:
        want = [int(w * cap / sum(want)) for w in want]
    return max(want[0] - len(values), 0), max(want[1] - len(null_values), 0)


def _repetitions(
    table: _Table, depth: int, n_bins: int, n_sample: int, n_boot: int, n_null: int, seed: int, workers: int | None,
    target: tuple[float, int] | None = None,
) -> tuple[list[float], list[float], int]:
    """L of each bootstrap repetition (or of the full table when ``n_boot`` is 0), of each null shuffle,
    and the number of added repetitions dropped.

    With a Monte-Carlo ``target``, a second round adds repetitions (:func:`_more_repetitions`);
    their seeds continue the first round's children, so the draws do not depend on the rounds.
    An added repetition with a leaf too small is dropped; one of the first round is an error.
    """
    n = table.n
    boot_seeds, null_seeds = np.random.SeedSequence(seed).spawn(2)
    # Sort orders are made once here, before any thread reads them.
    table.sort_all()
    full = _bin_fractions(table, depth, n_bins) if n_boot == 0 or n_null else None

    def bootstrap(r: int, child: np.random.SeedSequence) -> float:
        weights = _resample(n, n_sample, np.random.default_rng(child))
        return _in_repetition(r, "bootstrap", lambda: _bin_fractions(table, depth, n_bins, weights).L)

    def null(r: int, child: np.random.SeedSequence) -> float:
        assert full is not None  # made above whenever n_null > 0
        rng = np.random.default_rng(child)
        shuffled = table.with_observables(_shuffle_within(full.leaf, rng))
        weights = None if n_boot == 0 else _resample(n, n_sample, rng)
        return _in_repetition(r, "null", lambda: _bin_fractions(shuffled, depth, n_bins, weights).L)

    if n_sample < THREADS_MIN_OBJECTS:
        workers = 1

    def run(first_boot: int, k_boot: int, first_null: int, k_null: int, tolerant: bool = False):
        # SeedSequence.spawn continues its numbering, so child r is the same in any round.
        tasks = [(bootstrap, first_boot + r, child) for r, child in enumerate(boot_seeds.spawn(k_boot))]
        tasks += [(null, first_null + r, child) for r, child in enumerate(null_seeds.spawn(k_null))]
        if tolerant:
            tasks = [(_nan_on_small_leaf(func), r, child) for func, r, child in tasks]
        done = _run_tasks(tasks, workers)
        return done[:k_boot], done[k_boot:]

    values, null_values = run(0, n_boot, 0, n_null)
    dropped = 0
    if target is not None:
        add_boot, add_null = _more_repetitions(values, null_values, target)
        more = run(n_boot, add_boot if n_boot else 0, n_null, add_null if n_null else 0, tolerant=True)
        kept = [[v for v in part if not math.isnan(v)] for part in more]
        dropped = len(more[0]) + len(more[1]) - len(kept[0]) - len(kept[1])
        values, null_values = values + kept[0], null_values + kept[1]
    if n_boot:
        return values, null_values, dropped
    assert full is not None  # made above whenever n_boot == 0
    return [full.L], null_values, dropped


def _nan_on_small_leaf(func):
    """``func`` returning NaN where its resample has a leaf with fewer objects than bins."""
    def tolerant(r: int, child: np.random.SeedSequence) -> float:
        try:
            return func(r, child)
        except BiasError:
            return math.nan
    return tolerant


# --- internals: columns -------------------------------------------------------------------


class _Table:
    """Validated columns of one table, with each column's stable sort order cached."""

    def __init__(self, intrinsic: Any, observables: Any, labels: Any, n_classes: int | None, best: Any):
        self.intrinsic, self.intrinsic_names = _as_columns(intrinsic, "intrinsic")
        self.observables, self.observable_names = _as_columns(observables, "observable")
        self.n = len(self.intrinsic[0])
        for kind, cols, names in (("intrinsic", self.intrinsic, self.intrinsic_names),
                                  ("observable", self.observables, self.observable_names)):
            for col, name in zip(cols, names):
                if len(col) != self.n:
                    raise BiasError(f"{kind} column {name} has {len(col)} rows, intrinsic column "
                                    f"{self.intrinsic_names[0]} has {self.n}")
        if isinstance(best, str):
            best = [best] * len(self.observables)
        self.best = list(best)
        if len(self.best) != len(self.observables) or any(b not in BEST_ENDS for b in self.best):
            raise BiasError(
                f"best must be 'low' or 'high' for each of the {len(self.observables)} observable(s) "
                f"{self.observable_names}, got {self.best}"
            )
        self.labels, self.n_classes, self.soft = _as_labels(labels, n_classes, self.n)
        self._orders: dict[tuple[str, int], np.ndarray] = {}

    def order(self, kind: str, j: int) -> np.ndarray:
        key = (kind, j)
        if key not in self._orders:
            col = self.intrinsic[j] if kind == "intrinsic" else self.observables[j]
            self._orders[key] = np.argsort(col, kind="stable")
        return self._orders[key]

    def sort_all(self) -> None:
        for j in range(len(self.intrinsic)):
            self.order("intrinsic", j)
        for j in range(len(self.observables)):
            self.order("observable", j)

    def with_observables(self, perm: np.ndarray) -> _Table:
        """A copy whose object i carries the observables of object perm[i]."""
        other = copy.copy(self)
        other.observables = [o[perm] for o in self.observables]
        other._orders = {k: v for k, v in self._orders.items() if k[0] == "intrinsic"}
        return other


def _as_columns(values: Any, kind: str) -> tuple[list[np.ndarray], list[str]]:
    if isinstance(values, pd.DataFrame):
        names = [str(c) for c in values.columns]
        cols = [values[c].to_numpy() for c in values.columns]
    elif isinstance(values, np.ndarray) and values.ndim == 2:
        names = [f"{kind} {i}" for i in range(values.shape[1])]
        cols = [values[:, i] for i in range(values.shape[1])]
    elif isinstance(values, (np.ndarray, pd.Series)):
        names = [str(values.name) if isinstance(values, pd.Series) and values.name is not None else f"{kind} 0"]
        cols = [np.asarray(values)]
    else:
        cols = [np.asarray(v) for v in values]
        names = [f"{kind} {i}" for i in range(len(cols))]
    if not cols:
        raise BiasError(f"at least one {kind} column is needed")
    out = []
    for col, name in zip(cols, names):
        if col.ndim != 1 or col.dtype.kind not in "biuf":
            raise BiasError(
                f"{kind} column {name} must be numeric with one value per object, got {col.dtype} {col.shape}"
            )
        if col.dtype.kind == "f":
            n_nan = int(np.isnan(col).sum())
            n_inf = int(np.isinf(col).sum())
            if n_nan or n_inf:
                raise BiasError(
                    f"{kind} column {name} has {n_nan} NaN and {n_inf} infinite value(s) of {len(col)}: "
                    "drop those rows first (relabel bias does, and reports how many)"
                )
        out.append(np.ascontiguousarray(col))
    return out, names


def _as_labels(labels: Any, n_classes: int | None, n: int) -> tuple[np.ndarray, int, bool]:
    arr = np.asarray(labels)
    if len(arr) != n:
        raise BiasError(f"labels have {len(arr)} rows, the intrinsic columns {n}")
    if arr.ndim == 2:
        if n_classes is not None and arr.shape[1] != n_classes:
            raise BiasError(f"probabilities have {arr.shape[1]} columns for n_classes={n_classes}")
        if arr.dtype.kind not in "biuf":
            raise BiasError(f"class probabilities must be numeric, got {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            raise BiasError(f"class probabilities hold {n_nan} NaN value(s): drop those objects first")
        n_out = int(((arr < 0) | (arr > 1)).sum())
        if n_out:
            raise BiasError(f"class probabilities hold {n_out} value(s) outside [0, 1]")
        return arr, arr.shape[1], True
    if arr.ndim != 1 or arr.dtype.kind not in "biu":
        raise BiasError(f"labels must be integer class codes (N,) or probabilities (N, K), got {arr.dtype} {arr.shape}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise BiasError(f"n_classes must be a positive integer for class codes, got {n_classes!r}")
    outside = (arr < 0) | (arr >= n_classes)
    if outside.any():
        raise BiasError(
            f"labels hold {int(outside.sum())} code(s) outside 0..{n_classes - 1} (e.g. {arr[outside][0]}); "
            "-1 marks objects passing no threshold: drop them, or keep them as the uncertain class"
        )
    return arr.astype(np.intp, copy=False), int(n_classes), False


def _check_bins(log2_bins_int: Any, bins_obs: Any) -> tuple[int, int]:
    for name, value, low in (("log2_bins_int", log2_bins_int, 0), ("bins_obs", bins_obs, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise BiasError(f"{name} must be an integer >= {low}, got {value!r}")
    if log2_bins_int > 30:
        raise BiasError(f"log2_bins_int={log2_bins_int} asks for more than 2^30 intrinsic bins")
    return int(log2_bins_int), int(bins_obs)


# --- internals: the computation -----------------------------------------------------------


def _bin_fractions(table: _Table, depth: int, n_bins: int, weights: np.ndarray | None = None) -> BinFractions:
    depth, n_bins = _check_bins(depth, n_bins)
    return _cells(table, depth, n_bins, weights)[0]


def _cells(
    table: _Table, depth: int, n_bins: int, weights: np.ndarray | None, keep_rows: bool = False
) -> tuple[BinFractions, list[np.ndarray], np.ndarray]:
    """Leaves, then counts per (observable, leaf, bin, class) of the sample given by ``weights``.

    ``weights`` is each object's multiplicity in a resample (None: every
    object once). Returns the counts, the rows sorted by (leaf, observable)
    for each observable when ``keep_rows`` (else an empty list), and the cuts
    (B+1, non-empty leaves).
    """
    d = len(table.intrinsic)
    seqs = [_expand(table.order("intrinsic", c), weights) for c in range(min(d, depth))]
    leaf = _tree_leaves(table.intrinsic, seqs, table.n, depth)
    n_leaves = 1 << depth
    K = table.n_classes
    m = len(table.observables)

    seqs_obs = [_expand(table.order("observable", j), weights) for j in range(m)]
    leaf_of_row = leaf[seqs_obs[0]]
    n_leaf = np.bincount(leaf_of_row, minlength=n_leaves)
    small = np.flatnonzero((n_leaf > 0) & (n_leaf < n_bins))
    if len(small):
        worst = small[np.argmin(n_leaf[small])]
        raise BiasError(
            f"intrinsic leaf {small[0]} has {n_leaf[small[0]]} object(s), fewer than the {n_bins} observable bins "
            f"it needs ({len(small)} of {n_leaves} leaves are that small; leaf {worst} has {n_leaf[worst]}): "
            "use fewer intrinsic bins (log2_bins_int) or observable bins, or more objects"
        )
    filled = np.flatnonzero(n_leaf)
    cuts = np.round(np.linspace(0, n_leaf[filled], n_bins + 1)).astype(np.int64)  # (B+1, F)
    sizes = np.diff(cuts, axis=0).T  # (F, B), in the leaf-major order of the sorted rows
    cell = np.repeat(np.arange(sizes.size), sizes.ravel())

    counts = np.zeros((m, n_leaves, n_bins, K))
    n_bin = np.zeros((m, n_leaves, n_bins), dtype=np.int64)
    n_bin[:, filled, :] = sizes
    kept: list[np.ndarray] = []
    for j, seq in enumerate(seqs_obs):
        if j:
            leaf_of_row = leaf[seq]
        # Rows are in observable order; a stable sort by leaf keeps that order inside each leaf.
        rows = seq[np.argsort(leaf_of_row, kind="stable")]
        if table.soft:
            p = table.labels[rows]
            per_cell = np.stack([np.bincount(cell, weights=p[:, k], minlength=sizes.size) for k in range(K)], axis=1)
        else:
            per_cell = np.bincount(cell * K + table.labels[rows], minlength=sizes.size * K).reshape(-1, K)
        counts[j, filled] = per_cell.reshape(len(filled), n_bins, K)
        if keep_rows:
            kept.append(rows)
    return BinFractions(leaf=leaf, n_leaf=n_leaf, counts=counts, n_bin=n_bin, best=list(table.best)), kept, cuts


def _expand(order: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Rows of the sample in column order: each object repeated by its multiplicity."""
    if weights is None:
        return order
    return np.repeat(order, weights[order])


def _tree_leaves(columns: list[np.ndarray], seqs: list[np.ndarray], n: int, depth: int) -> np.ndarray:
    """Leaf of every object: ``depth`` levels of median splits, level t on column t mod d.

    ``seqs[c]`` lists the sample's rows sorted (stably) by column c. At each
    level, a stable sort of those rows by node (a radix sort: node ids are
    small integers) puts each node's rows together in column order, so the
    two middle rows of every node are found at once.
    """
    node = np.zeros(n, dtype=_id_dtype(1))
    d = len(columns)
    for t in range(depth):
        c = t % d
        x, seq = columns[c], seqs[c]
        n_nodes = 1 << t
        if n_nodes == 1:
            count = np.array([len(seq)])
        else:
            node_of_row = node[seq]
            count = np.bincount(node_of_row, minlength=n_nodes)
        start = np.cumsum(count) - count
        filled = np.flatnonzero(count)
        lo = start[filled] + (count[filled] - 1) // 2
        hi = start[filled] + count[filled] // 2
        if n_nodes > 1:
            grouped = np.argsort(node_of_row, kind="stable")
            lo, hi = grouped[lo], grouped[hi]
        lo, hi = seq[lo], seq[hi]
        med = _median_from_middles(x[lo], x[hi], count[filled] % 2 == 1)
        median = np.full(n_nodes, np.nan, dtype=med.dtype)
        median[filled] = med
        right = x >= median[node]
        node = node.astype(_id_dtype(2 * n_nodes), copy=False) << 1
        node |= right
    return node


def _median_from_middles(lo: np.ndarray, hi: np.ndarray, odd: np.ndarray) -> np.ndarray:
    """numpy's median from the middle values of sorted groups, bit for bit.

    np.median takes the mean of the middle one or two values, so the result
    has mean's dtype and rounding (float32 stays float32, integers become
    float64); reproducing that keeps the splits identical to np.median's.
    """
    even = np.mean(np.stack([lo, hi]), axis=0)
    single = np.mean(lo[None], axis=0)
    return np.asarray(np.where(odd, single, even))


def _id_dtype(n_ids: int) -> np.dtype:
    # 8- and 16-bit keys get numpy's radix sort for kind="stable": linear time.
    if n_ids <= 1 << 8:
        return np.dtype(np.uint8)
    if n_ids <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.int64)


def _resample(n: int, n_sample: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicity of each object in one repetition: optional subsample, then a bootstrap."""
    draws = np.bincount(rng.integers(0, n_sample, n_sample), minlength=n_sample)
    if draws.max() < 256:
        # Multiplicities are small (Poisson(1)); one byte each makes the gathers in np.repeat cache-friendly.
        draws = draws.astype(np.uint8)
    if n_sample == n:
        return draws
    weights = np.zeros(n, dtype=draws.dtype)
    weights[rng.choice(n, n_sample, replace=False)] = draws
    return weights


def _shuffle_within(leaf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation that maps every object to a random object of the same leaf."""
    by_leaf = np.argsort(leaf, kind="stable")
    mixed = rng.permutation(len(leaf))
    mixed = mixed[np.argsort(leaf[mixed], kind="stable")]
    perm = np.empty_like(by_leaf)
    perm[by_leaf] = mixed
    return perm


def _run_tasks(tasks: list, workers: int | None) -> list[float]:
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(4, cores)
    if workers <= 1 or len(tasks) <= 1:
        return [func(r, child) for func, r, child in tasks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda task: task[0](task[1], task[2]), tasks))


def _in_repetition(r: int, kind: str, compute):
    try:
        return compute()
    except BiasError as exc:
        raise BiasError(f"{kind} repetition {r}: {exc}") from None
