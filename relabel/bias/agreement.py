"""Agreement of new labels with the confident original ones in the best-observed bin of each observable.

In the best-observed bin (L's reference bin) the original labels are the most
trustworthy: that is why the bias term anchors every other bin to it. A de-biased
model should change the labels the bias made wrong, in the worse-observed bins, and
hardly any confident label there. Its agreement with those labels, next to the biased
model's, is the over-correction signature that needs no truth (issue 15): lambda too
large flips confident labels of well-observed galaxies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from relabel.bias.metric import BiasError, object_cells, reference_bin


def best_bin_agreement(intrinsic, observables, best: Sequence[str], labels: np.ndarray, predicted: np.ndarray,
                       log2_bins_int: int, bins_obs: int) -> dict:
    """Share of the confident labels that ``predicted`` keeps, in the reference bin of each observable.

    The cells are L's own (:func:`relabel.bias.metric.object_cells`, the same k-d tree
    and equal-count cuts), computed over all the objects given; when they are too few
    for those bins, one intrinsic bin and 2 observable bins (the best-observed half).

    Parameters
    ----------
    intrinsic : DataFrame or array-like, shape (N, d)
        Intrinsic columns.
    observables : DataFrame, shape (N, m)
        Observable columns (their names label the result).
    best : sequence of str
        ``"low"`` or ``"high"`` per observable.
    labels : numpy.ndarray of int, shape (N,)
        Class code of the original label; negative where it is not confident.
    predicted : numpy.ndarray of int, shape (N,)
        Class code of the new label.
    log2_bins_int, bins_obs : int
        L's binning.

    Returns
    -------
    dict
        ``log2_bins_int`` and ``bins_obs`` used, and ``by_observable``: one
        ``{"observable", "n", "agreement"}`` per observable (``agreement`` None when its
        reference bin holds no confident label).

    Examples
    --------
    >>> import pandas as pd
    >>> obs = pd.DataFrame({"RESOLUTION": [0.1, 0.2, 0.8, 0.9]})
    >>> out = best_bin_agreement(np.zeros(4), obs, ["high"], np.array([0, 0, 1, 1]), np.array([1, 1, 1, 0]), 0, 2)
    >>> out["by_observable"]
    [{'observable': 'RESOLUTION', 'n': 2, 'agreement': 0.5}]
    """
    names = [str(c) for c in getattr(observables, "columns", range(np.shape(observables)[1]))]
    try:
        _, obs_bin = object_cells(intrinsic, observables, list(best), log2_bins_int, bins_obs)
    except BiasError:  # too few objects for L's bins: the best-observed half, one intrinsic bin
        log2_bins_int, bins_obs = 0, 2
        _, obs_bin = object_cells(intrinsic, observables, list(best), 0, 2)
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    rows = []
    for j, (name, end) in enumerate(zip(names, best)):
        chosen = (obs_bin[:, j] == reference_bin(end, bins_obs)) & (labels >= 0)
        n = int(chosen.sum())
        rows.append({"observable": name, "n": n,
                     "agreement": float((predicted[chosen] == labels[chosen]).mean()) if n else None})
    return {"log2_bins_int": log2_bins_int, "bins_obs": bins_obs, "by_observable": rows}


def worst_agreement(result: dict) -> float | None:
    """The lowest agreement over the observables of a :func:`best_bin_agreement` result (None when none has one).

    Parameters
    ----------
    result : dict
        As returned by :func:`best_bin_agreement`.

    Returns
    -------
    float or None
    """
    values = [r["agreement"] for r in result["by_observable"] if r["agreement"] is not None]
    return min(values) if values else None
