"""In-memory catalogs: a pandas DataFrame or an astropy Table, read like a file.

So that bias, train, evaluate and run take a table a user already holds. An
astropy Table's masked values become missing values (NaN, ``pd.NA``, ``None``)
exactly as when the same table is read from its FITS file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from relabel.catalog.base import Catalog
from relabel.catalog.fits import finish_values


class FrameCatalog(Catalog):
    """A pandas DataFrame (rows in order; its index is ignored) seen through the Catalog interface."""

    def __init__(self, frame: pd.DataFrame, name: str = "<DataFrame>", units: dict[str, str] | None = None):
        self.path = Path(name)
        self._units = dict(units or {})  # an astropy Table's column units (a DataFrame has none)
        self.frame = _decoded_text(frame.reset_index(drop=True))
        self.nrows = len(self.frame)
        self.columns = [str(c) for c in self.frame.columns]
        self._dtypes, self._shapes = {}, {}
        for column in self.columns:
            values = self.frame[column]
            first = values.iloc[0] if len(values) and values.dtype == object else None
            if isinstance(first, (np.ndarray, list, tuple)):
                self._shapes[column] = np.shape(first)
                self._dtypes[column] = np.asarray(first).dtype
            else:
                self._dtypes[column] = values.dtype

    def read(self, columns: Sequence[str], start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """A copy of rows ``start:stop`` of the in-memory frame's ``columns`` (see :meth:`Catalog.read`).

        Parameters
        ----------
        columns : sequence of str
            Names of the frame's columns.
        start, stop : int
            Positions in the frame, 0-based; ``stop`` None means its end.
        """
        self.require(columns, what="this read")
        start, stop = self._check_range(start, stop)
        out = self.frame.iloc[start:stop][list(dict.fromkeys(columns))].copy()
        out.index = pd.RangeIndex(start, stop)
        return out


def _decoded_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as FITS defines text: byte strings (``Table.to_pandas()`` of a FITS table keeps them)
    decoded, trailing blanks stripped, so a path, id or label compares as its file's value does."""
    out = None
    for name in frame.columns:
        values = frame[name]
        if values.dtype != object:
            continue
        sample = values.dropna()
        if not len(sample) or not isinstance(sample.iloc[0], (bytes, str)):
            continue
        out = frame.copy() if out is None else out
        out[name] = values.map(lambda v: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v).rstrip(" ")
                               if isinstance(v, (bytes, str)) else v)
    return frame if out is None else out


def table_to_frame(table) -> pd.DataFrame:
    """An astropy Table as a DataFrame: masks become missing values, text is stripped, vectors become arrays per row.

    Parameters
    ----------
    table : astropy.table.Table
        Possibly masked (as ``Table.read`` of a FITS file with nulls gives).
    """
    columns = {}
    for name in table.colnames:
        column = table[name]
        mask = np.ma.getmaskarray(column) if getattr(column, "mask", None) is not None else None
        if mask is not None and mask.ndim > 1:
            mask = np.asarray(mask.all(axis=tuple(range(1, mask.ndim))))
        values = np.asarray(column.data.data if hasattr(column.data, "data") and mask is not None else column)
        nullable = mask is not None and values.dtype.kind in "iu" and values.ndim == 1
        columns[name] = finish_values(values, mask if mask is not None and mask.any() or nullable else None, nullable)
    return pd.DataFrame(columns)
