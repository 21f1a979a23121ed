"""Survey images as a cutout source: stamps cut on the fly at each galaxy's RA/Dec through the image's WCS.

Surveys publish large calibrated images (DES coadd tiles, Legacy Surveys bricks, HSC
patches), one file per band, often tile-compressed (``.fits.fz``), with a catalog of
positions. Cutting the stamps where the images sit avoids writing 10^7-10^9 stamp
files first. How a stamp is cut:

- RA/Dec -> 0-based pixel (x, y) with :class:`astropy.wcs.WCS` (all distortions), per
  band file: bands taken in separate exposures or mosaics are aligned by their own WCS.
- The stamp is the ``size x size`` block of the image's own pixel grid whose centre is
  nearest the galaxy (within half a pixel in x and y; no resampling, so pixels and noise
  are the survey's own). A block partly off the image is padded with 0 (sky) and its
  row flagged ``partial_edge`` with the share of pixels on the image (``coverage``);
  a centre off the image is ``outside_image``.
- Pixels: an uncompressed image is memory-mapped with NumPy (a stamp is one strided
  slice, no copy of the image); a tile-compressed one is read with fitsio sections in
  blocks of rows (kept, within a memory budget, for the rest of the shard), so only the
  compression tiles under the shard's stamps are decompressed, each once, never the
  whole image at once. Not
  :class:`astropy.nddata.Cutout2D`: it needs the image as an array in memory (it would
  decompress a ``.fits.fz`` whole) and makes a WCS object per stamp, which we do not
  need: the stamp is fed to the network, not written back.
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from relabel import status as st
from relabel.catalog.coordinates import to_degrees
from relabel.config import CutoutSpec
from relabel.cutouts.pixels import blank_value, image_hdu, image_plane, read_rows
from relabel.cutouts.sources import Cutouts, CutoutSource
from relabel.errors import ConfigError

if TYPE_CHECKING:
    from astropy.wcs import WCS

BAND_FIELD = "{band}"

#: Pixels of a compressed image decompressed per section read (one block of full-width rows,
#: a whole number of compression tiles high). fitsio holds the GIL while it decompresses
#: (about 25 ns a pixel for RICE_1 with dithered quantisation), and the forward pass needs
#: it between its operations, so a block is kept short (~2 ms) for the read-ahead thread
#: to interleave with the network; smaller section reads cost no more per pixel.
BLOCK_PIXELS = 2**16

#: Decompressed blocks kept per open image: the planner orders a shard's rows by pixel row,
#: so blocks are mostly used in turn; the cache covers rows that arrive out of order (a
#: rotated image, rows given by an image column sorted by Dec) in bounded memory
#: (a whole 2048^2 float32 image is 16 MB; a 10k-wide DES tile keeps ~3000 rows).
BLOCK_CACHE_BYTES = 128 * 2**20

#: Largest strip of image rows that stamps are gathered from at once (decompressed blocks
#: are joined into it: a copy): 2048 rows of a 2048-wide float32 image, 400 of a 10k-wide one.
STRIP_BYTES = 16 * 2**20

#: Parsed headers (WCS, shape, how to read the pixels) kept per process, keyed by file,
#: size and modification time: parsing a header with astropy costs ~2.4 ms, paid once per
#: image per worker instead of once per shard and band.
HEADER_CACHE_SIZE = 256


def band_path(image: str, band: str) -> str:
    """The file of one band: ``{band}`` in an image's path template replaced by the band name.

    Parameters
    ----------
    image : str
        Path template holding ``{band}`` (or a plain path, returned as is).
    band : str
        Band name, e.g. ``"r"``.

    Returns
    -------
    str
    """
    return image.replace(BAND_FIELD, band)


def split_hdu(path: Path) -> tuple[Path, str | None]:
    """A file and its image extension from cfitsio's ``file.fits[N]`` / ``file.fits[EXTNAME]`` notation.

    Survey products that hold one image per CCD (DECam, HSC) name a CCD by its
    extension: ``c4d_..._ooi_r.fits.fz[S4]`` or ``...[12]``. A name whose file exists as
    written is never split (a file may have brackets in its name).

    Parameters
    ----------
    path : pathlib.Path
        A file, optionally followed by ``[extension number or EXTNAME]``.

    Returns
    -------
    file : pathlib.Path
    extension : str or None
        None when no extension is named (the first image holding data is used).

    Examples
    --------
    >>> split_hdu(Path("ccds_r.fits.fz[S4]"))
    (PosixPath('ccds_r.fits.fz'), 'S4')
    >>> split_hdu(Path("coadd_r.fits"))
    (PosixPath('coadd_r.fits'), None)
    """
    match = re.match(r"^(.*)\[([^\[\]]+)\]$", path.name)
    if match is None or path.exists():
        return path, None
    return path.with_name(match.group(1)), match.group(2).strip()


def select_image_hdu(fits, extension: str | None):
    """The image HDU of an open ``fitsio.FITS`` that ``extension`` names (number or EXTNAME), or its first image.

    Parameters
    ----------
    fits : fitsio.FITS
    extension : str or None
        ``"3"`` (the HDU number, 0 the primary) or an EXTNAME (any case); None: the first image holding data.

    Returns
    -------
    fitsio.ImageHDU or None
        None when no such image HDU exists.
    """
    if extension is None:
        return image_hdu(fits)
    if extension.isdigit():
        number = int(extension)
        if number >= len(fits):
            return None
        hdu = fits[number]
        return hdu if hdu.get_exttype() == "IMAGE_HDU" and hdu.get_dims() else None
    return image_hdu(fits, extension)


def image_extensions(fits) -> list[str]:
    """Names of the image HDUs of a file that hold data with a celestial WCS: EXTNAME, or the number without one.

    Parameters
    ----------
    fits : fitsio.FITS

    Returns
    -------
    list of str
        In file order; one entry for a plain (single-image) file.
    """
    return [name for _, name, _, _ in _celestial_images(fits)]


def _celestial_images(fits) -> list[tuple[int, str, Any, tuple[int, int]]]:
    """(HDU number, name, celestial WCS, (ny, nx)) of each image HDU of a file holding a 2-D image with one."""
    found = []
    for hdu in fits:
        plane = image_plane(hdu.get_dims()) if hdu.get_exttype() == "IMAGE_HDU" else None
        if plane is None:
            continue
        try:
            wcs = header_wcs(hdu)
        except (ValueError, MemoryError, KeyError):
            continue
        if wcs.has_celestial:
            found.append((hdu.get_extnum(), hdu.get_extname().strip() or str(hdu.get_extnum()), wcs, plane[1]))
    return found


def header_wcs(hdu, header=None):
    """The celestial :class:`astropy.wcs.WCS` of a fitsio image HDU (compressed ones included).

    Parameters
    ----------
    hdu : fitsio.ImageHDU
        An open image HDU whose header holds the WCS keywords.
    header : fitsio.FITSHDR, optional
        Its header, when the caller has read it already.

    Returns
    -------
    astropy.wcs.WCS
        Its celestial part (two axes).
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    header_records = (header if header is not None else hdu.read_header()).records()
    cards = "".join(r["card_string"].ljust(80)[:80] for r in header_records if r.get("card_string"))
    header = fits.Header.fromstring(cards)
    for key in ("XTENSION", "PCOUNT", "GCOUNT", "TFIELDS"):
        header.remove(key, ignore_missing=True)
    return WCS(header, naxis=2)


def sky_to_pixel(wcs, ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel (x, y) of ICRS positions on an image, whatever its WCS's sky frame and axis order.

    An image's WCS may be equatorial (ICRS, or FK5 / FK4 at an equinox), galactic or
    ecliptic, with longitude or latitude first; the catalog's RA/Dec are ICRS (FK5 J2000
    differs by tens of milliarcseconds). astropy transforms between frames
    (:func:`astropy.wcs.utils.skycoord_to_pixel`, distortions included).

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        A celestial WCS.
    ra, dec : numpy.ndarray of float, shape (n,)
        ICRS degrees.

    Returns
    -------
    x, y : numpy.ndarray of float, shape (n,)
        NaN where the projection has no pixel for a position.
    """
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import skycoord_to_pixel

    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    finite = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    x, y = np.full(len(ra), np.nan), np.full(len(ra), np.nan)
    if finite.any():
        sky = SkyCoord(ra[finite], dec[finite], unit="deg", frame="icrs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # positions far off a TAN image do not converge: NaN, checked below
            px, py = skycoord_to_pixel(sky, wcs, origin=0, mode="all")
        x[finite], y[finite] = px, py
    return x, y


def pixel_to_sky(wcs, x, y) -> tuple[np.ndarray, np.ndarray]:
    """ICRS degrees of 0-based pixel positions on an image (the inverse of :func:`sky_to_pixel`).

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        A celestial WCS, in any sky frame.
    x, y : numpy.ndarray of float
        Pixel positions.

    Returns
    -------
    ra, dec : numpy.ndarray of float
        ICRS degrees.
    """
    from astropy.wcs.utils import pixel_to_skycoord

    sky = pixel_to_skycoord(np.asarray(x, float), np.asarray(y, float), wcs, origin=0, mode="all").icrs
    return np.asarray(sky.ra.deg), np.asarray(sky.dec.deg)


def pixel_scales(wcs) -> np.ndarray:
    """Pixel side along the image's x and y axes, arcsec (CD or PC+CDELT, rotated or skewed alike).

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        A celestial WCS.

    Returns
    -------
    numpy.ndarray of float, shape (2,)
        Pixel side along x and y, arcsec.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    return proj_plane_pixel_scales(wcs) * 3600.0


@dataclass
class SurveyImage:
    """One band file: its WCS, shape (ny, nx) and pixels (a memory map, or fitsio HDU sections).

    ``block_rows``: rows per decompressed block of a compressed image (a multiple of its
    compression tiles' height); the whole image for a memory map. ``lead``: indices of the
    length-1 axes before the image's two (NAXIS3 = 1 ...); ``blank``: the stored integer of
    undefined pixels (read as NaN), None for float images or without BLANK.
    """

    path: Path
    wcs: WCS
    shape: tuple[int, int]
    fits: Any  # fitsio.FITS (fitsio ships no type hints)
    hdu: Any  # fitsio.ImageHDU
    memmap: np.ndarray | None
    block_rows: int = 0
    blocks: OrderedDict = field(default_factory=OrderedDict)
    lead: tuple[int, ...] = ()
    blank: int | None = None

    def __post_init__(self) -> None:
        if self.memmap is not None or self.block_rows <= 0:
            self.block_rows = self.shape[0]

    def close(self) -> None:
        """Close the image's FITS file."""
        self.fits.close()

    def cut(self, x0: np.ndarray, y0: np.ndarray, size: int, out: np.ndarray) -> None:
        """Copy the in-image part of each stamp (lower-left 0-based corner x0, y0) into ``out`` (n, size, size).

        Stamps wholly on the image are gathered by NumPy from strips of rows (the memory
        map itself, or decompressed blocks joined, at most :data:`STRIP_BYTES` at a time),
        a few calls per batch instead of a Python loop over stamps and blocks: that loop
        holds the GIL, which the forward pass in the other thread waits for between its
        operations. Stamps over an edge are pasted one by one.

        Parameters
        ----------
        x0, y0 : numpy.ndarray of int, shape (n,)
            Lower-left 0-based pixel corner of each stamp; may lie off the image.
        size : int
            Stamp side, pixels.
        out : numpy.ndarray of float32, shape (n, size, size)
            Filled in place where a stamp lies on the image; other pixels are left as they are.
        """
        from numpy.lib.stride_tricks import sliding_window_view

        ny, nx = self.shape
        inside = np.flatnonzero((x0 >= 0) & (y0 >= 0) & (x0 + size <= nx) & (y0 + size <= ny))
        inside = inside[np.argsort(y0[inside], kind="stable")]
        most_rows = max(size, STRIP_BYTES // (4 * nx))
        while len(inside):
            # The stamps (in y order) whose rows fit one strip of at most most_rows rows.
            n = int(np.searchsorted(y0[inside], y0[inside[0]] + most_rows - size, side="right"))
            pick, inside = inside[:n], inside[n:]
            ys = int(y0[pick[0]])
            strip = self._rows(ys, int(y0[pick[-1]]) + size)
            # A view of every size x size window of the strip; indexing it copies just the stamps.
            out[pick] = sliding_window_view(strip, (size, size))[y0[pick] - ys, x0[pick]]
        for j in np.flatnonzero(~((x0 >= 0) & (y0 >= 0) & (x0 + size <= nx) & (y0 + size <= ny))):
            ys, ye = max(int(y0[j]), 0), min(int(y0[j]) + size, ny)
            for first_row, block in self._blocks_over(ys, ye):
                _paste(block, first_row, int(x0[j]), int(y0[j]), size, out[j])

    def _rows(self, ys: int, ye: int) -> np.ndarray:
        """Image rows ys:ye (all columns): a view of the memory map, or the decompressed blocks joined."""
        if self.memmap is not None:
            return self.memmap[ys:ye]
        pieces = [block[max(ys - first, 0):ye - first] for first, block in self._blocks_over(ys, ye)]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _blocks_over(self, ys: int, ye: int):
        """(first row, pixels) of the blocks holding rows ys:ye."""
        if ye > ys:
            for k in range(ys // self.block_rows, (ye - 1) // self.block_rows + 1):
                yield self._block_of(k)

    def _block_of(self, k: int) -> tuple[int, np.ndarray]:
        """(first row, pixels) of block k: the whole memory map (one block), or rows decompressed once."""
        if self.memmap is not None:
            return 0, self.memmap
        return k * self.block_rows, self._block(k)

    def _block(self, k: int) -> np.ndarray:
        if k in self.blocks:
            self.blocks.move_to_end(k)
            return self.blocks[k]
        rows = self.block_rows
        block = read_rows(self.hdu, self.lead, k * rows, min((k + 1) * rows, self.shape[0]), self.blank)
        self.blocks[k] = block
        keep = max(2, BLOCK_CACHE_BYTES // max(block.nbytes, 1))
        while len(self.blocks) > keep:
            self.blocks.popitem(last=False)
        return block


def _paste(block: np.ndarray, first_row: int, x0: int, y0: int, size: int, target: np.ndarray) -> None:
    """Copy the overlap of a block of image rows with the stamp at (x0, y0) into ``target``; the rest stays 0."""
    ys, ye = max(y0, first_row), min(y0 + size, first_row + block.shape[0])
    xs, xe = max(x0, 0), min(x0 + size, block.shape[1])
    if ye > ys and xe > xs:
        target[ys - y0:ye - y0, xs - x0:xe - x0] = block[ys - first_row:ye - first_row, xs:xe]


def open_survey_image(path: Path) -> tuple[SurveyImage | None, str | None]:
    """Open one band file; (image, None), or (None, status) when it is missing or unreadable.

    Parameters
    ----------
    path : pathlib.Path
        One band's FITS file (tile-compressed ``.fits.fz`` included), optionally with
        ``[extension]`` (:func:`split_hdu`) for a file of several images.

    Returns
    -------
    image : SurveyImage or None
    fault : str or None
        ``missing_file``, ``corrupt_file``, ``empty_hdu`` or ``wrong_shape``
        (:mod:`relabel.status`) when ``image`` is None.
    """
    import fitsio

    path, extension = split_hdu(Path(path))
    if not path.is_file():
        return None, st.MISSING_FILE
    try:
        fits = fitsio.FITS(str(path))
        hdu = select_image_hdu(fits, extension)
        if hdu is None:
            fits.close()
            return None, st.EMPTY_HDU
        dims = tuple(hdu.get_dims())
        plane = image_plane(dims)
        if plane is None:
            fits.close()
            return None, st.WRONG_SHAPE
        parsed = _parsed_header(path, hdu)
        blank = blank_value(hdu)
    except (OSError, ValueError):
        return None, st.CORRUPT_FILE
    (lead, shape), (wcs, map_dtype, block_rows) = plane, parsed
    memmap = None
    if map_dtype is not None and _is_plain_fits(path):
        try:
            memmap = np.memmap(path, dtype=map_dtype, mode="r", offset=hdu.get_offsets()["data_start"],
                               shape=dims)[lead]
        except ValueError:  # the header promises more pixels than the file holds: truncated
            fits.close()
            return None, st.CORRUPT_FILE
    return SurveyImage(path, wcs, shape, fits, hdu, memmap, block_rows, lead=lead, blank=blank), None


def _is_plain_fits(path: Path) -> bool:
    """Whether the file's bytes are FITS as written, so that its pixels may be memory-mapped.

    A whole file compressed by gzip or bzip2 (``.fits.gz``, ``.fits.bz2``, as archives ship
    survey frames) is read by cfitsio, which inflates it; its header's data offset is in
    the inflated stream, not in the bytes on disk.
    """
    with open(path, "rb") as f:
        return f.read(9) == b"SIMPLE  ="


_HEADERS: OrderedDict[tuple, tuple] = OrderedDict()


def _parsed_header(path: Path, hdu) -> tuple:
    """(WCS, memory-map dtype or None, block rows) of an image HDU, from the per-process cache when it is current.

    Each caller gets its own copy of the WCS: astropy's WCS objects are not safe to share between threads.
    """
    stat = path.stat()
    key = (str(path.resolve()), hdu.get_extnum(), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _HEADERS:
        _HEADERS.move_to_end(key)
        wcs, map_dtype, block_rows = _HEADERS[key]
        return wcs.deepcopy(), map_dtype, block_rows
    header = hdu.read_header()
    wcs = header_wcs(hdu, header)
    parsed = (wcs, _map_dtype(hdu, header), _block_rows(header, int(hdu.get_dims()[-1])))
    _HEADERS[key] = parsed
    while len(_HEADERS) > HEADER_CACHE_SIZE:
        _HEADERS.popitem(last=False)
    return wcs.deepcopy(), *parsed[1:]


def _map_dtype(hdu, header) -> str | None:
    """The dtype to memory-map an uncompressed float image's pixels with; None where fitsio must decode them."""
    if hdu.is_compressed() or header.get("BITPIX") not in (-32, -64):
        return None  # compressed, or integers whose BSCALE/BZERO/BLANK fitsio applies
    if float(header.get("BSCALE", 1.0)) != 1.0 or float(header.get("BZERO", 0.0)) != 0.0:
        return None
    return ">f4" if header["BITPIX"] == -32 else ">f8"


def _block_rows(header, width: int) -> int:
    """Rows per decompressed block: about BLOCK_PIXELS, a whole number of compression tiles (ZTILE2) high."""
    tile = max(1, int(header.get("ZTILE2", 1) or 1))
    return tile * max(1, BLOCK_PIXELS // max(1, width * tile))


def stamp_corners(wcs, ra: np.ndarray, dec: np.ndarray, size: int, shape: tuple[int, int]):
    """Lower-left 0-based pixel corners of the stamps centred on (ra, dec), and which centres lie on the image.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
    ra, dec : numpy.ndarray
        Degrees, shape (n,).
    size : int
        Stamp side, pixels.
    shape : tuple of int
        Image (ny, nx).

    Returns
    -------
    x0, y0 : numpy.ndarray of int64
        The stamp is ``image[y0:y0 + size, x0:x0 + size]``; its centre, 0-based
        ``x0 + (size - 1) / 2``, is within half a pixel of the galaxy's (x, y).
    inside : numpy.ndarray of bool
        The galaxy's centre falls on a pixel of the image.
    """
    x, y = sky_to_pixel(wcs, ra, dec)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(finite, x, -1e9), np.where(finite, y, -1e9)
    ny, nx = shape
    inside = finite & (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    half = (size - 1) / 2.0
    x0 = np.floor(x - half + 0.5).astype(np.int64)
    y0 = np.floor(y - half + 0.5).astype(np.int64)
    return x0, y0, inside


def coverage(x0: np.ndarray, y0: np.ndarray, size: int, shape: tuple[int, int]) -> np.ndarray:
    """Share of each stamp's pixels that lie on the image (1 inside, 0 fully off).

    Parameters
    ----------
    x0, y0 : numpy.ndarray of int, shape (n,)
        Lower-left 0-based pixel corner of each stamp.
    size : int
        Stamp side, pixels.
    shape : tuple of int
        Image shape (ny, nx), pixels.

    Returns
    -------
    numpy.ndarray of float32, shape (n,)
    """
    ny, nx = shape
    wx = np.clip(np.minimum(x0 + size, nx) - np.maximum(x0, 0), 0, size)
    wy = np.clip(np.minimum(y0 + size, ny) - np.maximum(y0, 0), 0, size)
    return (wx * wy / float(size * size)).astype(np.float32)


class ImageSource(CutoutSource):
    """Stamps cut from survey images, one file per band, located by RA/Dec and each file's WCS.

    Each row's image is ``image`` (the whole read's, e.g. its shard's; or a Series giving
    each row's, indexed like the rows read), else the row's ``cutouts.image_column``, else
    the image whose footprint holds it among the files matching ``cutouts.image_pattern``.
    Image names are path templates with ``{band}``.
    """

    max_open = 8

    def __init__(self, spec: CutoutSpec, size: int | None = None, n_bands: int | None = None,
                 ra: str = "RA", dec: str = "DEC", image: str | pd.Series | None = None,
                 units: tuple[str | None, str | None] = (None, None)):
        super().__init__(spec, size, n_bands)
        self.ra, self.dec, self.image, self.units = ra, dec, image, units
        self.columns = (ra, dec, *spec.columns)
        self._open: OrderedDict[str, tuple[SurveyImage | None, str | None]] = OrderedDict()
        self._footprints: list[Footprint] | None = None

    def read(self, rows: pd.DataFrame) -> Cutouts:
        """Stamps of the rows, cut from their survey images; statuses and ``coverage`` per row.

        Parameters
        ----------
        rows : pandas.DataFrame
            Rows holding :attr:`columns` (RA/Dec in the units the source was given, numbers or sexagesimal
            text; :mod:`relabel.catalog.coordinates`), and the image column when the workflow has one.

        Returns
        -------
        Cutouts
            Images (n, bands, size, size) float32, status and coverage per row.
        """
        out = self._empty(len(rows))
        out.coverage = np.ones(len(rows), dtype=np.float32)
        ra = to_degrees(rows[self.ra], self.units[0], True, self.ra)
        dec = to_degrees(rows[self.dec], self.units[1], False, self.dec)
        images = self._images_of(rows, ra, dec)
        for image in pd.unique(images):
            where = np.flatnonzero(images == image)
            if not image:
                out.status[where] = st.OUTSIDE_IMAGE
                out.coverage[where] = 0.0
                continue
            self._cut(str(image), ra[where], dec[where], where, out)
        return out

    def _images_of(self, rows: pd.DataFrame, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        if isinstance(self.image, pd.Series):
            return self.image.loc[rows.index].to_numpy(dtype=object)
        if self.image is not None:
            return np.full(len(rows), self.image, dtype=object)
        if self.spec.image_column:
            return np.array([str(v).rstrip() for v in rows[self.spec.image_column].to_numpy()], dtype=object)
        if self._footprints is None:
            self._footprints = find_footprints(self.spec)
        return assign_images(self._footprints, ra, dec)

    def _cut(self, image: str, ra, dec, where: np.ndarray, out: Cutouts) -> None:
        bands = self.spec.bands[:self.n_bands]
        if len(bands) > 1 and BAND_FIELD not in image:
            out.status[where] = st.WRONG_BANDS  # several bands need one file each
            return
        block = np.zeros((len(where), self.n_bands, self.size, self.size), dtype=np.float32)
        cover = np.ones(len(where), dtype=np.float32)
        inside = np.ones(len(where), dtype=bool)
        for b, band in enumerate(bands):
            survey, fault = self._survey_image(band_path(image, band))
            if fault is not None:
                out.status[where] = fault
                return
            x0, y0, on = stamp_corners(survey.wcs, ra, dec, self.size, survey.shape)
            inside &= on
            cover = np.minimum(cover, coverage(x0, y0, self.size, survey.shape))
            keep = np.flatnonzero(on)
            stamps = np.zeros((len(keep), self.size, self.size), dtype=np.float32)
            try:
                survey.cut(x0[keep], y0[keep], self.size, stamps)
            except (OSError, ValueError):
                self._forget(band_path(image, band))
                out.status[where] = st.CORRUPT_FILE
                return
            block[keep, b] = stamps
        from relabel.cutouts.sources import _store

        assert out.coverage is not None  # read() makes it before cutting
        ok = np.flatnonzero(inside)
        _store(block[ok], where[ok], out)
        out.coverage[where] = np.where(inside, cover, 0.0)
        out.status[where[~inside]] = st.OUTSIDE_IMAGE
        edge = where[inside & (cover < 1.0)]
        out.status[edge[out.status[edge] == st.OK]] = st.PARTIAL_EDGE

    def _survey_image(self, name: str):
        if name in self._open:
            self._open.move_to_end(name)
            return self._open[name]
        opened = open_survey_image(self._resolve(name))
        self._open[name] = opened
        if len(self._open) > self.max_open:
            self._forget(next(iter(self._open)))
        return opened

    def _forget(self, name: str) -> None:
        survey, _ = self._open.pop(name, (None, None))
        if survey is not None:
            survey.close()

    def close(self) -> None:
        """Close every survey image this source holds open."""
        for name in list(self._open):
            self._forget(name)


# --------------------------------------------------------------------------- footprints


@dataclass(frozen=True)
class Footprint:
    """Where one image (path template with ``{band}``) lies on the sky: its first band's WCS and shape."""

    image: str
    wcs: WCS
    shape: tuple[int, int]
    centre: tuple[float, float]
    radius: float  # degrees, centre to the farthest corner


def find_footprints(spec: CutoutSpec) -> list[Footprint]:
    """The images matching ``spec.image_pattern`` in every band, with their footprints.

    ``*`` in the pattern matches any part of a file name (as in a shell), ``{band}`` the
    band name; ``images/*_{band}.fits*`` finds ``images/f00_r.fits`` and its ``_g`` twin.
    A file of several images with a celestial WCS (CCD-level products) gives one image
    per extension, named ``file[EXTNAME]`` (:func:`split_hdu`).

    Parameters
    ----------
    spec : relabel.config.CutoutSpec
        The workflow's ``cutouts``, with ``image_pattern``, ``bands`` and ``root``.

    Returns
    -------
    list of Footprint
        One per matched image, its first band's WCS and shape.

    Raises
    ------
    ConfigError
        No image matches, an image lacks one of the bands, or a header has no usable WCS.
    """
    pattern = spec.image_pattern or ""
    images = sorted(set().union(*(_matching_images(spec.root, pattern, band) for band in spec.bands)))
    if not images:
        raise ConfigError(f"cutouts.image_pattern {pattern!r}: no file matches it under {spec.root}")
    footprints = []
    for image in images:
        for band in spec.bands:
            if not (spec.root / band_path(image, band)).is_file():
                raise ConfigError(f"cutouts.image_pattern {pattern!r}: image {image} has no {band}-band "
                                  f"file {band_path(image, band)} under {spec.root}")
        footprints += _file_footprints(spec, image)
    return footprints


def _file_footprints(spec: CutoutSpec, image: str) -> list[Footprint]:
    """The footprints of one matched file, from one open of it: the file's image, or ``image[EXT]`` per CCD
    of a multi-extension file (each with its own WCS)."""
    import fitsio

    path = spec.root / band_path(image, spec.bands[0])
    try:
        with fitsio.FITS(str(path)) as fits:
            found = _celestial_images(fits)
            first = image_hdu(fits)  # what a name without [extension] reads (open_survey_image)
            first_number = first.get_extnum() if first is not None else None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"survey image {path} is not readable FITS ({exc})") from None
    if len(found) > 1:
        return [_footprint(f"{image}[{name}]", wcs, shape) for _, name, wcs, shape in found]
    if not found or found[0][0] != first_number:
        raise ConfigError(f"survey image {path} has no 2-D image with a celestial WCS")
    return [_footprint(image, found[0][2], found[0][3])]


def image_footprint(spec: CutoutSpec, image: str) -> Footprint:
    """Where one survey image lies: its first band's WCS and shape, read from its header.

    Parameters
    ----------
    spec : relabel.config.CutoutSpec
        The workflow's ``cutouts`` (``root``, ``bands``).
    image : str
        The image's path template (``{band}`` for several bands), relative to ``spec.root``,
        optionally with ``[extension]`` (:func:`split_hdu`).

    Returns
    -------
    Footprint

    Raises
    ------
    ConfigError
        The file is not readable FITS or holds no 2-D image with a celestial WCS.
    """
    import fitsio

    name = band_path(image, spec.bands[0])
    path, extension = split_hdu(spec.root / name)
    try:
        with fitsio.FITS(str(path)) as fits:
            hdu = select_image_hdu(fits, extension)
            plane = image_plane(hdu.get_dims()) if hdu is not None else None
            wcs = header_wcs(hdu) if plane is not None else None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"survey image {spec.root / name} is not readable FITS ({exc})") from None
    if plane is None or wcs is None or not wcs.has_celestial:
        raise ConfigError(f"survey image {spec.root / name} has no 2-D image with a celestial WCS")
    return _footprint(image, wcs, plane[1])


def _matching_images(root: Path, pattern: str, band: str) -> set[str]:
    """Image templates (``{band}`` kept) of the files matching ``pattern`` in one band."""
    parts = pattern.split("*")
    regex = re.compile("^" + "(.*)".join(re.escape(band_path(p, band)) for p in parts) + "$")
    images = set()
    for path in root.glob(band_path(pattern, band)):
        match = regex.match(str(path.relative_to(root)))
        if match is not None:
            pieces = list(match.groups()) + [""]
            images.add("".join(p + piece for p, piece in zip(parts, pieces)))
    return images


def _footprint(image: str, wcs, shape: tuple[int, int]) -> Footprint:
    ny, nx = shape
    xs = np.array([(nx - 1) / 2, -0.5, nx - 0.5, -0.5, nx - 0.5])
    ys = np.array([(ny - 1) / 2, -0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = pixel_to_sky(wcs, xs, ys)
    radius = float(np.max(_separation(ra[0], dec[0], ra[1:], dec[1:])))
    return Footprint(image, wcs, shape, (float(ra[0]), float(dec[0])), radius)


def _separation(ra0, dec0, ra, dec) -> np.ndarray:
    """Great-circle distance, degrees (haversine: exact at small separations)."""
    ra0, dec0, ra, dec = map(np.radians, (ra0, dec0, ra, dec))
    h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec0) * np.cos(dec) * np.sin((ra - ra0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def assign_images(footprints: list[Footprint], ra: np.ndarray, dec: np.ndarray, pixel_rows: bool = False):
    """Each position's image: of the images whose pixels hold it, the one where it lies farthest from an edge.

    Overlapping images (dithered tiles, neighbouring bricks) thus give a galaxy the image
    on which its stamp is most complete. Positions on no image get ``""``.

    Parameters
    ----------
    footprints : list of Footprint
        Candidate images.
    ra, dec : numpy.ndarray of float, shape (n,)
        Positions, degrees (ICRS).
    pixel_rows : bool
        Also return each position's pixel row (y) on its image.

    Returns
    -------
    images : numpy.ndarray of object (str), shape (n,)
        Image path template per position, ``""`` when none holds it.
    y : numpy.ndarray of float, shape (n,)
        Only with ``pixel_rows``: 0-based pixel row on that image (NaN on no image).
    """
    best = np.full(len(ra), "", dtype=object)
    margin = np.full(len(ra), -np.inf)
    rows = np.full(len(ra), np.nan)
    for fp in footprints:
        # A cheap cone first: TAN pixels of far-away points are undefined (or mirrored).
        near = np.flatnonzero(_separation(fp.centre[0], fp.centre[1], ra, dec) <= fp.radius * 1.01)
        if len(near) == 0:
            continue
        x, y = sky_to_pixel(fp.wcs, ra[near], dec[near])
        ny, nx = fp.shape
        with np.errstate(invalid="ignore"):
            m = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
        m = np.where(np.isfinite(m), m, -np.inf)
        better = (m > 0) & (m > margin[near])
        best[near[better]] = fp.image
        margin[near[better]] = m[better]
        rows[near[better]] = y[better]
    return (best, rows) if pixel_rows else best


def check_pixel_scales(images, spec: CutoutSpec, expected: float, what: str) -> None:
    """Refuse survey images whose pixel scale differs from the model's by more than the tolerance.

    Parameters
    ----------
    images : iterable of str
        Image path templates (``{band}``), relative to ``spec.root``.
    spec : CutoutSpec
        Bands, root and ``pixel_scale_tolerance`` (relative).
    expected : float
        The checkpoint's pixel scale, arcsec / pixel.
    what : str
        What ``expected`` belongs to, for the message (e.g. "checkpoint model.pt").

    Raises
    ------
    ConfigError
        Naming the image file, its scale along x and y, and ``expected``.
    """
    tol = spec.pixel_scale_tolerance
    for image in images:
        if not image:
            continue
        for band in spec.bands:
            survey, fault = open_survey_image(spec.root / band_path(image, band))
            if survey is None:
                continue  # a missing or broken file becomes its rows' status
            scales = pixel_scales(survey.wcs)
            survey.close()
            if np.any(np.abs(scales / expected - 1.0) > tol):
                raise ConfigError(
                    f"survey image {spec.root / band_path(image, band)} has pixels of "
                    f"{scales[0]:.4f} x {scales[1]:.4f} arcsec where {what} was trained on {expected:.4f} arcsec "
                    f"(tolerance {tol:.1%}, key cutouts.pixel_scale_tolerance): resample the images or use a "
                    "model trained at this scale"
                )
