"""Epoch selection and the settlement check: an oscillating run is flagged, a steady one is not."""

from __future__ import annotations

import math

import pytest

from relabel.train.selection import GUARD_METRIC, select_epoch, settled_epochs, settlement


def _history(spiral_counts, guards, total=100):
    return [{"epoch": e + 1, "val_fractions": [total - s, s], GUARD_METRIC: g, "criterion": 1.0 - g}
            for e, (s, g) in enumerate(zip(spiral_counts, guards))]


def test_an_oscillating_class_balance_is_not_settled():
    # The demo run: spiral share 12 %, 67 %, 28 %, 85 % over epochs 4-7.
    history = _history([40, 40, 40, 12, 67, 28, 85], [0.9] * 7)
    out = settlement(history, first_eligible=4, window=3, tolerance=0.05)
    assert out["settled"] is False
    assert out["class_share_swing"] == pytest.approx(0.85 - 0.28)
    assert out["accuracy_swing"] == 0.0


def test_a_swinging_accuracy_is_not_settled_even_with_a_steady_balance():
    history = _history([50] * 6, [0.95, 0.95, 0.95, 0.71, 0.93, 0.67])
    out = settlement(history, first_eligible=3, window=3, tolerance=0.05)
    assert out["settled"] is False and out["accuracy_swing"] == pytest.approx(0.26)


def test_a_steady_run_is_settled_and_only_the_last_window_counts():
    history = _history([10, 90, 60, 61, 59, 60], [0.5, 0.7, 0.90, 0.91, 0.92, 0.92])
    out = settlement(history, first_eligible=3, window=3, tolerance=0.05)
    assert out["settled"] is True
    assert out["class_share_swing"] == pytest.approx(0.02) and out["accuracy_swing"] == pytest.approx(0.01)
    # The same run judged over 4 epochs includes epoch 3's 0.90: still within 0.05.
    assert settlement(history, 3, 4, 0.05)["settled"] is True
    # ... but over 5 it would reach back before first_eligible: only 4 epochs exist at full lambda.
    short = settlement(history, 3, 5, 0.05)
    assert short["settled"] is False and short["epochs_seen"] == 4 and math.isnan(short["class_share_swing"])


def test_three_classes_use_the_largest_swing_of_any_class():
    history = [{"epoch": e, "val_fractions": f, GUARD_METRIC: 0.9}
               for e, f in [(1, [50, 30, 20]), (2, [50, 20, 30]), (3, [50, 25, 25])]]
    out = settlement(history, 1, 3, 0.05)
    assert out["class_share_swing"] == pytest.approx(0.10) and out["settled"] is False


def test_select_epoch_keeps_its_guard():
    history = _history([40, 50, 50], [0.98, 0.50, 0.97])
    for h, criterion in zip(history, [0.5, 0.0, 0.3]):  # epoch 2 collapsed: the best criterion, but not eligible
        h["criterion"] = criterion
    assert select_epoch(history, 1, 0.05) == (3, True)


def test_the_kept_epoch_comes_from_a_settled_stretch_when_there_is_one():
    # Issue 15's full-size run: epoch 3 scores best by chance in the middle of a swing; epochs 7-9 are steady.
    history = _history([60, 60, 58, 30, 70, 45, 61, 60, 61], [0.9] * 9)
    for h, c in zip(history, [0.9, 0.5, 0.20, 0.60, 0.55, 0.40, 0.26, 0.25, 0.24]):
        h["criterion"] = c
    settled = settled_epochs(history, first_eligible=3, window=3, tolerance=0.05)
    assert settled == {9}
    assert select_epoch(history, 3, 0.1)[0] == 3  # the lottery
    assert select_epoch(history, 3, 0.1, settled) == (9, True)
    # No settled epoch passes the guard: the choice falls back to every eligible epoch.
    assert select_epoch(history, 3, 0.1, set()) == (3, True)
    assert select_epoch(history, 3, 0.1, {1}) == (3, True)  # epoch 1 is before the first eligible one
