"""Temperature scaling and the expected calibration error, on toy models whose calibration is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from relabel.model.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)


def calibrated_toy(n: int, seed: int):
    """Three classes whose true probabilities are ``softmax(logits)``: labels drawn from them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, 3))
    p = apply_temperature(logits, 1.0)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return logits, labels


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_temperature_scaling_lowers_the_calibration_error(scale):
    logits, labels = calibrated_toy(20000, seed=1)
    distorted = scale * logits  # 3x: over-confident; 0.4x: under-confident
    before = expected_calibration_error(apply_temperature(distorted, 1.0), labels)
    fit_logits, fit_labels = distorted[:10000], labels[:10000]
    temperature = fit_temperature(fit_logits, fit_labels)
    assert temperature == pytest.approx(scale, rel=0.1)
    after = expected_calibration_error(apply_temperature(distorted[10000:], temperature), labels[10000:])
    assert before > 0.05
    assert after < 0.02 < before
    # The argmax, hence every label, is unchanged.
    assert (apply_temperature(distorted, temperature).argmax(1) == distorted.argmax(1)).all()


def test_reliability_diagram_counts_and_ece_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    labels = np.array([0, 1, 0, 1, 0])
    diagram = reliability_diagram(probs, labels, n_bins=5)
    # Confidences 0.95, 0.95, 0.6, 0.7, 0.5 -> bins [0.8, 1], [0.6, 0.8) twice, [0.4, 0.6).
    assert diagram["count"] == [0, 0, 1, 2, 2]
    assert diagram["accuracy"][4] == pytest.approx(0.5)
    assert diagram["confidence"][3] == pytest.approx(0.65)
    assert diagram["accuracy"][0] is None
    expected = (1 * abs(1 - 0.5) + 2 * abs(1 - 0.65) + 2 * abs(0.5 - 0.95)) / 5
    assert diagram["ece"] == pytest.approx(expected)
    json.dumps(diagram)  # plain data for the report


def test_perfect_confident_model_has_zero_error_and_no_objects_give_nan():
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(probs, np.array([0, 1, 2, 1])) == 0.0
    assert np.isnan(reliability_diagram(np.zeros((0, 3)), np.zeros(0, dtype=int))["ece"])
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 1.0
