"""Which epoch a run keeps, and whether the run had settled when it stopped."""

from __future__ import annotations

import numpy as np

#: The validation measure the collapse guard watches: balanced accuracy (mean recall
#: of the classes) against the confident validation labels.
GUARD_METRIC = "val_balanced_accuracy"


def select_epoch(history: list[dict], first_eligible: int, accuracy_tolerance: float,
                 settled_only: set[int] | None = None) -> tuple[int | None, bool]:
    """The epoch (1-based) with the lowest validation criterion among the eligible ones, and whether any was.

    Eligible: from ``first_eligible`` on, with the collapse-guard accuracy (``GUARD_METRIC``) at
    least the run's best minus ``accuracy_tolerance``. Marks each record's
    ``eligible``. When none is, falls back to the epoch from ``first_eligible`` on
    with the best guard accuracy (None before that epoch is reached) and returns False.
    With ``settled_only`` (:func:`settled_epochs`), the choice is made among the eligible
    epochs in it when there are any: an epoch of a stretch where the class balance had
    settled, rather than one that scored well in the middle of a swing.

    Why: a model predicting one class has L = 0 and balanced accuracy 0.5, and must
    not win on L; a de-biased model legitimately disagrees with the labels of
    mislabelled, worse-observed objects (up to several points), hence the default
    tolerance of 0.1. For ``debiased``, epochs of the warm-up are not eligible either.

    Parameters
    ----------
    history : list of dict
        One record per epoch (``epoch``, ``criterion``, ``GUARD_METRIC``); each gains ``eligible``.
    first_eligible : int
        First epoch (1-based) that may be kept.
    accuracy_tolerance : float
        Allowed drop of the guard accuracy below the run's best.

    Returns
    -------
    epoch : int or None
        The kept epoch.
    guarded : bool
        Whether an epoch passed the collapse guard.

    Examples
    --------
    >>> h = [{"epoch": 1, GUARD_METRIC: 0.98, "criterion": 0.5},
    ...      {"epoch": 2, GUARD_METRIC: 0.50, "criterion": 0.1},   # collapsed: L = 0, one class everywhere
    ...      {"epoch": 3, GUARD_METRIC: 0.97, "criterion": 0.3}]
    >>> select_epoch(h, first_eligible=1, accuracy_tolerance=0.05)
    (3, True)
    """
    top = max(h[GUARD_METRIC] for h in history)
    candidates = [h for h in history if h["epoch"] >= first_eligible]
    for h in history:
        h["eligible"] = bool(h["epoch"] >= first_eligible and h[GUARD_METRIC] >= top - accuracy_tolerance)
    eligible = [h for h in candidates if h["eligible"]]
    if settled_only and any(h["epoch"] in settled_only for h in eligible):
        eligible = [h for h in eligible if h["epoch"] in settled_only]
    if eligible:
        return min(eligible, key=lambda h: (h["criterion"], h["epoch"]))["epoch"], True
    if not candidates:
        return None, True
    return max(candidates, key=lambda h: (h[GUARD_METRIC], -h["epoch"]))["epoch"], False


def settlement(history: list[dict], first_eligible: int, window: int, tolerance: float) -> dict:
    """Whether the predicted class balance and the guard accuracy had settled over the run's last epochs.

    A run has settled when, over its last ``window`` epochs from ``first_eligible`` on
    (lambda at full strength), the validation share predicted in every class and the
    balanced accuracy each moved by at most ``tolerance`` (max - min). A run with
    fewer such epochs has not been seen to settle. An oscillating de-biased run
    (the share of one class swinging between epochs) keeps whichever epoch happens
    to score best, which is a lottery; this says so.

    Parameters
    ----------
    history : list of dict
        Per-epoch records with ``epoch``, ``val_fractions`` (counts per class) and ``GUARD_METRIC``.
    first_eligible : int
        First epoch (1-based) at full lambda.
    window : int
        Epochs looked at.
    tolerance : float
        Largest allowed swing of a class share or of the balanced accuracy.

    Returns
    -------
    dict
        ``settled`` (bool), ``class_share_swing`` and ``accuracy_swing`` (max - min over
        the window; NaN with too few epochs), ``window``, ``tolerance``, ``epochs_seen``.

    Examples
    --------
    >>> h = [{"epoch": e, "val_fractions": [60 - s, 40 + s], GUARD_METRIC: 0.9} for e, s in [(1, 0), (2, 30), (3, -20)]]
    >>> settlement(h, 1, 3, 0.05)["settled"], round(settlement(h, 1, 3, 0.05)["class_share_swing"], 2)
    (False, 0.5)
    """
    recent = [h for h in history if h["epoch"] >= first_eligible][-window:]
    out = {"window": window, "tolerance": tolerance, "epochs_seen": len(recent)}
    if len(recent) < window:
        return {**out, "settled": False, "class_share_swing": float("nan"), "accuracy_swing": float("nan")}
    counts = np.array([h["val_fractions"] for h in recent], dtype=float)
    shares = counts / counts.sum(axis=1, keepdims=True)
    guard = np.array([h[GUARD_METRIC] for h in recent])
    share_swing = float((shares.max(axis=0) - shares.min(axis=0)).max())
    accuracy_swing = float(guard.max() - guard.min())
    settled = bool(share_swing <= tolerance and accuracy_swing <= tolerance)
    return {**out, "settled": settled, "class_share_swing": share_swing, "accuracy_swing": accuracy_swing}


def settled_epochs(history: list[dict], first_eligible: int, window: int, tolerance: float) -> set[int]:
    """The epochs at which the run had settled: :func:`settlement` of the history up to each of them.

    Parameters
    ----------
    history : list of dict
        Per-epoch records, as for :func:`settlement`.
    first_eligible, window, tolerance
        As for :func:`settlement`.

    Returns
    -------
    set of int
        Epochs (1-based) that end a settled window of ``window`` epochs from ``first_eligible`` on.

    Examples
    --------
    >>> h = [{"epoch": e, "val_fractions": [60 - s, 40 + s], GUARD_METRIC: 0.9}
    ...      for e, s in [(1, 0), (2, 30), (3, -20), (4, 1), (5, 2), (6, 1)]]
    >>> sorted(settled_epochs(h, 1, 3, 0.05))
    [6]
    """
    return {h["epoch"] for k, h in enumerate(history)
            if settlement(history[:k + 1], first_eligible, window, tolerance)["settled"]}
