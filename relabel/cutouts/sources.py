"""Cutout sources: read each galaxy's image from a tile cube or from a file of its own.

A source turns catalog rows into an image array of shape (n, bands, size, size) and a
status per row. A broken file or image is a status on its rows, never an exception:
one unreadable cutout must not stop a survey-wide run. A new kind of source (e.g.
cutting on the fly from survey images with a WCS) subclasses :class:`CutoutSource`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from relabel import status as st
from relabel.config import CutoutSpec, Workflow
from relabel.cutouts.pixels import image_hdu, read_image, read_section

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor


@dataclass
class Cutouts:
    """Images of a group of rows; rows whose status is not predicted hold zeros."""

    images: np.ndarray  # float32 (n, bands, size, size)
    status: np.ndarray  # object array of status names
    coverage: np.ndarray | None = None  # float32 (n,): share of each stamp on its survey image (layout "images")
    normalised: bool = False  # images already normalised (by a reading process), unusable rows zero

    @property
    def usable(self) -> np.ndarray:
        """Boolean (n,): rows whose status carries new probabilities (:data:`relabel.status.PREDICTED`)."""
        return np.isin(self.status, st.PREDICTED)


class CutoutSource:
    """Base class: ``read(rows)`` for rows holding :attr:`columns`."""

    columns: tuple[str, ...] = ()
    #: Child processes reading for this source (:mod:`relabel.cutouts.reader_process`); 0: this process reads.
    #: With ``p`` of them, ``p`` reads may run at once and ``read(rows, slot=k % (p + 1))`` names each buffer.
    processes: int = 0

    def __init__(self, spec: CutoutSpec, size: int | None = None, n_bands: int | None = None):
        self.spec = spec
        self.size = int(size or spec.size)
        self.n_bands = int(n_bands or len(spec.bands))

    def read(self, rows: pd.DataFrame) -> Cutouts:
        """The cutouts of ``rows``, in row order; a fault in one row is its status, never an exception.

        Parameters
        ----------
        rows : pandas.DataFrame
            Rows holding :attr:`columns`.

        Returns
        -------
        Cutouts
            Images (n, bands, size, size) float32, rows that failed hold zeros; a status per row.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (a source may keep a few open between reads)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _empty(self, n: int) -> Cutouts:
        images = np.zeros((n, self.n_bands, self.size, self.size), dtype=np.float32)
        return Cutouts(images, np.full(n, st.OK, dtype=object))

    def _resolve(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.spec.root / path

    def _check_shape(self, shape: tuple[int, ...]) -> str | None:
        """Status for an image of the wrong shape, given (bands, h, w) or (h, w)."""
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            return st.WRONG_SHAPE
        bands, h, w = shape
        if (h, w) != (self.size, self.size):
            return st.WRONG_SHAPE
        if bands != self.n_bands:
            return st.WRONG_BANDS
        return None


class TileSource(CutoutSource):
    """Cutouts stored as cubes (n, bands, size, size) in the primary HDU of tile files."""

    max_open = 4

    def __init__(self, spec: CutoutSpec, size: int | None = None, n_bands: int | None = None):
        super().__init__(spec, size, n_bands)
        self.columns = (spec.tile_column, spec.index_column)
        self._open: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # tile -> (fitsio HDU, its FITS file)

    def read(self, rows: pd.DataFrame) -> Cutouts:
        """The rows' cutouts, read from their tile cubes (each tile opened once per read).

        Parameters
        ----------
        rows : pandas.DataFrame
            Rows holding the tile file and the index into its cube.

        Returns
        -------
        Cutouts
            As :meth:`CutoutSource.read`; a missing or unreadable tile is the status of all its rows.
        """
        out = self._empty(len(rows))
        tiles = rows[self.spec.tile_column].to_numpy()
        indices = rows[self.spec.index_column].to_numpy()
        for tile in pd.unique(tiles):
            where = np.flatnonzero(tiles == tile)
            self._read_tile(str(tile), indices[where], where, out)
        return out

    def _read_tile(self, tile: str, indices: np.ndarray, where: np.ndarray, out: Cutouts) -> None:
        hdu, fault = self._image_hdu(tile)
        if fault is not None:
            out.status[where] = fault
            return
        dims = tuple(hdu.get_dims())
        fault = self._check_shape(dims[1:]) if len(dims) in (3, 4) else st.WRONG_SHAPE
        if len(dims) == 3 and fault is None:
            dims = (dims[0], 1, *dims[1:])
        if fault is not None:
            out.status[where] = fault
            return
        valid = (indices >= 0) & (indices < dims[0])
        out.status[where[~valid]] = st.BAD_INDEX
        where, indices = where[valid], indices[valid].astype(np.int64)
        if len(indices) == 0:
            return
        try:
            lo, hi = int(indices.min()), int(indices.max()) + 1
            # One contiguous section read beats many small ones when the rows are dense in the tile.
            if _consecutive(indices):
                block = _read_section(hdu, lo, hi)  # the usual shard: consecutive cutouts, no gather
            elif hi - lo <= 4 * len(indices):
                block = _read_section(hdu, lo, hi)[indices - lo]
            else:
                block = np.concatenate([_read_section(hdu, i, i + 1) for i in indices])
        except (OSError, ValueError):
            self._forget(tile)
            out.status[where] = st.CORRUPT_FILE
            return
        block = block.reshape(len(indices), self.n_bands, self.size, self.size)
        _store(block, where, out)

    def _image_hdu(self, tile: str):
        import fitsio

        if tile in self._open:
            self._open.move_to_end(tile)
            return self._open[tile][0], None
        path = self._resolve(tile)
        if not path.is_file():
            return None, st.MISSING_FILE
        try:
            fits = fitsio.FITS(str(path))
            hdu = image_hdu(fits)
        except (OSError, ValueError):
            return None, st.CORRUPT_FILE
        if hdu is None:
            fits.close()
            return None, st.EMPTY_HDU
        self._open[tile] = (hdu, fits)
        if len(self._open) > self.max_open:
            _, (_, old) = self._open.popitem(last=False)
            old.close()
        return hdu, None

    def _forget(self, tile: str) -> None:
        entry = self._open.pop(tile, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        """Close the tile files this source keeps open."""
        for tile in list(self._open):
            self._forget(tile)


class FileSource(CutoutSource):
    """One file per galaxy: FITS, an image (size, size) or (bands, size, size) in its first image HDU; or PNG/JPEG."""

    #: Threads decoding PNG/JPEG stamps at once (environment RELABEL_READ_THREADS): Pillow
    #: releases the GIL while it decodes. FITS files are read in the calling thread (itself
    #: ahead of the network, see :func:`relabel.run.inference.predict_rows`): fitsio holds
    #: the GIL through every open and read, so more threads only queue for it (measured:
    #: 0.95x of one thread end to end) and keep the forward pass waiting between operations.
    read_threads = int(os.environ.get("RELABEL_READ_THREADS", 4))

    def __init__(self, spec: CutoutSpec, size: int | None = None, n_bands: int | None = None):
        super().__init__(spec, size, n_bands)
        self.columns = (spec.path_column,)
        self._pool: ThreadPoolExecutor | None = None

    def read(self, rows: pd.DataFrame) -> Cutouts:
        """Read the rows' files: PNG/JPEG stamps ``read_threads`` parts at once (in row order within each part),
        FITS files one after the other.

        Parameters
        ----------
        rows : pandas.DataFrame
            Rows holding each galaxy's file path (FITS, PNG or JPEG).

        Returns
        -------
        Cutouts
            As :meth:`CutoutSource.read`.
        """
        from relabel.cutouts.stamps import is_stamp

        names = rows[self.spec.path_column].to_numpy()
        if self.read_threads <= 1 or len(rows) < 4 * self.read_threads or \
                2 * sum(is_stamp(str(name)) for name in names) < len(names):
            return self._read_files(rows)
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="relabel-files")
        parts = np.array_split(np.arange(len(rows)), self.read_threads)
        out = self._empty(len(rows))
        for part, got in zip(parts, self._pool.map(lambda p: self._read_files(rows.iloc[p]), parts)):
            out.images[part[0]:part[-1] + 1] = got.images
            out.status[part[0]:part[-1] + 1] = got.status
        return out

    def close(self) -> None:
        """Stop the reading threads, if any were started."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _read_stamp(self, path: str, target: np.ndarray) -> str | None:
        from relabel.cutouts.stamps import default_channels, read_stamp

        image, fault = read_stamp(path, self.spec.channels or default_channels(self.n_bands))
        if fault is None and image is not None:
            fault = self._check_shape(image.shape)
        if fault is None:
            target[...] = image
        return fault

    def _read_fits(self, path: str, target: np.ndarray) -> str | None:
        """Copy one FITS file's image into ``target`` (bands, size, size); its status when it cannot."""
        import fitsio

        try:
            with fitsio.FITS(path) as fits:
                hdu = image_hdu(fits)
                if hdu is None:
                    return st.EMPTY_HDU
                fault = self._check_shape(tuple(hdu.get_dims()))
                if fault is None:
                    target[...] = read_image(hdu).reshape(target.shape)  # BLANK pixels become NaN
                return fault
        except (OSError, ValueError):
            return st.CORRUPT_FILE

    def _read_files(self, rows: pd.DataFrame) -> Cutouts:
        from relabel.cutouts.stamps import is_stamp

        out = self._empty(len(rows))
        root = str(self.spec.root)
        for i, name in enumerate(rows[self.spec.path_column].to_numpy()):
            # Plain strings, not pathlib: per file, Path objects cost a tenth of reading a stamp.
            path = os.path.join(root, str(name))  # an absolute name replaces the root, as Path's / does
            fault = self._read_stamp(path, out.images[i]) if is_stamp(path) else self._read_fits(path, out.images[i])
            if fault is not None:
                # Asked only when a file fails: a stat per file costs as much as reading a small stamp's pixels.
                out.status[i] = st.MISSING_FILE if not os.path.isfile(path) else fault
                out.images[i] = 0
        # One pass over the batch for non-finite pixels instead of one per file (NaN statuses as _store gives them).
        bad = np.flatnonzero(~np.isfinite(out.images).reshape(len(rows), -1).all(axis=1))
        if len(bad):
            block = out.images[bad].copy()
            out.images[bad] = 0
            _store(block, bad, out)
        return out


def open_cutout_source(workflow: Workflow, size: int | None = None, n_bands: int | None = None,
                       image: str | pd.Series | None = None) -> CutoutSource:
    """The source for the workflow's cutout layout; ``size``/``n_bands`` default to the workflow's.

    ``image`` (layout "images"): the survey image every row read lies on, e.g. its shard's;
    or each row's image, by catalog row number (a shard packing several images).

    Parameters
    ----------
    workflow : relabel.config.Workflow
        Its ``cutouts`` section chooses the layout (tiles, files or images).
    size : int, optional
        Cutout side, pixels (e.g. the checkpoint's input size).
    n_bands : int, optional
        Bands to read, the first ``n_bands`` of ``cutouts.bands``.
    image : str or pandas.Series, optional
        Layout "images": the image path template every row lies on, or a Series of them
        indexed by catalog row number (the index of the rows read).

    Returns
    -------
    CutoutSource
        Use as a context manager, so that its open files are closed.
    """
    if workflow.cutouts.layout == "images":
        from relabel.cutouts.images import ImageSource

        spec = workflow.catalog
        return ImageSource(workflow.cutouts, size, n_bands, spec.ra, spec.dec, image, (spec.ra_unit, spec.dec_unit))
    kinds = {"tiles": TileSource, "files": FileSource}
    return kinds[workflow.cutouts.layout](workflow.cutouts, size, n_bands)


_first_image = image_hdu  # kept for callers of the old name; relabel.cutouts.pixels finds image HDUs now


def _consecutive(index: np.ndarray) -> bool:
    """True for a non-empty run n, n+1, ...: a slice can stand in for a gather."""
    return len(index) > 0 and bool((np.diff(index) == 1).all())


def _read_section(hdu, lo: int, hi: int) -> np.ndarray:
    return read_section(hdu, lo, hi)  # BSCALE/BZERO applied, BLANK pixels NaN (relabel.cutouts.pixels)


def _store(block: np.ndarray, where: np.ndarray, out: Cutouts) -> None:
    """Copy good images into ``out``; NaN/inf pixels decide the row's status."""
    # Byte order is fixed during the one copy into place; then one pass checks for NaN.
    if (block.dtype == np.float32 or block.dtype == np.dtype(">f4")) and _consecutive(where):
        target = out.images[where[0]:where[-1] + 1]
        target[...] = block
        if np.isfinite(target).all():
            return
        target[...] = 0  # rows that turn out unusable must hold zeros, as documented
    block = block.astype(np.float32, copy=False)
    if np.isfinite(block).all():
        out.images[where] = block
        return
    bad = ~np.isfinite(block)
    bad_fraction = bad.reshape(len(block), -1).mean(axis=1)
    out.status[where[bad_fraction > 0]] = st.NAN_FILLED
    out.status[where[bad_fraction > st.MAX_NAN_FRACTION]] = st.TOO_MANY_NAN
    out.status[where[bad_fraction >= 1.0]] = st.ALL_NAN
    keep = bad_fraction <= st.MAX_NAN_FRACTION
    images = np.where(bad[keep], np.float32(0), block[keep])
    out.images[where[keep]] = images
