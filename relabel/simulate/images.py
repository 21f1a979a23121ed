"""``relabel simulate --layout images``: the survey's galaxies drawn into a few large survey images.

What surveys publish: one image per band and field, thousands of pixels a side, with
a TAN WCS (here slightly rotated, as mosaics are), some tile-compressed (``.fits.fz``,
fpack's RICE_1 with quantisation, row tiles), and a catalog of RA/Dec. Each galaxy is
drawn by :func:`relabel.simulate.drawing.draw_cutout` exactly as in the other layouts
(its own stamp, noise included) and pasted at a slot of a grid of stamp-sized cells,
so a stamp cut back at its RA/Dec equals the galaxy drawn alone, pixel for pixel, on
an uncompressed image. Cells are filled at random (about half), the rest is sky noise.
The first row and column of cells hang a quarter stamp off the image: those galaxies
come back ``partial_edge``. The g image sits a few pixels off the r image (its own
CRPIX), as bands of separate mosaics do, so bands must be aligned by WCS.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import fitsio
import numpy as np
import yaml

from relabel.simulate.drawing import BAND_NOISE, BANDS, PIXEL_SCALE, draw_cutout, galaxy_rng
from relabel.simulate.survey import (
    CATALOG_COLUMNS,
    TRUTH_COLUMNS,
    SurveyPaths,
    _check_arguments,
    _prepare_output,
    simulate_galaxies,
    workflow_dict,
)

IMAGE_SIZE = 2048
"""Side of each simulated survey image, pixels (13.5 arcmin at 0.396 arcsec)."""

BAND_OFFSETS = {"g": (3, -2), "r": (0, 0)}
"""(x, y) pixel offset of each band's image grid against the r grid: the bands' files differ in CRPIX."""

FILL_FRACTION = 0.5
"""Share of an image's stamp cells holding a galaxy."""

ROTATION_DEG = 0.7
"""Rotation of image k's pixel grid against north is k x this: real mosaics are not exactly north-up."""

IMAGE_COLUMN = "IMAGE"


def image_name(k: int, compressed: bool) -> str:
    """Path template of image k, relative to the survey folder.

    Parameters
    ----------
    k : int
        Image number.
    compressed : bool
        Tile-compressed (``.fits.fz``); the simulator compresses every other image.

    Returns
    -------
    str
        With ``{band}`` where the band goes.

    Examples
    --------
    >>> image_name(3, compressed=True)
    'images/field_003_{band}.fits.fz'
    """
    return f"images/field_{k:03d}_{{band}}.fits" + (".fz" if compressed else "")


def image_wcs(k: int, image_size: int, band: str = "r"):
    """The TAN WCS of image k in one band: fields tile the sky in RA at Dec 2, each slightly rotated.

    Parameters
    ----------
    k : int
        Image number.
    image_size : int
        Image side, pixels.
    band : str
        A key of :data:`BAND_OFFSETS`: its grid is shifted against r.

    Returns
    -------
    astropy.wcs.WCS
    """
    from astropy.wcs import WCS

    step = image_size * PIXEL_SCALE / 3600.0
    dx, dy = BAND_OFFSETS[band]
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0 + 1.05 * step * k / np.cos(np.radians(2.0)), 2.0]
    wcs.wcs.crpix = [(image_size + 1) / 2.0 - dx, (image_size + 1) / 2.0 - dy]
    a = np.radians(ROTATION_DEG * k)
    scale = PIXEL_SCALE / 3600.0
    wcs.wcs.cd = np.array([[-np.cos(a), np.sin(a)], [np.sin(a), np.cos(a)]]) * scale
    return wcs


def cell_corners(image_size: int, size: int) -> np.ndarray:
    """Lower-left 0-based (x, y) corners in the r grid of the stamp cells: the first row and column hang off.

    Parameters
    ----------
    image_size, size : int
        Image and stamp sides, pixels.

    Returns
    -------
    numpy.ndarray, shape (n_cells, 2)

    Examples
    --------
    >>> cell_corners(256, 64)[:3].tolist()
    [[-16, -16], [48, -16], [112, -16]]
    """
    start = -(size // 4)
    steps = np.arange(start, image_size - size + 1, size)
    xx, yy = np.meshgrid(steps, steps)
    return np.column_stack([xx.ravel(), yy.ravel()])


def place_galaxies(n: int, image_size: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image number and r-grid corner (x, y) of each of ``n`` galaxies, cells chosen at random.

    Parameters
    ----------
    n : int
        Galaxies.
    image_size, size : int
        Image and stamp sides, pixels.
    seed : int
        Survey seed.

    Returns
    -------
    image : numpy.ndarray, shape (n,)
    corner : numpy.ndarray, shape (n, 2)
    """
    cells = cell_corners(image_size, size)
    per_image = max(1, int(len(cells) * FILL_FRACTION))
    n_images = -(-n // per_image)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    image = np.repeat(np.arange(n_images), per_image)[:n]
    corner = np.concatenate([cells[rng.choice(len(cells), per_image, replace=False)] for _ in range(n_images)])[:n]
    return image, corner


def _header(wcs) -> list[dict]:
    # The CD matrix is written by hand below: PC + CDELT would say the same twice.
    dropped = ("PC", "CDELT", "DATEREF", "MJDREF")
    cards = [c for c in wcs.to_header().cards if c.keyword and not c.keyword.startswith(dropped)]
    records = [{"name": c.keyword, "value": c.value, "comment": c.comment} for c in cards]
    records += [{"name": f"CD{i + 1}_{j + 1}", "value": float(wcs.wcs.cd[i, j])} for i in range(2) for j in range(2)]
    return records + [{"name": "BUNIT", "value": "nanomaggy"}, {"name": "MAGZP", "value": 22.5}]


def draw_image(task: dict) -> int:
    """Draw and write every band of one survey image; worker entry point.

    Parameters
    ----------
    task : dict
        ``k``, ``path`` (template), ``image_size``, ``size``, ``seed``, ``rows``
        (truth-row dicts) and ``corners`` (their r-grid corners).

    Returns
    -------
    int
        Galaxies drawn.
    """
    size = int(task["size"])
    stamps = [draw_cutout(row, galaxy_rng(task["seed"], row["INDEX"]), size) for row in task["rows"]]
    write_survey_image(int(task["k"]), task["path"], stamps, task["corners"], int(task["image_size"]),
                       int(task["seed"]))
    return len(stamps)


def write_survey_image(k: int, path: str, stamps, corners, image_size: int, seed: int) -> None:
    """Paste stamps (bands in BANDS order, size x size) at their r-grid corners into sky noise; write each band.

    Parameters
    ----------
    k : int
        Image number (its WCS, :func:`image_wcs`).
    path : str
        Path template with ``{band}``; a ``.fz`` ending writes RICE_1 tile compression (q = 16).
    stamps : sequence of numpy.ndarray
        (len(BANDS), size, size) each, nanomaggies.
    corners : sequence of (int, int)
        Lower-left 0-based (x, y) of each stamp in the r grid (:func:`place_galaxies`).
    image_size : int
        Image side, pixels.
    seed : int
        Seeds the sky noise between the stamps.
    """
    size = stamps[0].shape[-1] if len(stamps) else 1
    margin = max(abs(v) for offset in BAND_OFFSETS.values() for v in offset) + size
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11, int(k)]))
    canvas = {}
    for band in BANDS:
        electrons, sky = BAND_NOISE[band]
        canvas[band] = rng.normal(0.0, np.sqrt(sky) / electrons, (image_size + 2 * margin,) * 2).astype(np.float32)
    for stamp, (x0, y0) in zip(stamps, corners):
        for b, band in enumerate(BANDS):
            canvas[band][margin + y0:margin + y0 + size, margin + x0:margin + x0 + size] = stamp[b]
    for band in BANDS:
        dx, dy = BAND_OFFSETS[band]
        data = canvas[band][margin + dy:margin + dy + image_size, margin + dx:margin + dx + image_size]
        target = Path(path.replace("{band}", band))
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        compress = {"compress": "rice", "qlevel": 16.0} if target.suffix == ".fz" else {}
        fitsio.write(str(tmp), np.ascontiguousarray(data), header=_header(image_wcs(k, image_size, band)), **compress)
        os.replace(tmp, target)


def sky_positions(image: np.ndarray, corner: np.ndarray, size: int,
                  image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (degrees) of galaxies centred on their stamps, each through its image's r-band WCS.

    Parameters
    ----------
    image, corner : numpy.ndarray
        From :func:`place_galaxies`.
    size, image_size : int
        Stamp and image sides, pixels.

    Returns
    -------
    ra, dec : numpy.ndarray
    """
    ra, dec = np.empty(len(image)), np.empty(len(image))
    centre = corner + (size - 1) / 2.0
    for k in np.unique(image):
        on = image == k
        ra[on], dec[on] = image_wcs(int(k), int(image_size)).all_pix2world(centre[on, 0], centre[on, 1], 0)
    return np.mod(ra, 360.0), dec


def simulate_image_survey(out_dir, n: int, seed: int = 0, size: int = 64, image_size: int = IMAGE_SIZE,
                          workers: int | None = None, progress: bool = True, overwrite: bool = False) -> SurveyPaths:
    """Simulate a survey whose cutouts live in large survey images (see the module docstring).

    Writes ``images/field_NNN_{g,r}.fits[.fz]``, then ``truth.parquet``, ``catalog.fits``
    (RA/Dec from each galaxy's pixel position through its image's WCS, and the
    image's path template in column IMAGE) and ``workflow.yaml`` (layout "images").

    Parameters
    ----------
    out_dir : str or Path
        Output folder; created if missing, must be empty unless ``overwrite``.
    n, seed : int
        Number of galaxies and survey seed (the same galaxies as the other layouts).
    size : int
        Stamp side, pixels (0.396 arcsec each).
    image_size : int
        Side of each survey image, pixels; images hold about half as many galaxies as stamp cells.
    workers : int or None
        Processes, one image each; ``None``: one per CPU core.
    progress : bool
        Print one line per image written.
    overwrite : bool
        Allow a non-empty ``out_dir`` (the simulator's own earlier products are removed).

    Returns
    -------
    SurveyPaths
    """
    _check_arguments(n, seed, "files", 1, size, workers)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 2 * size:
        from relabel.errors import ConfigError

        raise ConfigError(f"simulate: image_size must be an integer of at least 2 x size = {2 * size}, "
                          f"got {image_size!r}")
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)
    image_dir = out_dir / "images"
    image_dir.mkdir(exist_ok=True)
    for old in image_dir.glob("field_*.fits*"):
        old.unlink()
    galaxies = simulate_galaxies(int(n), int(seed))
    image, corner = place_galaxies(len(galaxies), int(image_size), int(size), int(seed))
    names = [image_name(k, compressed=k % 2 == 1) for k in range(int(image.max()) + 1)]
    galaxies["RA"], galaxies["DEC"] = sky_positions(image, corner, int(size), int(image_size))
    galaxies[IMAGE_COLUMN] = [names[k] for k in image]
    tasks = [{"k": k, "path": str(out_dir / names[k]), "image_size": int(image_size), "size": int(size),
              "seed": int(seed), "rows": galaxies[image == k].to_dict("records"),
              "corners": corner[image == k].tolist()} for k in range(len(names))]
    _draw_images(tasks, workers, progress)
    paths = SurveyPaths(root=out_dir, catalog=out_dir / "catalog.fits", truth=out_dir / "truth.parquet",
                        workflow=out_dir / "workflow.yaml", cutout_dir=image_dir, layout="images")
    galaxies[TRUTH_COLUMNS].to_parquet(paths.truth, index=False)
    write_image_catalog(galaxies, paths.catalog, seed, size)  # last: its presence means the images exist
    workflow = workflow_dict("files", size)
    workflow["cutouts"] = {"layout": "images", "root": ".", "image_column": IMAGE_COLUMN, "size": int(size),
                           "bands": list(BANDS), "pixel_scale": PIXEL_SCALE}
    with open(paths.workflow, "w") as stream:
        yaml.safe_dump(workflow, stream, sort_keys=False)
    return paths


def _draw_images(tasks: list[dict], workers: int | None, progress: bool) -> None:
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers == 1:
        done: Iterator[int] = map(draw_image, tasks)
    else:
        # spawn, not fork: GalSim/FFTW state must not be copied into the children.
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        done = pool.map(draw_image, tasks)
    for task, count in zip(tasks, done):
        if progress:
            print(f"simulate: {task['path']}: {count} galaxies")
    if workers > 1:
        pool.shutdown()


def write_image_catalog(galaxies, path: Path, seed: int, size: int) -> None:
    """Write the catalog of an image survey: the simulator's columns and each galaxy's image (IMAGE), FITS.

    Parameters
    ----------
    galaxies : pandas.DataFrame
        :data:`CATALOG_COLUMNS` and IMAGE.
    path : Path
        The catalog file, replaced atomically.
    seed, size : int
        Survey seed and stamp side, recorded in the header.
    """
    names = [*CATALOG_COLUMNS, IMAGE_COLUMN]
    arrays = [galaxies[name].to_numpy() for name in CATALOG_COLUMNS] + [galaxies[IMAGE_COLUMN].to_numpy().astype("S")]
    header = [
        {"name": "SIMSEED", "value": int(seed), "comment": "relabel simulate seed"},
        {"name": "LAYOUT", "value": "images", "comment": "cutout layout (survey images + WCS)"},
        {"name": "CUTSIZE", "value": int(size), "comment": "cutout side, pixels"},
        {"name": "PIXSCALE", "value": PIXEL_SCALE, "comment": "arcsec / pixel"},
    ]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    table = np.rec.fromarrays(arrays, dtype=np.dtype([(name, a.dtype) for name, a in zip(names, arrays)]))
    fitsio.write(str(tmp), table, extname="CATALOG", header=header)
    os.replace(tmp, path)
