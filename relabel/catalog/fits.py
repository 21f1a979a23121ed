"""FITS tables (BINTABLE and ASCII TABLE) read as the FITS standard defines their columns.

fitsio (cfitsio) is fast and right for plain columns and for the unsigned-integer
conventions, but misreads a scaled integer column (TSCALn != 1 or a TZEROn other
than the unsigned offsets): the values come back as garbage and the columns read
with it shift. It also leaves TNULLn values and blank ASCII fields as numbers, and an undefined
logical value as False.
So each column gets a *route* from the header: plain columns go through fitsio,
scaled, null-declaring and logical binary columns through ``astropy.io.fits`` (which
applies TSCAL/TZERO), and ASCII tables through their field text, parsed here so
that blank fields and TNULL strings become missing (astropy reads both as 0).

Reference: FITS standard 4.0 (Pence et al. 2010, A&A 524, A42), sections 7.2
(ASCII tables: TNULLn strings, blank fields) and 7.3 (binary tables: TSCALn,
TZEROn, TNULLn on the stored integer, unsigned conventions in table 19).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from relabel.catalog.base import Catalog
from relabel.errors import CatalogError

# TZEROn values that, with TSCALn = 1, mean an unsigned (or, for bytes, signed) integer column (FITS 4.0, table 19);
# cfitsio applies them itself.
NATIVE_OFFSETS = {"B": -128, "I": 32768, "J": 2**31, "K": 2**63}


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is read: its route (``fitsio``, ``astropy`` or ``ascii``) and its null convention."""

    name: str
    route: str
    tform: str
    tnull: int | str | None = None
    scale: float = 1.0
    zero: float = 0.0


def plan_columns(header, ascii_table: bool) -> list[ColumnPlan]:
    """One :class:`ColumnPlan` per column of a table HDU, from its header cards.

    Parameters
    ----------
    header : mapping
        The table HDU's header (``fitsio`` or ``astropy`` header; indexed by card name).
    ascii_table : bool
        True for an ASCII TABLE extension (every column then parsed from its text).
    """
    plans = []
    for i in range(1, int(header["TFIELDS"]) + 1):
        name = str(header.get(f"TTYPE{i}", f"COL{i}")).strip()
        tform = str(header[f"TFORM{i}"]).strip().upper()
        scale = float(header.get(f"TSCAL{i}", 1.0))
        zero = float(header.get(f"TZERO{i}", 0.0))
        tnull = header.get(f"TNULL{i}")
        if ascii_table:
            route = "ascii"
        else:
            letter = tform.lstrip("0123456789")[:1]
            native_offset = scale == 1.0 and zero == NATIVE_OFFSETS.get(letter, 0)
            plain = (native_offset or (scale == 1.0 and zero == 0.0)) and tnull is None
            # fitsio reads a logical's undefined value (byte 0) as False: read its stored bytes instead.
            route = "fitsio" if plain and letter != "L" else "astropy"
        plans.append(ColumnPlan(name, route, tform, tnull, scale, zero))
    return plans


class FitsCatalog(Catalog):
    """A FITS binary or ASCII table: plain columns through fitsio, the others as the standard says."""

    def __init__(self, path: Path, hdu: int | str | None = None):
        import fitsio

        self.path = path
        try:
            fits = fitsio.FITS(str(path))
        except OSError as exc:
            raise CatalogError(f"{path}: not a readable FITS file ({exc})") from None
        with fits:
            self.hdu = _choose_table_hdu(fits, path, hdu)
            info = fits[self.hdu]
            self.nrows = info.get_nrows()
            ascii_table = info.get_exttype() == "ASCII_TBL"
            header = info.read_header()
            _refuse_truncated(path, info, header)
            self.plans = {p.name: p for p in plan_columns(header, ascii_table)}
            self.columns = list(self.plans)
            self._units = {name: str(header.get(f"TUNIT{i}", "")).strip() for i, name in enumerate(self.columns, 1)}
        # cfitsio matches names regardless of case: columns with a case sibling are refused by require(), not read
        upper = [c.upper() for c in self.columns]
        readable = [c for c in self.columns if upper.count(c.upper()) == 1]
        sample = self._read_columns(readable, 0, min(1, self.nrows))
        self._dtypes, self._shapes = {c: np.dtype(object) for c in self.columns}, {}
        for c in readable:
            self._dtypes[c], self._shapes[c] = _element_type(sample[c])

    def require(self, columns: Sequence[str], numeric: Sequence[str] = (), what: str = "the workflow") -> None:
        """As :meth:`Catalog.require`; also refuses variable-length numeric columns (TFORM ``rPt(e)``, ``rQt(e)``).

        Their rows hold arrays of different lengths, which a reader of fixed-size cells pads
        with zeros indistinguishable from real values; relabel refuses them up front instead.
        Variable-length text (``rPA(e)``) is read as text.

        Parameters
        ----------
        columns, numeric, what
            As for :meth:`Catalog.require`.

        Raises
        ------
        CatalogError
            Also naming a variable-length array column and its TFORM.
        """
        super().require([self._file_name(c) for c in columns], [self._file_name(c) for c in numeric], what)
        for column in dict.fromkeys(self._file_name(c) for c in columns):
            plan = self.plans[column]
            kind = plan.tform.lstrip("0123456789")
            # Variable-length text (rPA(e), what fitsio writes for Python strings) is text of any length: read it.
            if kind[:1] in ("P", "Q") and kind[1:2] != "A":
                raise CatalogError(f"{self.path}: column {column} is a variable-length array (TFORM {plan.tform}), "
                                   f"whose rows differ in length; {what} cannot use it: leave it out (for "
                                   "catalog.passthrough, pass fixed-size vector columns only)")

    def read(self, columns: Sequence[str], start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start:stop`` of ``columns``, decoded from the FITS binary table (see :meth:`Catalog.read`).

        Parameters
        ----------
        columns : sequence of str
            FITS column names (TTYPE), exact case.
        start, stop : int
            0-based row range of the table; ``stop`` None means through its last row.
        """
        self.require(columns, what="this read")
        start, stop = self._check_range(start, stop)
        columns = list(dict.fromkeys(columns))
        arrays = self._read_columns(list(dict.fromkeys(self._file_name(c) for c in columns)), start, stop)
        return pd.DataFrame({c: arrays[self._file_name(c)] for c in columns}, index=pd.RangeIndex(start, stop))

    def read_rows(self, columns: Sequence[str], rows: np.ndarray) -> pd.DataFrame:
        """The given row numbers (any order), reading only those rows (a shard of scattered tile rows).

        Parameters
        ----------
        columns : sequence of str
            FITS column names (TTYPE), exact case.
        rows : numpy.ndarray of int, shape (n,)
            0-based table rows; each is read on its own, so scattered rows cost no more than their count.

        Returns
        -------
        pandas.DataFrame
            As :meth:`Catalog.read_rows`.

        Raises
        ------
        CatalogError
            A row number is outside the table.
        """
        self.require(columns, what="this read")
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.nrows):
            raise CatalogError(f"{self.path}: row numbers outside the table's {self.nrows} rows")
        columns = list(dict.fromkeys(columns))
        names = list(dict.fromkeys(self._file_name(c) for c in columns))
        order = np.argsort(rows, kind="stable")
        arrays = self._read_columns(names, 0, 0, rows=rows[order]) if len(rows) else self._read_columns(names, 0, 0)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return pd.DataFrame({c: arrays[self._file_name(c)][inverse] for c in columns}, index=pd.Index(rows))

    def _file_name(self, column: str) -> str:
        """The table's own name for ``column``: FITS column names compare regardless of case (FITS 4.0,
        section 7.2.2), so a workflow's ``OBJID`` reads a column ``objid``, unless several columns fold to it."""
        if column in self.plans:
            return column
        folded = [c for c in self.columns if c.upper() == column.upper()]
        return folded[0] if len(folded) == 1 else column

    def dtype(self, column: str) -> np.dtype:
        """As :meth:`Catalog.dtype`, the name compared regardless of case (:meth:`_file_name`)."""
        return super().dtype(self._file_name(column))

    def shape(self, column: str) -> tuple:
        """As :meth:`Catalog.shape`, the name compared regardless of case."""
        return super().shape(self._file_name(column))

    def unit(self, column: str) -> str | None:
        """As :meth:`Catalog.unit` (``TUNITn``), the name compared regardless of case."""
        return super().unit(self._file_name(column))

    def _read_columns(self, columns: list[str], start: int, stop: int, rows: np.ndarray | None = None) -> dict:
        """Column name -> values of rows ``start:stop`` (or the sorted ``rows``), by route."""
        out = {}
        plain = [c for c in columns if self.plans[c].route == "fitsio"]
        other = [c for c in columns if self.plans[c].route != "fitsio"]
        if plain:
            out.update(self._read_fitsio(plain, start, stop, rows))
        if other:
            from astropy.io import fits as afits

            n = stop - start if rows is None else len(rows)
            with afits.open(self.path, memmap=True) as hdul:
                data = hdul[self.hdu].data
                sub = None if data is None else data[start:stop] if rows is None else data[rows]
                for c in other:
                    out[c] = _read_astropy(sub, self.plans[c], n)
        return out

    def _read_fitsio(self, columns: list[str], start: int, stop: int, rows: np.ndarray | None) -> dict:
        import fitsio

        with fitsio.FITS(str(self.path)) as fits:
            hdu = fits[self.hdu]
            if rows is None and stop == start:
                full = hdu.get_rec_dtype()[0]
                rec = np.zeros(0, dtype=[(c, full[c]) for c in columns])
            else:
                rec = hdu.read(columns=columns, rows=np.arange(start, stop) if rows is None else rows)
        return {c: finish_values(rec[c], None, nullable=False) for c in columns}


def _refuse_truncated(path: Path, info, header) -> None:
    """A file cut short (an interrupted copy or download) holds fewer bytes than its table header promises."""
    from relabel.catalog.reader import whole_file_compression

    if whole_file_compression(path):
        return  # the compressed size says nothing; gzip and bzip2 themselves report a stream cut short
    # The data proper, without the padding to 2880 bytes that some writers leave off the last HDU.
    end = int(info.get_offsets()["data_start"]) + int(header.get("NAXIS1", 0)) * int(header.get("NAXIS2", 0)) + \
        int(header.get("PCOUNT", 0))
    size = path.stat().st_size
    if size < end:
        raise CatalogError(f"{path}: truncated: its table HDU {info.get_extnum()} ({info.get_nrows()} rows) "
                           f"ends at byte {end:,} but the file has {size:,} bytes; copy it again")
    padded = int(info.get_offsets()["data_end"])
    if size < padded:
        raise CatalogError(f"{path}: its last block is not padded to a multiple of 2880 bytes ({size:,} bytes, "
                           f"{padded:,} expected), as the FITS standard requires and cfitsio needs to read it; "
                           f"append the {padded - size:,} zero bytes a table's padding holds")


def finish_values(values: np.ndarray, mask: np.ndarray | None, nullable: bool):
    """Native byte order, text stripped of trailing blanks (empty text is missing), nulls applied.

    Vector columns become an object array holding one 1-D array per row.

    Parameters
    ----------
    values : numpy.ndarray, shape (n,) or (n, k)
        A column as read from FITS (any byte order; text as bytes).
    mask : numpy.ndarray of bool, shape (n,), or None
        True where the value is null (TNULL, or empty text).
    nullable : bool
        Give integer columns pandas' nullable ``Int64`` type even without nulls.

    Returns
    -------
    numpy.ndarray or pandas array, shape (n,)
    """
    if values.dtype == object and values.ndim == 1 and len(values) and all(
            isinstance(v, (str, bytes)) for v in values):
        # variable-length text (TFORM rPA(e)): one Python string per row
        values = np.array([v.decode("ascii", "replace") if isinstance(v, bytes) else v for v in values], dtype=str)
    if values.dtype.kind in "SU":
        text = np.char.rstrip(values.astype(str) if values.dtype.kind == "S" else values, " \0")
        obj = text.astype(object)
        obj[(text == "") | (mask if mask is not None else False)] = None
        return obj if obj.ndim == 1 else _rows_of(obj)
    values = values.astype(values.dtype.newbyteorder("="), copy=False)
    if values.ndim > 1:
        return _rows_of(values)
    if values.dtype.kind == "f":
        if mask is not None and mask.any():
            values = values.copy()
            values[mask] = np.nan
        return values
    if nullable and values.dtype.kind in "iu":
        return pd.arrays.IntegerArray(values, np.zeros(len(values), bool) if mask is None else mask.copy())
    return values


def _rows_of(values: np.ndarray) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, row in enumerate(values):
        out[i] = row
    return out


def _read_astropy(sub, plan: ColumnPlan, n: int):
    """A scaled or null-declaring binary column from its stored integers (astropy memory-maps the rows).

    value = TZEROn + TSCALn * stored (FITS 4.0 eq. 7), in float64 as astropy gives it;
    the unsigned offsets stay exact integers; TNULLn is compared with the stored value.
    """
    if plan.route == "ascii":
        return _read_ascii(sub, plan, n)
    raw = np.asarray(sub.view(np.ndarray)[plan.name] if n else np.zeros(0, sub.dtype[plan.name] if sub is not None
                                                                         else np.int64))
    raw = raw.astype(raw.dtype.newbyteorder("="), copy=False)
    letter = plan.tform.lstrip("0123456789")[:1]
    if letter == "L":
        return _logical(raw)
    mask = None
    if plan.tnull is not None:
        mask = raw == int(plan.tnull)
        if mask.ndim > 1:
            mask = mask.any(axis=tuple(range(1, mask.ndim)))
    if plan.scale == 1.0 and plan.zero == NATIVE_OFFSETS.get(letter, 0) and plan.zero != 0:
        # flip the sign bit: the exact integer, in the other signedness (FITS 4.0 table 19)
        unsigned = np.dtype(f"u{raw.dtype.itemsize}")
        flipped = raw.view(unsigned) ^ unsigned.type(1 << (8 * raw.dtype.itemsize - 1))
        values = flipped if raw.dtype.kind == "i" else flipped.view(f"i{raw.dtype.itemsize}")
    elif plan.scale == 1.0 and plan.zero == 0.0:
        values = raw
    else:
        values = raw.astype(np.float64) * plan.scale + plan.zero
    return finish_values(values, mask, nullable=plan.tnull is not None)


def _logical(raw: np.ndarray):
    """A logical (TFORM L) column from its stored bytes: ``T``, ``F``, or 0 for undefined (FITS 4.0, 7.3.3.1).

    Scalar columns with an undefined value become pandas' nullable boolean; vector
    ones give one array per row, ``None`` for undefined elements.
    """
    undefined = raw == 0
    values = raw == ord("T")
    if values.ndim > 1:
        if not undefined.any():
            return _rows_of(values)
        rows = values.astype(object)
        rows[undefined] = None
        return _rows_of(rows)
    return pd.arrays.BooleanArray(values, undefined) if undefined.any() else values


def _read_ascii(sub, plan: ColumnPlan, n: int):
    """An ASCII TABLE column from its field text: blank fields and the TNULL string are missing."""
    letter = plan.tform[:1]
    if n == 0:
        return np.zeros(0, object) if letter == "A" else (
            pd.arrays.IntegerArray(np.zeros(0, np.int64), np.zeros(0, bool)) if letter == "I" and plan.scale == 1.0
            and plan.zero == 0.0 else np.zeros(0, np.float64))
    raw = sub.view(np.ndarray)[plan.name]
    text = np.char.strip(np.asarray(raw, dtype="S"))
    if letter == "A":
        return finish_values(np.char.rstrip(np.asarray(raw, dtype="S")), None, nullable=False)
    mask = text == b""
    if plan.tnull is not None:
        mask |= text == str(plan.tnull).strip().encode()
    # numpy's stubs type char.upper as str-only; ``text`` is bytes (dtype S) and stays bytes.
    filled = np.where(mask, b"0", np.char.replace(np.char.upper(text), b"D", b"E"))  # type: ignore[arg-type]
    scaled = plan.scale != 1.0 or plan.zero != 0.0
    if letter == "I" and not scaled:
        return pd.arrays.IntegerArray(filled.astype(np.int64), mask)
    values = filled.astype(np.float64) * plan.scale + plan.zero
    values[mask] = np.nan
    return values


def _element_type(values) -> tuple:
    """(dtype, per-row shape) of a column from its first row(s)."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        first = next((v for v in values if v is not None), None)
        if isinstance(first, np.ndarray):
            return first.dtype, first.shape
        return np.dtype(object), ()
    return values.dtype, ()


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
