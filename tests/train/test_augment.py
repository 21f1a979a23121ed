"""Degradation augmentation: the degraded image has the target PSF width and the survey's noise level."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import torch

from relabel.train.augment import Degrader, degrade

PIXEL_SCALE = 0.396
SIZE = 64


def star(fwhm: float, profile: str = "gaussian") -> np.ndarray:
    """A bright point source through a PSF of ``fwhm`` arcsec, drawn by GalSim (pixel response included)."""
    psf = galsim.Gaussian(fwhm=fwhm) if profile == "gaussian" else galsim.Moffat(beta=3.0, fwhm=fwhm)
    return psf.withFlux(1e4).drawImage(nx=SIZE, ny=SIZE, scale=PIXEL_SCALE).array.astype(np.float32)


def moment_fwhm(image: np.ndarray) -> float:
    """FWHM (arcsec) of the Gaussian with the image's adaptive second moments (GalSim HSM)."""
    moments = galsim.hsm.FindAdaptiveMom(galsim.Image(np.asarray(image, dtype=np.float64), scale=PIXEL_SCALE))
    return moments.moments_sigma * PIXEL_SCALE * 2.0 * np.sqrt(2.0 * np.log(2.0))


@pytest.mark.parametrize("shrink", [1.0, 0.7, 0.4])
def test_degraded_star_has_the_target_psf_width(shrink):
    image = torch.from_numpy(star(1.2))[None, None]
    out = degrade(image, [1.2], [2.0], [shrink], PIXEL_SCALE, [0.0])[0, 0].numpy()
    # Compared with a star drawn directly through the 2.0" PSF: both carry one pixel response.
    assert moment_fwhm(out) == pytest.approx(moment_fwhm(star(2.0)), rel=0.01)
    assert moment_fwhm(star(2.0)) == pytest.approx(2.0, rel=0.02)
    # Shrinking keeps surface brightness, so the flux falls as the area.
    assert out.sum() / image.sum().item() == pytest.approx(shrink**2, rel=0.03)


def test_degraded_moffat_star_matches_galsim_convolution():
    image = torch.from_numpy(star(1.2, "moffat"))[None, None]
    out = degrade(image, [1.2], [2.0], [1.0], PIXEL_SCALE, [0.0])[0, 0].numpy()
    kernel = galsim.Gaussian(fwhm=float(np.sqrt(2.0**2 - 1.2**2)))
    expected = galsim.Convolve(galsim.Moffat(beta=3.0, fwhm=1.2), kernel).withFlux(1e4).drawImage(
        nx=SIZE, ny=SIZE, scale=PIXEL_SCALE).array
    assert moment_fwhm(out) == pytest.approx(moment_fwhm(expected), rel=0.01)


@pytest.mark.parametrize("shrink", [1.0, 0.5])
def test_degraded_noise_is_the_survey_sky_level(shrink):
    rng = torch.Generator().manual_seed(0)
    sky = np.array([0.5, 2.0], dtype=np.float32)  # two bands, each its own sky noise
    noise = torch.randn((64, 2, SIZE, SIZE), generator=rng) * torch.from_numpy(sky)[None, :, None, None]
    out = degrade(noise, np.full(64, 1.2), np.full(64, 2.2), np.full(64, shrink), PIXEL_SCALE, sky, rng)
    measured = out.std(dim=(0, 2, 3)).numpy()
    assert measured == pytest.approx(sky, rel=0.05)
    # Convolution alone would have left far less: the top-up is what restores it.
    smoothed = degrade(noise, np.full(64, 1.2), np.full(64, 2.2), np.full(64, shrink), PIXEL_SCALE, [0.0, 0.0], rng)
    assert (smoothed.std(dim=(0, 2, 3)).numpy() < 0.6 * sky).all()


def test_degrader_only_makes_good_galaxies_worse_and_keeps_the_rest():
    rng = np.random.default_rng(1)
    n = 400
    psf = rng.uniform(0.9, 2.0, n)
    resolution = rng.lognormal(0.0, 0.5, n)
    labelled = rng.random(n) < 0.7
    chosen, target, shrink = Degrader(psf, resolution, labelled, np.arange(n), PIXEL_SCALE, seed=3,
                                      probability=1.0).conditions(np.arange(n))
    median = np.median(resolution)
    assert chosen.any()
    assert (labelled[chosen] & (resolution[chosen] >= median)).all()
    # The degraded galaxy's resolution after shrinking and the wider PSF is a real, worse one.
    new_resolution = resolution[chosen] * psf[chosen] * shrink[chosen] / target[chosen]
    assert (new_resolution < resolution[chosen] + 1e-9).all()
    assert (target[chosen] >= shrink[chosen] * psf[chosen] - 1e-9).all()

    x = torch.from_numpy(rng.normal(size=(n, 1, SIZE, SIZE)).astype(np.float32))
    # A fresh degrader of the same seed draws the same conditions.
    y = Degrader(psf, resolution, labelled, np.arange(n), PIXEL_SCALE, seed=3, probability=1.0)(x, np.arange(n))
    untouched = ~chosen
    assert torch.equal(y[torch.from_numpy(untouched)], x[torch.from_numpy(untouched)])
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_train_augment_degrade_from_the_command_line(small_survey, tmp_path):
    from relabel.cli import main
    from relabel.model.checkpoint import load_checkpoint

    out = tmp_path / "m.pt"
    assert main(["train", str(small_survey.catalog), "--config", str(small_survey.workflow), "--method", "biased",
                 "--out", str(out), "--epochs", "1", "--width", "4", "--no-progress", "--augment", "degrade"]) == 0
    _, meta = load_checkpoint(out)
    assert meta.augment == "degrade"
    # Fitted on the validation split, not left at its default (a 1-epoch model may sit at the search's bound, e^3).
    assert 0.05 <= meta.temperature <= 20.1 and meta.temperature != 1.0


def test_degrade_needs_the_psf_and_resolution_observables(small_survey, tmp_path):
    import yaml

    from relabel.config import Workflow
    from relabel.errors import ConfigError
    from relabel.train import train_model

    mapping = yaml.safe_load(small_survey.workflow.read_text())
    mapping["train"]["degrade_psf_column"] = "SEEING"
    workflow = Workflow.from_dict(mapping, base_dir=small_survey.root)
    with pytest.raises(ConfigError, match="train.degrade_psf_column"):
        train_model(small_survey.catalog, workflow, "biased", tmp_path / "m.pt", epochs=1, width=4, progress=False,
                    augment="degrade")
    with pytest.raises(ConfigError, match="augment must be one of"):
        train_model(small_survey.catalog, workflow, "biased", tmp_path / "m.pt", epochs=1, augment="blur")
