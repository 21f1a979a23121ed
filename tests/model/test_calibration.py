"""Temperature scaling and the expected calibration error, on toy models whose calibration is known."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

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


# --------------------------------------------------------------------------- the validation temperature

class AreaTimesColour(torch.nn.Module):
    """A toy network that is right as often at every resolution but surer of better-resolved galaxies.

    Its spiral logit is ``gain x area x sign(colour)``: the class comes from the colour
    (which blurring and shrinking keep), the confidence from the galaxy's apparent area
    (aperture flux over central surface brightness, which shrinking lowers), as a de-biased
    network's confidence falls with resolution while its accuracy does not.
    """

    def __init__(self, gain: float):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(gain), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = torch.sinh(x.float())
        centre = linear[:, :, 14:18, 14:18].mean(dim=(2, 3))  # (n, 2): the two bands' central level
        colour = torch.sign(centre[:, 1] - centre[:, 0])
        area = linear[:, :, 4:28, 4:28].sum(dim=(1, 2, 3)) / centre.sum(dim=1).clamp(min=1.0)  # 2 pi sigma^2
        logit = self.gain * area * colour
        return torch.stack([-logit / 2, logit / 2], dim=1)


def toy_survey(n: int = 3000, seed: int = 0):
    """Gaussian galaxies seen through Gaussian PSFs: the class sets the colour (85 % of the time), and
    RESOLUTION = R50 / PSF FWHM spans the blurred to the sharp. Returns the data and its workflow."""
    import pandas as pd

    from relabel.config import Workflow
    from relabel.train.data import LabelledCutouts

    rng = np.random.default_rng(seed)
    pixel_scale = 0.4
    truth = rng.random(n) < 0.5
    red_band_brighter = np.where(rng.random(n) < 0.85, truth, ~truth)  # colour follows the class 85 % of the time
    sigma_gal = rng.uniform(0.6, 4.0, n)  # pixels
    sigma_psf = rng.uniform(1.0, 2.0, n)
    sigma = np.hypot(sigma_gal, sigma_psf)
    yy, xx = np.mgrid[:32, :32] - 15.5
    profile = np.exp(-(xx**2 + yy**2)[None] / (2 * sigma[:, None, None] ** 2)) / (2 * np.pi * sigma[:, None, None] ** 2)
    flux = np.stack([np.where(red_band_brighter, 300.0, 450.0), np.where(red_band_brighter, 450.0, 300.0)], 1)
    images = flux[:, :, None, None] * profile[:, None] + rng.normal(size=(n, 2, 32, 32))
    workflow = Workflow.from_dict({
        "name": "toy", "catalog": {"path": "catalog.fits", "id": "OBJID"},
        "labels": {"probabilities": [{"column": "P_EL", "class": "elliptical", "threshold": 0.8},
                                     {"column": "P_CS", "class": "spiral", "threshold": 0.8}]},
        "intrinsic": ["ABS_MAG"],
        "observables": [{"column": "RESOLUTION", "best": "high"}, {"column": "PSF_FWHM", "best": "low"}],
        "cutouts": {"layout": "tiles", "root": ".", "size": 32, "bands": ["g", "r"], "pixel_scale": pixel_scale},
    })
    data = LabelledCutouts(
        ids=np.arange(n), images=np.arcsinh(images).astype(np.float32), codes=truth.astype(np.int64),
        classes=["elliptical", "spiral"], intrinsic=pd.DataFrame({"ABS_MAG": rng.normal(-20.0, 1.0, n)}),
        observables=pd.DataFrame({"RESOLUTION": 1.1774 * sigma_gal / (2.3548 * sigma_psf),
                                  "PSF_FWHM": 2.3548 * sigma_psf * pixel_scale}),
        is_val=np.ones(n, dtype=bool), normalisation={}, dropped={}, seed=seed, val_fraction=1.0)
    return data, workflow


def test_validation_temperature_seen_at_the_survey_conditions_calibrates_the_whole_survey():
    from relabel.model.calibration import fit_validation_temperature
    from relabel.model.predict import predict_proba

    data, workflow = toy_survey()
    rows = np.arange(len(data))
    model = AreaTimesColour(gain=0.05)
    logits = np.log(predict_proba(model, torch.from_numpy(data.images)))
    truth = data.codes
    # No temperature: the toy is surer of the well-resolved quarter than of the rest, while its accuracy is
    # about 0.85 everywhere.
    resolved = data.observables["RESOLUTION"].to_numpy() > np.quantile(data.observables["RESOLUTION"], 0.75)
    p = apply_temperature(logits, 1.0)
    assert p[resolved].max(1).mean() > 0.95 and p[~resolved].max(1).mean() < 0.92
    assert abs((p.argmax(1) == truth)[resolved].mean() - (p.argmax(1) == truth)[~resolved].mean()) < 0.06

    best_only = fit_validation_temperature(model, data, rows, workflow, 1, 4, draws=0)
    survey = fit_validation_temperature(model, data, rows, workflow, 1, 4)
    oracle = fit_temperature(logits, truth)  # what the truth would choose
    # The best-observed galaxies alone call for more softening than the survey as a whole needs; seen at the
    # survey's conditions, the same galaxies give a temperature nearer the truth's.
    assert best_only > survey > oracle
    assert survey - oracle < 0.5 * (best_only - oracle)
    ece_best_only = expected_calibration_error(apply_temperature(logits, best_only), truth)
    ece_survey = expected_calibration_error(apply_temperature(logits, survey), truth)
    ece_oracle = expected_calibration_error(apply_temperature(logits, oracle), truth)
    assert ece_survey < ece_best_only - 0.01
    assert ece_survey < ece_oracle + 0.02
    # The same draws give the same temperature; labels are unchanged.
    assert fit_validation_temperature(model, data, rows, workflow, 1, 4) == survey
    # Without a PSF column to degrade to, the galaxies are used as observed.
    no_psf = dataclasses.replace(data, observables=data.observables.rename(columns={"PSF_FWHM": "SEEING"}))
    assert fit_validation_temperature(model, no_psf, rows, workflow, 1, 4) == best_only
    assert (apply_temperature(logits, survey).argmax(1) == logits.argmax(1)).all()


class ReadsTheDegradation(torch.nn.Module):
    """A toy network that calls a galaxy spiral when its colour says so or when its core is faint.

    On the survey's own galaxies this is its colour rule; shrinking a well-resolved galaxy
    (surface brightness kept, PSF widened) dims its core, which this network reads as
    structure: the degraded views are not what it sees at those conditions.
    """

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(3.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = torch.sinh(x.float())
        centre = linear[:, :, 14:18, 14:18].mean(dim=(2, 3))
        colour = torch.sign(centre[:, 1] - centre[:, 0])
        faint_core = (centre.sum(dim=1) < 4.0).float()
        logit = self.gain * torch.clamp(colour + 2.0 * faint_core, max=1.0)
        return torch.stack([-logit / 2, logit / 2], dim=1)


def test_degraded_views_that_change_the_class_shares_are_not_used_for_the_temperature():
    from relabel.model.calibration import SHARE_SHIFT_TOLERANCE, calibrate_on_validation
    from relabel.model.predict import predict_proba

    data, workflow = toy_survey()
    rows = np.arange(len(data))
    # The toy whose degraded views keep its class shares: the views are used.
    kept = calibrate_on_validation(AreaTimesColour(gain=0.05), data, rows, workflow, 1, 4)
    assert kept.views == "survey conditions"
    assert kept.share_shift <= SHARE_SHIFT_TOLERANCE
    assert kept.temperature == kept.temperature_conditions != kept.temperature_observed
    # The toy that reads the degradation as structure: on the best-observed galaxies as observed it follows
    # the colour, degraded it calls many of them spiral; T is fitted on the galaxies as observed.
    model = ReadsTheDegradation()
    images = torch.from_numpy(data.images)
    resolved = data.observables["RESOLUTION"].to_numpy() > np.quantile(data.observables["RESOLUTION"], 0.75)
    as_observed = predict_proba(model, images[resolved]).argmax(1)
    colour = predict_proba(AreaTimesColour(gain=1.0), images[resolved]).argmax(1)
    assert (as_observed == colour).mean() > 0.95
    rejected = calibrate_on_validation(model, data, rows, workflow, 1, 4)
    assert rejected.views == "as observed"
    assert rejected.share_shift > 2 * SHARE_SHIFT_TOLERANCE
    assert rejected.temperature == rejected.temperature_observed
    assert rejected.temperature_conditions > 1.5 * rejected.temperature_observed
    # No degradation columns, or no draws: as observed, no shift measured.
    plain = calibrate_on_validation(model, data, rows, workflow, 1, 4, draws=0)
    assert (plain.views, plain.share_shift, plain.temperature) == ("as observed", None, rejected.temperature_observed)
