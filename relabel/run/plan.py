"""Sharding: cut a catalog into shards, the units of Dask work, without loading it whole.

A shard is a group of catalog rows that a worker processes in one task. For the tile
layout the rows of one tile stay together, so each worker opens a tile once; a
catalog sorted by tile gives contiguous row ranges (nothing but two integers in the
task graph), an unsorted one gives explicit row lists grouped by tile. For survey
images (layout "images") the rows of an image are ordered by pixel row, so that shards
are strips of their image, and small images are packed whole into shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from relabel.catalog.coordinates import sky_degrees, to_degrees
from relabel.catalog.reader import Catalog
from relabel.config import Workflow
from relabel.errors import CatalogError

#: Rows read per chunk while planning: a few columns of a 50M-row catalog never sit in memory at once.
PLAN_CHUNK_ROWS = 2_000_000


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of the catalog, or the explicit ``rows`` (sorted by tile) when given.

    Layout "images": ``image`` is the survey image all the shard's rows lie on ("" for
    none); a shard packing several small images has ``image`` None and ``images``, the
    runs ``(image, number of rows)`` in the order of its rows.
    """

    id: int
    start: int
    stop: int
    rows: tuple[int, ...] | None = None
    image: str | None = None
    images: tuple[tuple[str, int], ...] | None = None

    @property
    def image_names(self) -> list[str]:
        """Every survey image the shard's rows lie on (layout "images"; empty otherwise)."""
        if self.images is not None:
            return [name for name, _ in self.images]
        return [self.image] if self.image is not None else []

    def row_images(self) -> np.ndarray:
        """The image of each of :meth:`row_numbers`, object array (layout "images")."""
        if self.images is None:
            return np.full(self.n_rows, self.image or "", dtype=object)
        names, counts = zip(*self.images)
        return np.repeat(np.array(names, dtype=object), counts)

    @property
    def n_rows(self) -> int:
        """Rows in the shard."""
        return len(self.rows) if self.rows is not None else self.stop - self.start

    @property
    def name(self) -> str:
        """Stable file stem: the same plan gives the same names, so a rerun overwrites or skips them."""
        return f"part-{self.id:06d}"

    def row_numbers(self) -> np.ndarray:
        """The shard's 0-based catalog row numbers (int64), in the order its rows are processed.

        Catalog order for a range; as planned for explicit rows (grouped by tile, or by
        image and pixel row). Output rows carry their catalog row number (column ``row``).
        """
        if self.rows is not None:
            return np.asarray(self.rows, dtype=np.int64)
        return np.arange(self.start, self.stop, dtype=np.int64)


def plan_digest(shards: list[Shard]) -> str:
    """A digest of which catalog rows (and images) each shard holds, for ``--resume`` to compare plans.

    Shard names are only positions in a plan: a run resumed under another plan (another
    relabel's row ordering or image packing) would skip a written shard whose rows
    differ from the new one's, losing some rows and writing others twice.

    Parameters
    ----------
    shards : list of Shard
        A plan from :func:`plan_shards`.

    Returns
    -------
    str
        32 hexadecimal digits (BLAKE2b); equal plans give equal digests.
    """
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for shard in shards:
        digest.update(f"{shard.id}:{shard.start}:{shard.stop}:{shard.rows is not None}".encode())
        if shard.rows is not None:
            digest.update(np.asarray(shard.rows, dtype="<i8").tobytes())
        digest.update("|".join(shard.image_names).encode())
    return digest.hexdigest()


def plan_shards(catalog: Catalog, workflow: Workflow, shard_size: int) -> list[Shard]:
    """Shards of at most about ``shard_size`` rows; tile rows kept together where the layout has tiles.

    Parameters
    ----------
    catalog : Catalog
        The opened catalog.
    workflow : Workflow
        Its cutout layout decides whether rows are grouped by tile or by image.
    shard_size : int
        Rows per shard (a tile's rows may make one a little larger).

    Returns
    -------
    list of Shard
        Covering every row once, in catalog order.

    Examples
    --------
    >>> cuts = _cut_runs(np.array([0, 3, 5, 9]), shard_size=4)   # runs [0,3) [3,5) [5,9)
    >>> [(s.start, s.stop) for s in cuts]
    [(0, 3), (3, 5), (5, 9)]
    """
    if shard_size <= 0:
        raise ValueError("shard_size must be positive")
    n = catalog.nrows
    if n == 0:
        return []
    if workflow.cutouts.layout == "images":
        return plan_image_shards(catalog, workflow, shard_size)
    if workflow.cutouts.layout != "tiles":
        return [Shard(i, s, min(s + shard_size, n)) for i, s in enumerate(range(0, n, shard_size))]

    tile_col = workflow.cutouts.tile_column
    codes = np.empty(n, dtype=np.int64)
    names: dict[str, int] = {}
    for chunk in catalog.iter_chunks([tile_col], PLAN_CHUNK_ROWS):
        values = chunk[tile_col].to_numpy()
        uniq, inverse = np.unique(values, return_inverse=True)
        mapping = np.array([names.setdefault(str(u), len(names)) for u in uniq], dtype=np.int64)
        codes[chunk.index[0]:chunk.index[-1] + 1] = mapping[inverse]
    run_starts = np.flatnonzero(np.diff(codes)) + 1
    bounds = np.concatenate([[0], run_starts, [n]])
    if len(bounds) - 1 == len(names):
        return _cut_runs(bounds, shard_size)
    # Rows of a tile are scattered: group them (stable, so row order within a tile is kept).
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    group_bounds = np.concatenate([[0], np.flatnonzero(np.diff(sorted_codes)) + 1, [n]])
    return [
        Shard(s.id, s.start, s.stop, tuple(int(r) for r in order[s.start:s.stop]))
        for s in _cut_runs(group_bounds, shard_size)
    ]


def _cut_runs(bounds: np.ndarray, shard_size: int) -> list[Shard]:
    """Pack consecutive runs (one tile each) into shards; a run longer than a shard is split."""
    shards: list[Shard] = []
    start = int(bounds[0])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        lo, hi = int(lo), int(hi)
        if hi - lo > shard_size:
            if lo > start:
                shards.append(Shard(len(shards), start, lo))
            for s in range(lo, hi, shard_size):
                shards.append(Shard(len(shards), s, min(s + shard_size, hi)))
            start = hi
        elif hi - start > shard_size:
            shards.append(Shard(len(shards), start, lo))
            start = lo
    if start < int(bounds[-1]):
        shards.append(Shard(len(shards), start, int(bounds[-1])))
    return shards


def plan_image_shards(catalog: Catalog, workflow: Workflow, shard_size: int) -> list[Shard]:
    """Shards of one survey image each (layout "images"), so a worker opens each image once.

    A row's image is its ``cutouts.image_column`` value, or, with no column, the image
    whose WCS footprint holds its RA/Dec among the files matching ``cutouts.image_pattern``
    (:func:`relabel.cutouts.images.assign_images`). Rows on no image form shards with
    ``image=""``; their rows get the status ``outside_image``. An image's rows are ordered
    by pixel row (y on the image's WCS; Dec when an image column names the image, which
    follows y on the usual north-up images). An image with more rows than ``shard_size``
    is cut into shards that are strips of it, so a tile-compressed image is decompressed
    once over all its shards, not once per shard, and a shard's stamps come in the order
    its rows of pixels are read. Images with fewer rows are packed whole into shards of up
    to ``shard_size`` rows (``Shard.images``), as tiles are: a bright-galaxy catalog has a
    few dozen rows per survey image, and a shard per image would pay a task, a Parquet
    file and a padded forward batch for each.

    Parameters
    ----------
    catalog : Catalog
        The opened catalog with RA/Dec (and the image column, if any).
    workflow : Workflow
        With ``cutouts.layout == "images"``.
    shard_size : int
        Rows per shard at most.

    Returns
    -------
    list of Shard
        Each with its ``image`` (``""`` for rows on no image), or its ``images`` when it packs
        several, and its rows in pixel-row order (explicit ``rows``, or a range when they
        happen to be consecutive).
    """
    from relabel.cutouts.sources import _consecutive

    codes, pixel_row, image_of = _rows_by_image(catalog, workflow)
    order = np.lexsort((pixel_row, codes))  # by image, then by row of pixels (NaN last); stable
    sorted_codes = codes[order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(sorted_codes)) + 1, [catalog.nrows]])
    shards: list[Shard] = []
    for piece in _cut_runs(bounds, shard_size):
        rows, here = order[piece.start:piece.stop], sorted_codes[piece.start:piece.stop]
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(here)) + 1, [len(here)]])
        runs = tuple((image_of[int(here[c])], int(k)) for c, k in zip(cuts[:-1], np.diff(cuts)))
        image, images = (runs[0][0], None) if len(runs) == 1 else (None, runs)
        listed = None if _consecutive(rows) else tuple(int(r) for r in rows)
        shards.append(Shard(len(shards), int(rows.min()), int(rows.max()) + 1, listed, image, images))
    return shards


def _rows_by_image(catalog: Catalog, workflow: Workflow) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Per row: the code of its image, its pixel row there (or its Dec), and code -> image name."""
    from relabel.cutouts.images import assign_images, find_footprints

    spec, n = workflow.cutouts, catalog.nrows
    ra, dec = workflow.catalog.ra, workflow.catalog.dec
    codes = np.empty(n, dtype=np.int64)
    pixel_row = np.empty(n, dtype=np.float32)  # only an ordering: float32 keeps 50M rows at 200 MB
    names: dict[str, int] = {}
    footprints = None if spec.image_column else find_footprints(spec)
    columns = [spec.image_column, dec] if spec.image_column else [ra, dec]
    for chunk in catalog.iter_chunks(columns, PLAN_CHUNK_ROWS):
        where = slice(chunk.index[0], chunk.index[-1] + 1)
        decs = to_degrees(chunk[dec], workflow.catalog.dec_unit, False, dec)
        if footprints is None:
            images = np.array([str(v).rstrip() for v in chunk[spec.image_column].to_numpy()], dtype=object)
            pixel_row[where] = decs
        else:
            ras = to_degrees(chunk[ra], workflow.catalog.ra_unit, True, ra)
            images, pixel_row[where] = assign_images(footprints, ras, decs, pixel_rows=True)
        uniq, inverse = np.unique(images.astype(str), return_inverse=True)
        mapping = np.array([names.setdefault(str(u), len(names)) for u in uniq], dtype=np.int64)
        codes[where] = mapping[inverse]
    return codes, pixel_row, {code: name for name, code in names.items()}


#: Rows whose images are opened to see whether any lies on its image, when a column names each row's image.
ON_IMAGE_SAMPLE = 200


def check_rows_on_images(shards: list[Shard], catalog: Catalog, workflow: Workflow) -> None:
    """Refuse a catalog of which no row lies on its survey image (layout "images").

    Some rows off every image is normal (a catalog wider than the images: their status is
    ``outside_image``); all of them is almost always coordinates in another unit than the
    one read (radians or hours without a unit, :mod:`relabel.catalog.coordinates`) or
    images of another field, and the run would write a table with no prediction. With
    images found by footprint the plan already knows; with ``cutouts.image_column``,
    up to :data:`ON_IMAGE_SAMPLE` rows spread over the catalog are placed on their images.

    Parameters
    ----------
    shards : list of Shard
        The plan (:func:`plan_image_shards`).
    catalog : Catalog
        The catalog planned.
    workflow : Workflow
        Its RA/Dec columns and units, and the images.

    Raises
    ------
    CatalogError
        Naming the catalog, the range of its coordinates as read and the images' centres.
    """
    from relabel.cutouts.images import find_footprints

    spec, cut = workflow.catalog, workflow.cutouts
    if not catalog.nrows:
        return
    if cut.image_column:
        rows = np.unique(np.linspace(0, catalog.nrows - 1, min(catalog.nrows, ON_IMAGE_SAMPLE)).astype(np.int64))
        sample = catalog.read_rows([spec.ra, spec.dec, cut.image_column], rows)
        ra, dec = sky_degrees(sample, workflow)
        footprints = _sample_on_images(sample[cut.image_column], ra, dec, cut)
        if footprints is None:
            return
        what = f"its image (column {cut.image_column}; {len(rows)} rows spread over the catalog tried)"
    else:
        if any(s.image or s.images for s in shards):
            return
        ra, dec = sky_degrees(catalog.read([spec.ra, spec.dec], 0, min(catalog.nrows, 100_000)), workflow)
        footprints = find_footprints(cut)
        what = f"any survey image matching {cut.image_pattern!r}"
    centres = np.array([f.centre for f in footprints]).reshape(-1, 2)
    span = (f"RA {np.nanmin(ra):.4g} to {np.nanmax(ra):.4g}, Dec {np.nanmin(dec):.4g} to {np.nanmax(dec):.4g} deg"
            if np.isfinite(ra).any() and np.isfinite(dec).any() else "no readable RA/Dec")
    where = (f"RA {centres[:, 0].min():.4g} to {centres[:, 0].max():.4g}, Dec {centres[:, 1].min():.4g} to "
             f"{centres[:, 1].max():.4g} deg" if len(centres) else "none found")
    raise CatalogError(
        f"{catalog.path}: no row lies on {what}. Its coordinates as read ({spec.ra} in {spec.ra_unit or 'deg'}, "
        f"{spec.dec} in {spec.dec_unit or 'deg'}): {span}; the images' centres: {where}. If RA/Dec are in "
        "radians or hours, say so with the column's unit (FITS TUNITn) or catalog.ra_unit / catalog.dec_unit "
        "in the workflow")


def _sample_on_images(images: pd.Series, ra: np.ndarray, dec: np.ndarray, cut):
    """None when a sampled row (its image name, RA/Dec in degrees) lies on its named image, or none of
    their images could be read; else the footprints of the images read."""
    from relabel.cutouts.images import image_footprint, stamp_corners
    from relabel.errors import ConfigError

    names = np.array([str(v).rstrip() for v in images.to_numpy()], dtype=object)
    footprints = []
    for name in pd.unique(names):
        try:
            footprint = image_footprint(cut, str(name))
        except ConfigError:
            continue  # a missing or unreadable image is its rows' status, not the whole catalog's fault
        footprints.append(footprint)
        here = names == name
        if stamp_corners(footprint.wcs, ra[here], dec[here], cut.size, footprint.shape)[2].any():
            return None
    return footprints or None
