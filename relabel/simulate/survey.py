"""Simulated survey: galaxies with known true morphology and human-like biased labels.

The physics and the labelling model live here; drawing the cutouts is in
:mod:`relabel.simulate.drawing`. :func:`simulate_survey` writes a survey on disk
in the layout of ``docs/conventions.md``; see ``docs/simulator.md`` for the
model and its measured labeling bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
import pandas as pd
import yaml
from astropy.cosmology import FlatLambdaCDM
from scipy.special import ndtr, ndtri

from relabel.config import BIAS_DEFAULTS, CLUSTER_DEFAULTS, RUN_DEFAULTS, TRAIN_DEFAULTS
from relabel.errors import ConfigError, OutputError
from relabel.files import atomic_path
from relabel.simulate.drawing import draw_survey_cutouts
from relabel.simulate.presets import DEFAULT, NANOMAGGY_ZERO_POINT, SurveyPreset, VolunteerModel, get_preset

COSMOLOGY = FlatLambdaCDM(H0=70.0, Om0=0.3)
ELLIPTICAL_SERSIC_N = (3.5, 4.0, 4.5, 5.0)
"""Quantised so that GalSim builds one Sersic table per value and reuses it."""
ARM_FRACTION_RANGE = (0.25, 0.45)
"""Share of a spiral's disk light in its arms, uniform in this range."""

CATALOG_COLUMNS = {
    "OBJID": "i8", "RA": "f8", "DEC": "f8",
    "P_EL": "f4", "P_CS": "f4", "P_DK": "f4", "N_VOTES": "i2",
    "ABS_MAG": "f4", "R50_KPC": "f4", "COLOR_GR": "f4",
    "REDSHIFT": "f4", "PSF_FWHM": "f4", "RESOLUTION": "f4", "SNR": "f4",
    "MAG_R": "f4", "R50_ARCSEC": "f4",
}
"""Catalog columns and dtypes shared by both layouts (docs/conventions.md)."""

TRUTH_COLUMNS = [
    "OBJID", "TRUE_CLASS", "P_RECOGNISE", "ARMS_SEEN", "N_EL", "N_CS", "N_DK", "FLUX_NMGY",
    "SERSIC_N", "AXIS_RATIO", "POSITION_ANGLE", "INCLINATION", "BULGE_FRACTION",
    "BULGE_R50_RATIO", "ARM_FRACTION", "KNOT_FRACTION", "N_KNOTS", "N_ARMS", "PITCH_DEG",
]
"""Columns of truth.parquet: known only to the simulator, never in the catalog."""


@dataclass(frozen=True)
class SurveyPaths:
    """Where :func:`simulate_survey` wrote a survey.

    Attributes
    ----------
    root : Path
        The survey folder.
    catalog, truth, workflow : Path
        ``catalog.fits``, ``truth.parquet`` and ``workflow.yaml``.
    cutout_dir : Path
        ``tiles/`` (layout "tiles") or ``cutouts/`` (layout "files").
    layout : str
        "tiles" or "files".
    """

    root: Path
    catalog: Path
    truth: Path
    workflow: Path
    cutout_dir: Path
    layout: str


def distances(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance modulus and angular diameter distance (Mpc) in the survey cosmology.

    Parameters
    ----------
    z : numpy.ndarray
        Redshifts.

    Returns
    -------
    distance_modulus, angular_diameter_mpc : numpy.ndarray

    Examples
    --------
    >>> mu, da = distances(np.array([0.1]))
    >>> round(float(mu[0]), 2), round(float(da[0]), 1)
    (38.32, 380.4)
    """
    z = np.asarray(z, dtype=float)
    return COSMOLOGY.distmod(z).value, COSMOLOGY.angular_diameter_distance(z).to_value("Mpc")


def _truncated_normal(rng, mean, sigma, low, high, size):
    values = rng.normal(mean, sigma, size)
    bad = (values < low) | (values > high)
    while bad.any():
        values[bad] = rng.normal(np.broadcast_to(mean, values.shape)[bad], sigma)
        bad = (values < low) | (values > high)
    return values


def recognition_probability(resolution: np.ndarray, snr: np.ndarray,
                            volunteers: VolunteerModel = DEFAULT.volunteers) -> np.ndarray:
    """Probability that a true spiral's arms show in its image.

    Falls smoothly when the galaxy is small compared with the seeing
    (RESOLUTION = R50 / PSF FWHM) or faint (SNR).

    Parameters
    ----------
    resolution, snr : numpy.ndarray
    volunteers : VolunteerModel
        The survey's volunteer model (default: the default preset's).

    Returns
    -------
    numpy.ndarray
        Values in [0, 1), same shape as the inputs.

    Examples
    --------
    >>> p = recognition_probability(np.array([0.5, 1.2, 4.0]), np.array([500.0] * 3))
    >>> [round(float(v), 2) for v in p]
    [0.2, 0.77, 0.99]
    """
    v = volunteers
    return v.visibility(resolution, v.resolution_half, v.resolution_slope) * v.visibility(snr, v.snr_half, v.snr_slope)


def arms_seen(true_spiral, resolution, snr, arm_fraction, rng, volunteers: VolunteerModel = DEFAULT.volunteers):
    """Whether each galaxy's spiral arms show in its image (one draw per galaxy).

    A true spiral shows its arms with :func:`recognition_probability`; which ones do
    follows a conspicuousness drawn with correlation ``volunteers.arm_correlation`` to
    the galaxy's arm strength (a Gaussian copula on ARM_FRACTION's rank within its
    uniform range), so the share that shows at each image quality is exactly that
    probability. Ellipticals have no arms to show.

    Parameters
    ----------
    true_spiral : numpy.ndarray of bool, shape (n,)
    resolution, snr : numpy.ndarray, shape (n,)
    arm_fraction : numpy.ndarray, shape (n,)
        Share of the disk light in the arms (the simulator's 0.25-0.45 for spirals).
    rng : numpy.random.Generator
    volunteers : VolunteerModel

    Returns
    -------
    seen : numpy.ndarray of bool, shape (n,)
    p_seen : numpy.ndarray, shape (n,)
        :func:`recognition_probability` (also defined for ellipticals).
    """
    v = volunteers
    p_seen = recognition_probability(resolution, snr, v)
    strength = ndtri(np.clip((np.asarray(arm_fraction, dtype=float) - ARM_FRACTION_RANGE[0])
                             / (ARM_FRACTION_RANGE[1] - ARM_FRACTION_RANGE[0]), 1e-6, 1.0 - 1e-6))
    rho = v.arm_correlation
    # Stronger arms -> lower u -> seen at worse image quality; u stays uniform.
    u = ndtr(-rho * strength + np.sqrt(1.0 - rho**2) * rng.standard_normal(p_seen.shape))
    return np.asarray(true_spiral, dtype=bool) & (u < p_seen), p_seen


def volunteer_votes(true_spiral, seen, resolution, snr, n_votes, rng,
                    volunteers: VolunteerModel = DEFAULT.volunteers):
    """Galaxy Zoo-like votes (elliptical, spiral, don't know) for each galaxy.

    Every volunteer sees the same image, so what decides a spiral's votes is
    whether its arms show (``seen``, :func:`arms_seen`): if they do, volunteers
    call it spiral at rate ``recognition_max`` and the rest of the votes go to
    "elliptical" more and more often as the galaxy shrinks to a smooth blob
    (otherwise to "don't know"); if they do not, it is a smooth disk, voted on
    like a smooth galaxy (3 % spiral; "elliptical" when it is a blob, a quarter
    "don't know" while the disk is resolved). True ellipticals are called
    elliptical with a small error rate that grows a little at low SNR. A model
    with ``dont_know_max`` moves that share of every galaxy's votes to "don't
    know" at low SNR.

    Parameters
    ----------
    true_spiral, seen : numpy.ndarray of bool, shape (n,)
    resolution, snr : numpy.ndarray, shape (n,)
    n_votes : numpy.ndarray of int, shape (n,)
    rng : numpy.random.Generator
    volunteers : VolunteerModel

    Returns
    -------
    numpy.ndarray of int, shape (n, 3)
        Counts for (elliptical, spiral, don't know).
    """
    v = volunteers
    blob = 1.0 - v.visibility(resolution, v.resolution_half, v.resolution_slope)
    ones = np.ones_like(blob)

    def split(spiral_share, to_elliptical):
        rest = 1.0 - spiral_share
        return np.stack([rest * to_elliptical, spiral_share * ones, rest * (1.0 - to_elliptical)], axis=1)

    # Votes a visibly spiral galaxy loses: half go to "elliptical" while the
    # disk is resolved (people hesitate), nearly all once it is a blob.
    seen_p = split(v.recognition_max, 0.5 + 0.5 * blob)
    smooth_disk_p = split(0.03, 0.75 + 0.25 * blob)
    faint = 1.0 - v.visibility(snr, v.snr_half, v.snr_slope)
    elliptical_p = np.stack([0.93 - 0.2 * faint, np.full_like(faint, 0.02), 0.05 + 0.2 * faint], axis=1)
    true_spiral = np.asarray(true_spiral, dtype=bool)
    mean_p = np.where(np.asarray(seen, dtype=bool)[:, None], seen_p,
                      np.where(true_spiral[:, None], smooth_disk_p, elliptical_p))
    if v.dont_know_max > 0.0:
        # Noisy images make volunteers unsure of any class, not only of spirals.
        unsure = v.dont_know_max / (1.0 + (np.maximum(snr, 1e-6) / v.dont_know_snr) ** 2)
        mean_p = mean_p * (1.0 - unsure[:, None]) + np.outer(unsure, [0.0, 0.0, 1.0])
    # Dirichlet rows via normalised gammas (numpy's dirichlet takes one alpha).
    gamma = rng.standard_gamma(np.maximum(v.vote_concentration * mean_p, 1e-3))
    galaxy_p = gamma / gamma.sum(axis=1, keepdims=True)
    return rng.multinomial(n_votes, galaxy_p)


def _intrinsic(rng: np.random.Generator, spiral: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ABS_MAG, log10 R50_KPC and COLOR_GR of each galaxy, by true class."""
    n, n_sp = spiral.size, int(spiral.sum())
    n_el = n - n_sp
    # Intrinsic properties depend on the true class: ellipticals are brighter,
    # more compact at fixed luminosity (R ~ L^0.65 vs L^0.3, Shen et al. 2003)
    # and on the red sequence; spirals are bluer with a broad colour spread.
    abs_mag = np.empty(n)
    abs_mag[spiral] = _truncated_normal(rng, -20.7, 0.8, -23.0, -19.0, n_sp)
    abs_mag[~spiral] = _truncated_normal(rng, -21.3, 0.7, -23.5, -19.5, n_el)
    log_r50 = np.empty(n)
    log_r50[spiral] = np.log10(5.0) - 0.12 * (abs_mag[spiral] + 21.0) + rng.normal(0, 0.15, n_sp)
    log_r50[~spiral] = np.log10(4.0) - 0.26 * (abs_mag[~spiral] + 21.5) + rng.normal(0, 0.12, n_el)
    color = np.empty(n)
    color[spiral] = 0.55 - 0.03 * (abs_mag[spiral] + 21.0) + rng.normal(0, 0.10, n_sp)
    color[~spiral] = 0.75 - 0.02 * (abs_mag[~spiral] + 21.5) + rng.normal(0, 0.04, n_el)
    return abs_mag, log_r50, color


def _observed(abs_mag, log_r50, z, psf, preset: SurveyPreset) -> dict[str, np.ndarray]:
    """Apparent magnitude, size, RESOLUTION, flux and SNR through the preset's optics and depth."""
    distance_modulus, d_a = distances(z)
    # No K-correction: the r band at z < 0.25 changes the magnitudes by
    # < 0.3 mag, irrelevant to how visible the arms are (the deep preset
    # reaches further and ignores it too: the labels see the same MAG_R).
    mag = abs_mag + distance_modulus
    r50_kpc = 10.0**log_r50
    r50_arcsec = r50_kpc / (d_a * 1e3) * (180.0 / np.pi) * 3600.0
    flux_nmgy = 10.0 ** (-0.4 * (mag - NANOMAGGY_ZERO_POINT))
    # Matched-filter S/N of a Gaussian of the same R50 seen through the PSF:
    # effective noise area 4 pi sigma^2, sky plus the source's own photons.
    sigma_px2 = ((r50_arcsec / 1.1774) ** 2 + (psf / 2.3548) ** 2) / preset.pixel_scale**2
    electrons_per_nmgy, sky_electrons = preset.electrons("r")
    electrons = flux_nmgy * electrons_per_nmgy
    snr = electrons / np.sqrt(electrons + 4.0 * np.pi * sigma_px2 * sky_electrons)
    return {"MAG_R": mag, "R50_KPC": r50_kpc, "R50_ARCSEC": r50_arcsec, "RESOLUTION": r50_arcsec / psf,
            "FLUX_NMGY": flux_nmgy, "SNR": snr}


def _shapes(rng: np.random.Generator, spiral: np.ndarray) -> dict[str, np.ndarray]:
    """Shape parameters used only to draw the cutouts (truth columns)."""
    n = spiral.size
    sersic_n = np.where(spiral, 1.0, rng.choice(ELLIPTICAL_SERSIC_N, n))
    cos_i = rng.uniform(0.0, 1.0, n)
    # Thick disks (intrinsic axis ratio 0.15) never look thinner than that edge-on.
    disk_q = np.sqrt(cos_i**2 * (1.0 - 0.15**2) + 0.15**2)
    axis_ratio = np.where(spiral, disk_q, rng.uniform(0.6, 1.0, n))
    position_angle = rng.uniform(0.0, 180.0, n)
    bulge_fraction = rng.uniform(0.05, 0.3, n)
    bulge_ratio = rng.uniform(0.15, 0.3, n)
    arm_fraction = rng.uniform(*ARM_FRACTION_RANGE, n)
    knot_fraction = rng.uniform(0.05, 0.15, n)
    n_knots = rng.integers(10, 31, n)
    n_arms = rng.choice(np.array([2, 2, 2, 3, 4]), n)
    pitch = rng.uniform(10.0, 30.0, n)

    def spiral_only(values, fill=0.0):
        return np.where(spiral, values, fill)

    return {
        "SERSIC_N": sersic_n, "AXIS_RATIO": axis_ratio, "POSITION_ANGLE": position_angle,
        "INCLINATION": spiral_only(np.degrees(np.arccos(cos_i)), np.nan),
        "BULGE_FRACTION": spiral_only(bulge_fraction),
        "BULGE_R50_RATIO": spiral_only(bulge_ratio),
        "ARM_FRACTION": spiral_only(arm_fraction),
        "KNOT_FRACTION": spiral_only(knot_fraction),
        "N_KNOTS": spiral_only(n_knots, 0).astype(np.int16),
        "N_ARMS": spiral_only(n_arms, 0).astype(np.int16),
        "PITCH_DEG": spiral_only(pitch, np.nan),
    }


def simulate_galaxies(n: int, seed: int = 0, preset: str | SurveyPreset | None = None) -> pd.DataFrame:
    """Draw the catalog and truth columns of ``n`` galaxies (no images).

    Parameters
    ----------
    n : int
        Number of galaxies.
    seed : int
        Survey seed.
    preset : str, SurveyPreset or None
        Survey kind (:data:`relabel.simulate.presets.PRESETS`); ``None``: "default".

    Returns
    -------
    pandas.DataFrame
        One row per galaxy, in catalog order, with an INDEX column (0..n-1),
        every column of :data:`CATALOG_COLUMNS` (with its dtype) and of
        :data:`TRUTH_COLUMNS`.

    Examples
    --------
    >>> table = simulate_galaxies(2000, seed=1, preset="deep")
    >>> round(float((table["TRUE_CLASS"] == "spiral").mean()), 1)
    0.7
    """
    preset = get_preset(preset)
    # One stream for the whole table, drawn in a fixed order: the default
    # preset's galaxies are exactly those of the simulator before presets.
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    spiral = rng.random(n) < preset.spiral_fraction
    abs_mag, log_r50, color = _intrinsic(rng, spiral)

    # Observing conditions are independent of the class by construction: this
    # is what makes the true spiral fraction flat in RESOLUTION at fixed
    # intrinsic properties.
    z = rng.uniform(*preset.redshift_range, n)
    psf = np.clip(preset.psf_fwhm_median * np.exp(rng.normal(0.0, preset.psf_fwhm_sigma, n)),
                  *preset.psf_fwhm_range)
    ra = rng.uniform(150.0, 160.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(0.0, np.sin(np.radians(10.0)), n)))
    observed = _observed(abs_mag, log_r50, z, psf, preset)

    n_votes = rng.integers(*preset.volunteers.votes, n)
    shapes = _shapes(rng, spiral)
    seen, p_rec = arms_seen(spiral, observed["RESOLUTION"], observed["SNR"], shapes["ARM_FRACTION"], rng,
                            preset.volunteers)
    votes = volunteer_votes(spiral, seen, observed["RESOLUTION"], observed["SNR"], n_votes, rng, preset.volunteers)
    fractions = votes / n_votes[:, None]

    table = pd.DataFrame({
        "INDEX": np.arange(n, dtype=np.int64),
        "OBJID": np.arange(1, n + 1, dtype=np.int64),
        "RA": ra, "DEC": dec,
        "P_EL": fractions[:, 0], "P_CS": fractions[:, 1], "P_DK": fractions[:, 2],
        "N_VOTES": n_votes,
        "ABS_MAG": abs_mag, "R50_KPC": observed["R50_KPC"], "COLOR_GR": color,
        "REDSHIFT": z, "PSF_FWHM": psf, "RESOLUTION": observed["RESOLUTION"], "SNR": observed["SNR"],
        "MAG_R": observed["MAG_R"], "R50_ARCSEC": observed["R50_ARCSEC"],
        "TRUE_CLASS": np.where(spiral, "spiral", "elliptical"),
        "P_RECOGNISE": p_rec, "ARMS_SEEN": seen,
        "N_EL": votes[:, 0].astype(np.int16), "N_CS": votes[:, 1].astype(np.int16),
        "N_DK": votes[:, 2].astype(np.int16),
        "FLUX_NMGY": observed["FLUX_NMGY"],
        **shapes,
    })
    return table.astype(CATALOG_COLUMNS)


def _check_arguments(n, seed, layout, tile_size, size, workers):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"simulate: n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"simulate: seed must be a non-negative integer, got {seed!r}")
    if layout not in ("tiles", "files"):
        raise ConfigError(f"simulate: layout must be 'tiles' or 'files', got {layout!r}")
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise ConfigError(f"simulate: tile_size must be a positive integer, got {tile_size!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ConfigError(f"simulate: size must be an integer of at least 16 pixels, got {size!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise ConfigError(f"simulate: workers must be a positive integer or None, got {workers!r}")


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"simulate: output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputError(f"simulate: output folder {out_dir} is not empty; "
                              "choose an empty folder or pass --overwrite")
        # Only the simulator's own products go: stale tiles from a larger earlier
        # run would otherwise sit next to the new catalog. Anything else is the user's.
        for name in ("catalog.fits", "truth.parquet", "workflow.yaml"):
            (out_dir / name).unlink(missing_ok=True)
        for folder in ("tiles", "cutouts"):
            if (out_dir / folder).is_dir():
                for path in (out_dir / folder).glob("*.fits"):
                    path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_catalog(galaxies: pd.DataFrame, layout: str, path: Path, seed: int, size: int,
                   preset: SurveyPreset) -> None:
    names = list(CATALOG_COLUMNS)
    arrays = [galaxies[name].to_numpy() for name in names]
    if layout == "tiles":
        names += ["TILE", "TILE_INDEX"]
        arrays += [galaxies["TILE"].to_numpy().astype("S"), galaxies["TILE_INDEX"].to_numpy(np.int32)]
    else:
        names.append("CUTOUT")
        arrays.append(galaxies["CUTOUT"].to_numpy().astype("S"))
    table = np.rec.fromarrays(arrays, dtype=np.dtype([(name, a.dtype) for name, a in zip(names, arrays)]))
    header = [
        {"name": "SIMSEED", "value": int(seed), "comment": "relabel simulate seed"},
        {"name": "LAYOUT", "value": layout, "comment": "cutout layout (tiles | files)"},
        {"name": "CUTSIZE", "value": int(size), "comment": "cutout side, pixels"},
        {"name": "PIXSCALE", "value": preset.pixel_scale, "comment": "arcsec / pixel"},
        {"name": "PRESET", "value": preset.name, "comment": "relabel simulate --preset"},
    ]
    with atomic_path(path) as tmp:
        fitsio.write(str(tmp), table, extname="CATALOG", header=header, clobber=True)


def workflow_dict(layout: str = "tiles", size: int = 64, preset: str | SurveyPreset | None = None) -> dict:
    """Workflow file contents for a simulated survey (schema of docs/conventions.md).

    Parameters
    ----------
    layout : {"tiles", "files"}
        Cutout layout of the survey.
    size : int
        Cutout side, pixels.
    preset : str, SurveyPreset or None
        Survey kind: its bands and pixel scale; ``None``: "default".

    Returns
    -------
    dict
        Plain data, ready for ``yaml.safe_dump``.
    """
    cutouts: dict[str, Any] = {"layout": layout, "root": "."}
    if layout == "tiles":
        cutouts.update(tile_column="TILE", index_column="TILE_INDEX")
    else:
        cutouts["path_column"] = "CUTOUT"
    preset = get_preset(preset)
    cutouts.update(size=int(size), bands=list(preset.bands), pixel_scale=preset.pixel_scale)
    return {
        "name": "simulated-survey" if preset.name == "default" else f"simulated-survey-{preset.name}",
        "catalog": {"path": "catalog.fits", "hdu": 1, "id": "OBJID", "ra": "RA", "dec": "DEC",
                    "passthrough": ["MAG_R"]},
        "labels": {
            "probabilities": [
                {"column": "P_EL", "class": "elliptical", "threshold": 0.8},
                {"column": "P_CS", "class": "spiral", "threshold": 0.8},
            ],
            "keep_uncertain": False,
        },
        "intrinsic": ["ABS_MAG", "R50_KPC", "COLOR_GR"],
        "observables": [{"column": column, "best": best} for column, best in preset.observables],
        "cutouts": cutouts,
        # The documented defaults, written out so the file shows every knob.
        "bias": dict(BIAS_DEFAULTS),
        "train": dict(TRAIN_DEFAULTS),
        "run": dict(RUN_DEFAULTS),
        "cluster": dict(CLUSTER_DEFAULTS),
    }


def _assign_cutouts(galaxies: pd.DataFrame, out_dir: Path, layout: str, tile_size: int) -> Path:
    """Add each galaxy's tile and slot (TILE, TILE_INDEX) or file (CUTOUT); make and return their folder."""
    index = galaxies["INDEX"].to_numpy()
    if layout == "tiles":
        cutout_dir = out_dir / "tiles"
        galaxies["TILE"] = [f"tiles/tile_{k:05d}.fits" for k in index // tile_size]
        galaxies["TILE_INDEX"] = (index % tile_size).astype(np.int32)
    else:
        cutout_dir = out_dir / "cutouts"
        galaxies["CUTOUT"] = [f"cutouts/{objid}.fits" for objid in galaxies["OBJID"]]
    cutout_dir.mkdir(exist_ok=True)
    return cutout_dir


def simulate_survey(out_dir, n: int, seed: int = 0, layout: str | None = None, tile_size: int = 1000,
                    size: int | None = None, workers: int | None = None, progress: bool = True,
                    overwrite: bool = False, preset: str | SurveyPreset | None = None) -> SurveyPaths:
    """Simulate a survey and write it to ``out_dir`` (layout of docs/conventions.md).

    Writes the cutouts (``tiles/tile_NNNNN.fits`` cubes or ``cutouts/<OBJID>.fits``),
    then ``truth.parquet``, ``catalog.fits`` and ``workflow.yaml``. The same
    ``seed`` gives byte-identical files whatever ``workers`` is.

    Parameters
    ----------
    out_dir : str or Path
        Output folder; created if missing, must be empty unless ``overwrite``.
    n : int
        Number of galaxies.
    seed : int
        Survey seed.
    layout : {"tiles", "files", "images"} or None
        Cubes of up to ``tile_size`` cutouts, one FITS file (with a TAN WCS)
        per galaxy, or large survey images (default preset only,
        :mod:`relabel.simulate.images`); ``None``: the preset's layout.
    tile_size : int
        Cutouts per tile; also the unit of work of one worker in both layouts.
    size : int or None
        Cutout side, pixels; ``None``: the preset's (64 default, 72 sdss, 80 deep).
    workers : int or None
        Processes drawing tiles; ``1`` draws in this process; ``None``: one per
        CPU core, at most one per tile.
    progress : bool
        Show a tqdm progress bar.
    overwrite : bool
        Allow a non-empty ``out_dir``: the simulator's own earlier products in it
        are removed first, other files are left alone.
    preset : str, SurveyPreset or None
        Survey kind (bands, pixel scale, seeing, depth, population, volunteer
        model; ``relabel.simulate.presets.PRESETS``); ``None``: "default".

    Returns
    -------
    SurveyPaths

    Raises
    ------
    OutputError
        ``out_dir`` is not empty and ``overwrite`` is false, or is a file.
    ConfigError
        An argument is out of range, an unknown preset, or layout "images"
        with a preset other than "default".
    """
    preset = get_preset(preset)
    layout = preset.layout if layout is None else layout
    size = preset.size if size is None else size
    if layout == "images":  # galaxies drawn into large survey images: relabel.simulate.images
        if preset.name != "default":
            raise ConfigError(f"simulate: layout 'images' exists for preset 'default' only, got preset "
                              f"{preset.name!r}; use layout 'tiles' or 'files'")
        from relabel.simulate.images import simulate_image_survey

        return simulate_image_survey(out_dir, n, seed, size=size, workers=workers, progress=progress,
                                     overwrite=overwrite)
    _check_arguments(n, seed, layout, tile_size, size, workers)
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)
    galaxies = simulate_galaxies(int(n), int(seed), preset)
    cutout_dir = _assign_cutouts(galaxies, out_dir, layout, int(tile_size))

    draw_survey_cutouts(galaxies, out_dir, layout=layout, tile_size=int(tile_size), size=int(size),
                        seed=int(seed), workers=workers, progress=progress, preset=preset)

    paths = SurveyPaths(root=out_dir, catalog=out_dir / "catalog.fits", truth=out_dir / "truth.parquet",
                        workflow=out_dir / "workflow.yaml", cutout_dir=cutout_dir, layout=layout)
    galaxies[TRUTH_COLUMNS].to_parquet(paths.truth, index=False)
    # The catalog goes last: its presence means every cutout it points to exists.
    _write_catalog(galaxies, layout, paths.catalog, seed, size, preset)
    with open(paths.workflow, "w") as stream:
        yaml.safe_dump(workflow_dict(layout, size, preset), stream, sort_keys=False)
    return paths
