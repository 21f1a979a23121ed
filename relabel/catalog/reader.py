"""Catalogs: read only the mapped columns of a FITS or Parquet table, in row ranges.

A survey catalog may hold tens of millions of rows, so nothing here loads a whole
table: :meth:`Catalog.read` takes a row range and a column list, and returns a
pandas DataFrame in native byte order (FITS is big-endian; pandas and Arrow are not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from relabel.errors import CatalogError

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")


class Catalog:
    """A table of galaxies read by row ranges. Use :func:`open_catalog`."""

    path: Path
    nrows: int
    columns: list[str]
    _dtypes: dict[str, np.dtype]

    def read(self, columns: Sequence[str], start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start:stop`` of ``columns`` as a DataFrame indexed from ``start``."""
        raise NotImplementedError

    def dtype(self, column: str) -> np.dtype:
        """The column's dtype as stored (FITS: big-endian; reads return native order)."""
        return self._dtypes[column]

    def read_rows(self, columns: Sequence[str], rows: np.ndarray) -> pd.DataFrame:
        """The given row numbers (any order) of ``columns``, indexed by row number."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return self.read(columns, 0, 0)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        return self.read(columns, lo, hi).loc[rows]

    def iter_chunks(self, columns: Sequence[str], chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
        """Yield consecutive row ranges of ``columns``: whole-table work in bounded memory."""
        for start in range(0, self.nrows, chunk_rows):
            yield self.read(columns, start, min(start + chunk_rows, self.nrows))

    def read_all(self, columns: Sequence[str], chunk_rows: int = 1_000_000) -> pd.DataFrame:
        """All rows of a few columns (the whole table is never read, only these columns)."""
        chunks = list(self.iter_chunks(columns, chunk_rows))
        if not chunks:
            return self.read(columns, 0, 0)
        return pd.concat(chunks)

    def require(self, columns: Sequence[str], numeric: Sequence[str] = (), what: str = "the workflow") -> None:
        """Fail with the missing names and the available ones, or a non-numeric column.

        Raises
        ------
        CatalogError
            Naming the catalog file, the missing or non-numeric columns, and what asked for them.
        """
        missing = [c for c in dict.fromkeys(columns) if c not in self.columns]
        if missing:
            raise CatalogError(
                f"{self.path}: {what} needs column(s) {', '.join(missing)} which the catalog does not have; "
                f"available: {', '.join(self.columns)}"
            )
        for col in numeric:
            kind = self.dtype(col).kind
            if kind not in "biuf":
                raise CatalogError(
                    f"{self.path}: column {col} must be numeric for {what}, but it holds {self.dtype(col)} values"
                )

    def _check_range(self, start: int, stop: int | None) -> tuple[int, int]:
        stop = self.nrows if stop is None else stop
        if not 0 <= start <= stop <= self.nrows:
            raise CatalogError(f"{self.path}: row range {start}:{stop} is outside the table's {self.nrows} rows")
        return start, stop


class FitsCatalog(Catalog):
    """A FITS binary or ASCII table, read with fitsio."""

    def __init__(self, path: Path, hdu: int | str | None = None):
        import fitsio

        self.path = path
        try:
            fits = fitsio.FITS(str(path))
        except OSError as exc:
            raise CatalogError(f"{path}: not a readable FITS file ({exc})") from None
        with fits:
            hdu = _choose_table_hdu(fits, path, hdu)
            info = fits[hdu]
            self.hdu = hdu
            self.nrows = info.get_nrows()
            self.columns = list(info.get_colnames())
            rec_dtype = info.get_rec_dtype()[0]
            self._dtypes = {name: rec_dtype[name] for name in rec_dtype.names}

    def read(self, columns: Sequence[str], start: int = 0, stop: int | None = None) -> pd.DataFrame:
        import fitsio

        self.require(columns, what="this read")
        start, stop = self._check_range(start, stop)
        columns = list(dict.fromkeys(columns))
        index = pd.RangeIndex(start, stop)
        if stop == start:
            return pd.DataFrame({c: np.empty(0, dtype=_native(self.dtype(c))) for c in columns}, index=index)
        with fitsio.FITS(str(self.path)) as fits:
            rec = fits[self.hdu].read(columns=columns, rows=np.arange(start, stop))
        return pd.DataFrame({c: _to_native(rec[c]) for c in columns}, index=index)

    def read_rows(self, columns: Sequence[str], rows: np.ndarray) -> pd.DataFrame:
        import fitsio

        self.require(columns, what="this read")
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return self.read(columns, 0, 0)
        if rows.min() < 0 or rows.max() >= self.nrows:
            raise CatalogError(f"{self.path}: row numbers outside the table's {self.nrows} rows")
        columns = list(dict.fromkeys(columns))
        order = np.argsort(rows, kind="stable")
        with fitsio.FITS(str(self.path)) as fits:
            rec = fits[self.hdu].read(columns=columns, rows=rows[order])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return pd.DataFrame({c: _to_native(rec[c])[inverse] for c in columns}, index=pd.Index(rows))


class ParquetCatalog(Catalog):
    """A Parquet file or a folder of Parquet files (e.g. a relabel output), read by row groups."""

    def __init__(self, path: Path):
        import pyarrow.dataset as ds

        self.path = path
        try:
            self._dataset = ds.dataset(str(path), format="parquet")
            schema = self._dataset.schema
            self._fragments = list(self._dataset.get_fragments())
            self._counts = [f.count_rows() for f in self._fragments]
        except Exception as exc:  # Arrow raises several types for unreadable files
            raise CatalogError(f"{path}: not a readable Parquet file or dataset ({exc})") from None
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)]).astype(int)
        self.nrows = int(self._offsets[-1])
        self.columns = [n for n in schema.names if not n.startswith("__index_level")]
        self._dtypes = {f.name: np.dtype(f.type.to_pandas_dtype()) for f in schema if f.name in self.columns}

    def read(self, columns: Sequence[str], start: int = 0, stop: int | None = None) -> pd.DataFrame:
        self.require(columns, what="this read")
        start, stop = self._check_range(start, stop)
        columns = list(dict.fromkeys(columns))
        parts = []
        for frag, lo, hi in zip(self._fragments, self._offsets[:-1], self._offsets[1:]):
            if hi <= start or lo >= stop:
                continue
            table = frag.to_table(columns=columns)
            table = table.slice(max(start - lo, 0), min(stop, hi) - max(start, lo))
            parts.append(table.to_pandas())
        if not parts:
            frame = pd.DataFrame({c: np.empty(0, dtype=self.dtype(c)) for c in columns})
        else:
            frame = pd.concat(parts, ignore_index=True)
        frame.index = pd.RangeIndex(start, stop)
        return frame


def open_catalog(path: str | Path, hdu: int | str | None = None) -> Catalog:
    """Open a FITS table (``hdu``: number or EXTNAME; default the first table) or Parquet data.

    Raises
    ------
    CatalogError
        The file does not exist, is neither FITS nor Parquet, the HDU is missing or is not a table,
        or the table is empty of columns.

    Examples
    --------
    >>> import numpy as np, fitsio, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "c.fits")
    >>> fitsio.write(path, np.array([(1, 0.5), (2, 0.9)], dtype=[("OBJID", ">i8"), ("P_CS", ">f4")]))
    >>> cat = open_catalog(path)
    >>> cat.nrows, cat.columns
    (2, ['OBJID', 'P_CS'])
    >>> cat.read(["P_CS"], 1, 2)["P_CS"].dtype.byteorder in "=<|"
    True
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog {path} does not exist")
    if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
        return ParquetCatalog(path)
    if not _looks_like_fits(path):
        raise CatalogError(
            f"{path}: not a FITS file (no SIMPLE card at its start) and not Parquet (.parquet); "
            "relabel reads FITS binary tables and Parquet"
        )
    return FitsCatalog(path, hdu)


def _looks_like_fits(path: Path) -> bool:
    if path.name.lower().endswith(".gz"):
        import gzip

        opener = gzip.open
    else:
        opener = open
    try:
        with opener(path, "rb") as fh:
            return fh.read(9) == b"SIMPLE  ="
    except OSError:
        return False


def _choose_table_hdu(fits, path: Path, hdu: int | str | None) -> int:
    tables = [i for i, h in enumerate(fits) if h.get_exttype() in ("BINARY_TBL", "ASCII_TBL")]
    names = [f"{i} ({fits[i].get_extname() or 'no name'}, {fits[i].get_exttype()})" for i in range(len(fits))]
    if hdu is None:
        if not tables:
            raise CatalogError(f"{path}: holds no table HDU; HDUs: {'; '.join(names)}")
        return tables[0]
    if isinstance(hdu, str) and not hdu.isdigit():
        matches = [i for i in range(len(fits)) if fits[i].get_extname().upper() == hdu.upper()]
        if not matches:
            raise CatalogError(f"{path}: no HDU named {hdu!r}; HDUs: {'; '.join(names)}")
        index = matches[0]
    else:
        index = int(hdu)
        if not 0 <= index < len(fits):
            raise CatalogError(f"{path}: no HDU {index} (the file has {len(fits)}); HDUs: {'; '.join(names)}")
    if index not in tables:
        raise CatalogError(f"{path}: HDU {hdu} is not a table ({fits[index].get_exttype()}); HDUs: {'; '.join(names)}")
    return index


def _native(dtype: np.dtype) -> np.dtype:
    if dtype.kind == "S":
        return np.dtype(object)
    return dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype


def _to_native(values: np.ndarray) -> np.ndarray:
    if values.ndim > 1:
        raise CatalogError(f"vector columns (shape {values.shape[1:]}) are not supported as catalog columns")
    if values.dtype.kind == "S":
        return values.astype(str)
    return values.astype(values.dtype.newbyteorder("="), copy=False)
