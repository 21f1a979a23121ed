"""Draw the simulated survey's cutouts with GalSim and write them as FITS tiles or files.

Every galaxy is drawn from its truth row (all shape parameters are decided in
:mod:`relabel.simulate.survey`) and one random stream seeded from ``(seed, index)``,
so a galaxy's pixels do not depend on which worker draws it or in what order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import fitsio
import numpy as np

from relabel.files import atomic_path
from relabel.optional import require
from relabel.progress import progress_bar
from relabel.simulate.presets import DEFAULT, NANOMAGGY_ZERO_POINT, SurveyPreset

galsim = require("galsim", "sim", "the survey simulator")

MOFFAT_BETA = 3.0
"""Moffat index of the seeing PSF: beta ~ 3 matches SDSS PSF wings at the few-% level."""

TRUNCATION_HLR = 5.0
"""Sersic profiles are cut at this many half-light radii: keeps GalSim's FFT
boxes small (speed) and, at a fixed ratio, lets GalSim reuse one table per n."""

ARM_SEGMENTS = 9
"""Elongated Gaussian segments per spiral arm: enough for a continuous-looking
arm at SDSS resolution; each one costs a k-space evaluation."""

STRUCTURE_BLUER_MAG = 0.3
"""Arms and star-forming knots are this much bluer in g - r than the galaxy as a
whole; the smooth disk and bulge are redder so the integrated colour stays COLOR_GR.
Spiral structure is young stars, which is why it stands out in blue images."""

# The default preset's values under their old names, for code that imports them.
PIXEL_SCALE = DEFAULT.pixel_scale
BANDS = DEFAULT.bands
BAND_NOISE = {band: DEFAULT.electrons(band) for band in DEFAULT.bands}
"""Per band of the default preset: photo-electrons per nanomaggy and sky photo-electrons per pixel."""


def galaxy_rng(seed: int, index: int) -> np.random.Generator:
    """Random stream of one galaxy, independent of workers and tile boundaries.

    Parameters
    ----------
    seed : int
        Survey seed.
    index : int
        Galaxy index (row number in the catalog).

    Returns
    -------
    numpy.random.Generator
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 1]))


GSPARAMS = galsim.GSParams(minimum_fft_size=64)
"""GalSim's default 128-pixel minimum FFT is 4x the work a 64-pixel stamp needs;
larger boxes are still chosen whenever a profile's extent asks for them."""

STRUCTURE_GSPARAMS = galsim.GSParams(minimum_fft_size=64, folding_threshold=0.02, stepk_minimum_hlr=2.0)
"""Arms and knots are dozens of components, each costing one pass over the FFT
grid, and GalSim sizes that grid from the most elongated, most offset one.
Their light is a minority of the galaxy's and already clipped to the stamp,
so a looser folding criterion costs no visible wrap-around and halves the time."""


def _projection(row) -> np.ndarray:
    # The same area-preserving matrix GalSim applies in .shear(q, beta): used to
    # find which face-on disk features land on the stamp.
    shear = galsim.Shear(q=float(row["AXIS_RATIO"]), beta=float(row["POSITION_ANGLE"]) * galsim.degrees)
    return shear.getMatrix()


def _spiral_arms(row, rng: np.random.Generator, disk_scale: float, flux: float):
    """Face-on logarithmic arms: centres (n, 2), fluxes, sigmas, axis ratios, angles."""
    n_arms = int(row["N_ARMS"])
    tan_pitch = np.tan(np.radians(row["PITCH_DEG"]))
    phase = rng.uniform(0.0, 2.0 * np.pi)
    # Arms run over the bright part of the disk, 0.4 to 3.5 scale lengths.
    ln_r = np.tile(np.linspace(np.log(0.4), np.log(3.5), ARM_SEGMENTS), n_arms)
    radius = disk_scale * np.exp(ln_r)
    step = (np.log(3.5) - np.log(0.4)) / (ARM_SEGMENTS - 1) / tan_pitch
    arm_offset = np.repeat(2.0 * np.pi * np.arange(n_arms) / n_arms + rng.normal(0.0, 0.15, n_arms),
                           ARM_SEGMENTS)
    theta = phase + arm_offset + ln_r / tan_pitch + rng.normal(0.0, 0.08, ln_r.size)
    # Arm surface brightness follows the disk; the segments farther out are longer.
    weight = np.exp(-radius / disk_scale) * radius
    fluxes = flux * weight / weight.sum()
    # Along the arm: half the segment spacing; across: a narrow lane.
    length = 0.5 * radius * step * np.sqrt(1.0 + tan_pitch**2)
    width = 0.12 * disk_scale + 0.05 * radius
    sigma = np.sqrt(length * width)
    axis_ratio = np.minimum(width / length, 1.0)
    # The tangent of r = a exp(b theta) makes the angle pi/2 - pitch with the radius.
    tangent = theta + np.pi / 2.0 - np.arctan(tan_pitch)
    centres = np.column_stack([radius * np.cos(theta), radius * np.sin(theta)])
    return centres, fluxes, sigma, axis_ratio, tangent


def galaxy_profiles(row, rng: np.random.Generator, size: int, pixel_scale: float = PIXEL_SCALE):
    """GalSim profiles (before the PSF) of one galaxy, arcsec and nanomaggies.

    Parameters
    ----------
    row : mapping
        Truth row with TRUE_CLASS, FLUX_NMGY, R50_ARCSEC, SERSIC_N, AXIS_RATIO,
        POSITION_ANGLE, PSF_FWHM, and for spirals BULGE_FRACTION,
        BULGE_R50_RATIO, ARM_FRACTION, KNOT_FRACTION, N_KNOTS, N_ARMS, PITCH_DEG.
    rng : numpy.random.Generator
        The galaxy's random stream (arm phase and knot placement).
    size : int
        Stamp side, pixels: arm segments and knots that fall outside it are dropped.
    pixel_scale : float
        Arcsec / pixel of the stamp.

    Returns
    -------
    smooth : galsim.GSObject
        Sersic body (elliptical) or truncated exponential disk plus bulge (spiral).
    structure : galsim.GSObject or None
        Spiral arms and star-forming knots (spirals), drawn separately so that
        their many components are evaluated on a stamp-sized FFT grid.
    """
    flux = float(row["FLUX_NMGY"])
    r50 = float(row["R50_ARCSEC"])
    beta = float(row["POSITION_ANGLE"]) * galsim.degrees
    q = float(row["AXIS_RATIO"])
    if row["TRUE_CLASS"] == "elliptical":
        gal = galsim.Sersic(float(row["SERSIC_N"]), half_light_radius=r50, trunc=TRUNCATION_HLR * r50,
                            flux=flux, gsparams=GSPARAMS)
        return gal.shear(q=q, beta=beta), None

    bulge_flux = flux * float(row["BULGE_FRACTION"])
    disk_flux = flux - bulge_flux
    arm_flux = disk_flux * float(row["ARM_FRACTION"])
    knot_flux = disk_flux * float(row["KNOT_FRACTION"])
    # The disk carries the catalogued half-light radius; the small bulge makes
    # the drawn galaxy slightly more concentrated than R50 says (< 10 %).
    disk_scale = r50 / 1.6783
    disk = galsim.Sersic(1.0, half_light_radius=r50, trunc=TRUNCATION_HLR * r50,
                         flux=disk_flux - arm_flux - knot_flux, gsparams=GSPARAMS).shear(q=q, beta=beta)
    bulge_r50 = r50 * float(row["BULGE_R50_RATIO"])
    bulge = galsim.Sersic(4.0, half_light_radius=bulge_r50, trunc=TRUNCATION_HLR * bulge_r50,
                          flux=bulge_flux, gsparams=GSPARAMS)
    # Bulges are rounder than the disks they sit in.
    bulge = bulge.shear(q=max(q, 0.7), beta=beta)

    centres, fluxes, sigmas, ratios, angles = _spiral_arms(row, rng, disk_scale, arm_flux)
    n_knots = int(row["N_KNOTS"])
    # HII regions trace the disk light (r ~ Gamma(2, h) is an exponential disk's
    # radial light distribution) and are unresolved at SDSS distances.
    knot_r = rng.gamma(2.0, disk_scale, n_knots)
    knot_theta = rng.uniform(0.0, 2.0 * np.pi, n_knots)
    knots = np.column_stack([knot_r * np.cos(knot_theta), knot_r * np.sin(knot_theta)])
    # Features are placed in the projected (sky) frame, not by shearing their
    # sum: GalSim sizes the FFT box from the largest face-on offset, which for
    # an edge-on disk is several times the stamp. Features that land off the
    # stamp are dropped; only their PSF wings would have reached it.
    reach = 0.5 * size * pixel_scale + float(row["PSF_FWHM"])
    matrix = _projection(row)
    parts = []
    for (x, y), f, s, r, a in zip(centres, fluxes, sigmas, ratios, angles):
        sky = matrix @ (x, y)
        if np.all(np.abs(sky) < reach):
            jac = matrix @ galsim.Shear(q=r, beta=a * galsim.radians).getMatrix()
            seg = galsim.Gaussian(sigma=s, flux=f, gsparams=STRUCTURE_GSPARAMS)
            parts.append(galsim.Transform(seg, jac=jac, offset=galsim.PositionD(*sky)))
    for x, y in knots:
        sky = matrix @ (x, y)
        if np.all(np.abs(sky) < reach):
            parts.append(galsim.DeltaFunction(flux=knot_flux / n_knots, gsparams=STRUCTURE_GSPARAMS).shift(*sky))
    structure = galsim.Sum(parts) if parts else None
    return galsim.Sum([disk, bulge]), structure


def band_ratios(row, colour_per_gr: float = 1.0) -> tuple[float, float]:
    """Band / r flux ratios of the smooth light and of the arms and knots of one galaxy.

    Parameters
    ----------
    row : mapping
        Truth row with TRUE_CLASS, COLOR_GR and, for spirals, BULGE_FRACTION,
        ARM_FRACTION and KNOT_FRACTION.
    colour_per_gr : float
        The band's colour against r in units of g - r
        (:class:`relabel.simulate.presets.BandNoise`): 1 is g, 0 is r.

    Returns
    -------
    smooth, structure : float
        Multiply an r-band image of that component to get its image in the band.
        Their flux-weighted mean is exactly ``10 ** (-0.4 * colour_per_gr * COLOR_GR)``.

    Examples
    --------
    >>> row = {"TRUE_CLASS": "spiral", "COLOR_GR": 0.5, "BULGE_FRACTION": 0.2,
    ...        "ARM_FRACTION": 0.3, "KNOT_FRACTION": 0.1}
    >>> smooth, structure = band_ratios(row)
    >>> share = 0.8 * 0.4
    >>> round((1 - share) * smooth + share * structure, 6) == round(10 ** (-0.2), 6)
    True
    >>> structure > 10 ** (-0.2) > smooth
    True
    """
    if colour_per_gr == 0.0:
        return 1.0, 1.0
    total = 10.0 ** (-0.4 * (colour_per_gr * float(row["COLOR_GR"])))
    if row["TRUE_CLASS"] == "elliptical":
        return total, total
    share = (1.0 - float(row["BULGE_FRACTION"])) * (float(row["ARM_FRACTION"]) + float(row["KNOT_FRACTION"]))
    structure = total * 10.0 ** (0.4 * (colour_per_gr * STRUCTURE_BLUER_MAG))
    # share < 0.6 and the structure is 1.32x the mean ratio, so the smooth part stays positive.
    smooth = (total - share * structure) / (1.0 - share)
    return smooth, structure


def draw_cutout(row, rng: np.random.Generator, size: int, preset: SurveyPreset = DEFAULT) -> np.ndarray:
    """Draw one noisy cutout (nanomaggies, float32, shape ``(len(preset.bands), size, size)``).

    The profiles are convolved with a Moffat PSF of the galaxy's PSF_FWHM and
    the pixel, centred on the stamp; each other band's image is the r image
    with each component scaled by its colour (:func:`band_ratios`); the same
    PSF in every band (seeing is ~5 % broader in g, ignored). Each band gets
    independent Gaussian noise of variance sky + source photo-electrons (the
    Gaussian limit of Poisson noise), in band order.

    Parameters
    ----------
    row : mapping
        Truth row (see :func:`galaxy_profiles`).
    rng : numpy.random.Generator
        The galaxy's random stream.
    size : int
        Stamp side, pixels.
    preset : SurveyPreset
        Bands, pixel scale and depth.

    Returns
    -------
    numpy.ndarray
    """
    psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=float(row["PSF_FWHM"]), gsparams=GSPARAMS)
    smooth, structure = galaxy_profiles(row, rng, size, preset.pixel_scale)
    image = galsim.ImageD(size, size, scale=preset.pixel_scale)
    galsim.Convolve(smooth, psf).drawImage(image=image)
    smooth_r = image.array.copy()
    structure_r = np.zeros_like(smooth_r)
    if structure is not None:
        psf = psf.withGSParams(STRUCTURE_GSPARAMS)
        image.setZero()
        galsim.Convolve(structure, psf).drawImage(image=image)
        structure_r = image.array
    out = np.empty((len(preset.bands), size, size), dtype=np.float32)
    for b, band in enumerate(preset.bands):
        if band == "r":
            pixels = smooth_r + structure_r
        else:
            smooth_ratio, structure_ratio = band_ratios(row, preset.band_noise[band].colour_per_gr)
            pixels = smooth_ratio * smooth_r + structure_ratio * structure_r
        electrons_per_nmgy, sky_electrons = preset.electrons(band)
        variance = (sky_electrons + np.clip(pixels, 0.0, None) * electrons_per_nmgy) / electrons_per_nmgy**2
        out[b] = pixels + rng.standard_normal(pixels.shape) * np.sqrt(variance)
    return out


def _image_header(size: int, preset: SurveyPreset) -> list[dict]:
    sky_sigma = {band: float(np.sqrt(preset.electrons(band)[1]) / preset.electrons(band)[0]) for band in preset.bands}
    return [
        {"name": "BANDS", "value": ",".join(preset.bands), "comment": "bands along axis 1 of the cube"},
        {"name": "PIXSCALE", "value": preset.pixel_scale, "comment": "arcsec / pixel"},
        {"name": "BUNIT", "value": "nanomaggy", "comment": "m = 22.5 - 2.5 log10(flux)"},
        {"name": "MAGZP", "value": NANOMAGGY_ZERO_POINT, "comment": "zero point of the pixel values"},
        *({"name": f"SKYSIG_{band.upper()}", "value": sky_sigma[band],
           "comment": f"{band}-band sky noise per pixel, nanomaggy"} for band in preset.bands),
        {"name": "PSFMODEL", "value": f"Moffat beta={MOFFAT_BETA:g}", "comment": "FWHM per galaxy in catalog"},
        {"name": "CUTSIZE", "value": int(size), "comment": "cutout side, pixels"},
        {"name": "PRESET", "value": preset.name, "comment": "relabel simulate --preset"},
    ]


def _write_atomic(path: Path, data: np.ndarray, header: list[dict]) -> None:
    with atomic_path(path) as tmp:
        fitsio.write(str(tmp), data, header=header, clobber=True)


def cutout_wcs_header(ra: float, dec: float, size: int, pixel_scale: float = PIXEL_SCALE) -> list[dict]:
    """TAN WCS keywords of a cutout whose central pixel centre is at (ra, dec).

    WCSAXES = 2: the celestial axes are the image's first two; a band axis
    (NAXIS3) has no world coordinate.

    Parameters
    ----------
    ra, dec : float
        Centre, degrees.
    size : int
        Stamp side, pixels.
    pixel_scale : float
        Arcsec / pixel.

    Returns
    -------
    list of dict
        fitsio header records.
    """
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    # GalSim centres the profile on the stamp's true centre: (size + 1) / 2 in FITS pixels.
    wcs.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    wcs.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    records = []
    for card in wcs.to_header().cards:
        if card.keyword in ("DATEREF", "MJDREF") or not card.keyword:
            continue
        records.append({"name": card.keyword, "value": card.value, "comment": card.comment})
    return records


def draw_task(task: dict) -> int:
    """Draw and write one tile (or one group of per-object files); worker entry point.

    Parameters
    ----------
    task : dict
        ``rows`` (list of truth-row dicts with INDEX, OBJID, RA, DEC), ``seed``,
        ``size``, ``layout`` ("tiles" or "files"), ``preset``
        (:class:`SurveyPreset`), ``path`` (tile file) or ``paths`` (one file per row).

    Returns
    -------
    int
        Number of galaxies drawn.
    """
    size = int(task["size"])
    preset = task.get("preset", DEFAULT)
    header = _image_header(size, preset)
    rows = task["rows"]
    if task["layout"] == "tiles":
        cube = np.empty((len(rows), len(preset.bands), size, size), dtype=np.float32)
        for k, row in enumerate(rows):
            cube[k] = draw_cutout(row, galaxy_rng(task["seed"], row["INDEX"]), size, preset)
        _write_atomic(Path(task["path"]), cube, header)
    else:
        for row, path in zip(rows, task["paths"]):
            image = draw_cutout(row, galaxy_rng(task["seed"], row["INDEX"]), size, preset)
            if len(preset.bands) == 1:
                # One band: a plain 2D image, as survey cutout services serve it.
                image = image[0]
            records = header + cutout_wcs_header(row["RA"], row["DEC"], size, preset.pixel_scale)
            records.append({"name": "OBJID", "value": int(row["OBJID"]), "comment": "catalog OBJID"})
            _write_atomic(Path(path), image, records)
    return len(rows)


DRAW_COLUMNS = [
    "INDEX", "OBJID", "RA", "DEC", "PSF_FWHM", "R50_ARCSEC", "TRUE_CLASS", "FLUX_NMGY", "COLOR_GR",
    "SERSIC_N", "AXIS_RATIO", "POSITION_ANGLE", "BULGE_FRACTION", "BULGE_R50_RATIO",
    "ARM_FRACTION", "KNOT_FRACTION", "N_KNOTS", "N_ARMS", "PITCH_DEG",
]


def _draw_tasks(galaxies, out_dir, layout, tile_size, size, seed, preset) -> Iterator[dict]:
    columns = {name: galaxies[name].to_numpy() for name in DRAW_COLUMNS}
    for start in range(0, len(galaxies), tile_size):
        stop = min(start + tile_size, len(galaxies))
        sliced = {name: values[start:stop].tolist() for name, values in columns.items()}
        rows = [dict(zip(sliced, row)) for row in zip(*sliced.values())]
        task = {"rows": rows, "seed": int(seed), "size": int(size), "layout": layout, "preset": preset}
        if layout == "tiles":
            task["path"] = str(out_dir / galaxies["TILE"].iat[start])
        else:
            task["paths"] = [str(out_dir / p) for p in galaxies["CUTOUT"].iloc[start:stop]]
        yield task


def _run_tasks(tasks: Iterator[dict], n_tasks: int, n: int, workers: int, progress: bool) -> None:
    with progress_bar(n, "simulate", "gal", progress) as bar:
        if workers == 1 or n_tasks == 1:
            for task in tasks:
                bar.update(draw_task(task))
            return
        # spawn, not fork: GalSim/FFTW state and threads must not be copied into
        # the children; a bounded queue keeps the pickled rows of a huge survey
        # out of memory until a worker is ready.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending = set()
            for task in tasks:
                pending.add(pool.submit(draw_task, task))
                if len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    bar.update(sum(f.result() for f in done))
            for future in pending:
                bar.update(future.result())


def draw_survey_cutouts(galaxies, out_dir, layout: str, tile_size: int, size: int, seed: int,
                        workers: int | None = None, progress: bool = True,
                        preset: SurveyPreset = DEFAULT) -> None:
    """Draw and write every cutout of a simulated survey, one tile per task.

    Parameters
    ----------
    galaxies : pandas.DataFrame
        Output of :func:`relabel.simulate.simulate_galaxies` with TILE (layout
        "tiles") or CUTOUT (layout "files") paths relative to ``out_dir``.
    out_dir : Path
        Survey folder.
    layout : {"tiles", "files"}
    tile_size : int
        Galaxies per task (and per tile).
    size : int
        Stamp side, pixels.
    seed : int
        Survey seed.
    workers : int or None
        Processes; ``1`` draws here; ``None``: one per CPU core, at most one per task.
    progress : bool
        Show a tqdm progress bar.
    preset : SurveyPreset
        Bands, pixel scale and depth of the cutouts.
    """
    n = len(galaxies)
    n_tasks = -(-n // tile_size)
    workers = min(workers or os.cpu_count() or 1, n_tasks)
    tasks = _draw_tasks(galaxies, Path(out_dir), layout, tile_size, size, seed, preset)
    _run_tasks(tasks, n_tasks, n, workers, progress)
