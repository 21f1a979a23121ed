"""The catalog interface: a table read by row ranges and column lists, whatever it is stored in.

A survey catalog may hold tens of millions of rows, so nothing here loads a whole
table: :meth:`Catalog.read` takes a row range and a column list, and returns a
pandas DataFrame in native byte order (FITS is big-endian; pandas and Arrow are not).

Missing values come back as pandas understands them: NaN in float columns,
``pd.NA`` in nullable integer columns (``Int16``, ``UInt64``, ...), ``None`` in
text columns; :mod:`relabel.catalog.missing` applies the one rule on top.
Vector (multi-element) columns come back as one NumPy array per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from relabel.errors import CatalogError


class Catalog:
    """A table of galaxies read by row ranges. Use :func:`relabel.catalog.open_catalog`."""

    path: Path
    nrows: int
    columns: list[str]
    _dtypes: dict[str, np.dtype]
    _shapes: dict[str, tuple] = {}
    _units: dict[str, str] = {}

    @property
    def n_rows(self) -> int:
        """The number of rows (an alias of ``nrows``)."""
        return self.nrows

    def read(self, columns: Sequence[str], start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start:stop`` of ``columns`` as a DataFrame indexed from ``start``.

        Parameters
        ----------
        columns : sequence of str
            Column names, as in the file.
        start, stop : int
            Row range, 0-based, ``stop`` exclusive; None reads to the end.

        Returns
        -------
        pandas.DataFrame
            ``stop - start`` rows, index ``start..stop-1``.
        """
        raise NotImplementedError

    def unit(self, column: str) -> str | None:
        """The unit the catalog states for ``column`` (FITS ``TUNITn``, a Parquet file's astropy metadata,
        an astropy Table column's unit), as written; None when it states none.

        Parameters
        ----------
        column : str
            A column name, as in the file.

        Returns
        -------
        str or None
        """
        return self._units.get(column) or None

    def dtype(self, column: str) -> np.dtype:
        """The column's dtype once read (native byte order; scaled integers: float64; nullable integers: ``Int64``...).

        A fixed-size vector column gives a sub-array dtype (``np.dtype((np.float32, (5,)))``).

        Parameters
        ----------
        column : str
            One of :attr:`columns`.

        Returns
        -------
        numpy.dtype or pandas.api.extensions.ExtensionDtype
        """
        base, shape = self._dtypes[column], self.shape(column)
        if shape and all(shape) and isinstance(base, np.dtype):
            return np.dtype((base, shape))
        return base

    def shape(self, column: str) -> tuple:
        """The shape of one row's value: ``()`` for scalar columns, ``(3,)`` for a 3E vector.

        Parameters
        ----------
        column : str
            One of :attr:`columns`; a column never sampled counts as scalar.

        Returns
        -------
        tuple of int
            Empty for a scalar column.
        """
        return self._shapes.get(column, ())

    def read_rows(self, columns: Sequence[str], rows: np.ndarray) -> pd.DataFrame:
        """The given row numbers (any order) of ``columns``, indexed by row number.

        Parameters
        ----------
        columns : sequence of str
            Column names, as in the file.
        rows : numpy.ndarray of int, shape (n,)
            0-based row numbers, in any order, repeats allowed.

        Returns
        -------
        pandas.DataFrame
            n rows in the order of ``rows``, indexed by row number.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return self.read(columns, 0, 0)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        return self.read(columns, lo, hi).loc[rows]

    def iter_chunks(self, columns: Sequence[str], chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
        """Yield consecutive row ranges of ``columns``: whole-table work in bounded memory.

        Parameters
        ----------
        columns : sequence of str
            Column names, as in the file.
        chunk_rows : int
            Rows per chunk (the last may be shorter).

        Yields
        ------
        pandas.DataFrame
            Consecutive chunks, indexed by row number.
        """
        for start in range(0, self.nrows, chunk_rows):
            yield self.read(columns, start, min(start + chunk_rows, self.nrows))

    def read_all(self, columns: Sequence[str], chunk_rows: int = 1_000_000) -> pd.DataFrame:
        """All rows of a few columns (the whole table is never read, only these columns).

        Parameters
        ----------
        columns : sequence of str
            Column names, as in the file.
        chunk_rows : int
            Rows read at once; bounds the memory of the intermediate copies.

        Returns
        -------
        pandas.DataFrame
            Every row, indexed by row number.
        """
        chunks = list(self.iter_chunks(columns, chunk_rows))
        if not chunks:
            return self.read(columns, 0, 0)
        return pd.concat(chunks)

    def require(self, columns: Sequence[str], numeric: Sequence[str] = (), what: str = "the workflow") -> None:
        """Fail with the missing names and the available ones, an ambiguous name, or a non-numeric column.

        Names match exactly. FITS treats names that differ only in case as the same
        (FITS standard 4.0, section 7.2.2), so a wanted column with such a sibling is
        refused, naming both, rather than risking the wrong one.

        Parameters
        ----------
        columns : sequence of str
            Columns that must exist.
        numeric : sequence of str
            Those of them that must also be numeric scalars (int or float, not vectors or text).
        what : str
            Who needs them, for the message (e.g. ``"relabel bias"``).

        Raises
        ------
        CatalogError
            Naming the catalog file, the missing, ambiguous, non-numeric or vector columns, and what asked for them.
        """
        wanted = list(dict.fromkeys(columns))
        missing = [c for c in wanted if c not in self.columns]
        if missing:
            hints = [f"{c} (the catalog has {', '.join(_case_siblings(c, self.columns))})"
                     if _case_siblings(c, self.columns) else c for c in missing]
            raise CatalogError(
                f"{self.path}: {what} needs column(s) {', '.join(hints)} which the catalog does not have; "
                f"available: {', '.join(self.columns)}"
            )
        for col in wanted:
            siblings = [s for s in _case_siblings(col, self.columns) if s != col]
            if siblings:
                raise CatalogError(
                    f"{self.path}: columns {col} and {', '.join(siblings)} differ only in case, which FITS treats "
                    f"as the same name; rename one so that {what} reads the right column"
                )
        for col in numeric:
            if self.shape(col):
                raise CatalogError(
                    f"{self.path}: column {col} holds vectors ({_per_row(self.shape(col))}); "
                    f"{what} needs one number per row"
                )
            kind = getattr(self.dtype(col), "kind", "O")
            # Arrow decimals (database exports) are numbers too: read as float64 where a number is needed.
            if kind not in "biuf" and not is_decimal(self.dtype(col)):
                raise CatalogError(
                    f"{self.path}: column {col} must be numeric for {what}, but it holds {self.dtype(col)} values"
                )

    def _check_range(self, start: int, stop: int | None) -> tuple[int, int]:
        stop = self.nrows if stop is None else stop
        if not 0 <= start <= stop <= self.nrows:
            raise CatalogError(f"{self.path}: row range {start}:{stop} is outside the table's {self.nrows} rows")
        return start, stop


def is_decimal(dtype) -> bool:
    """An Arrow decimal column (``decimal128(12, 6)[pyarrow]``), which relabel reads as float64 where it needs a number.

    Parameters
    ----------
    dtype : numpy.dtype or pandas.api.extensions.ExtensionDtype
        A column's dtype (:meth:`Catalog.dtype`).

    Returns
    -------
    bool
    """
    import pyarrow as pa

    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_decimal(dtype.pyarrow_dtype)


def _case_siblings(name: str, names: Sequence[str]) -> list[str]:
    return [n for n in names if n.upper() == name.upper()]


def _per_row(shape: tuple) -> str:
    size = int(np.prod(shape))
    return f"{size} values per row" if size else "a list per row"
