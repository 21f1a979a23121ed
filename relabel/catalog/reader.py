"""Open a catalog: a FITS table, a Parquet file or dataset folder, a pandas DataFrame or an astropy Table.

The formats live in their own modules (:mod:`relabel.catalog.fits`,
:mod:`relabel.catalog.parquet`, :mod:`relabel.catalog.memory`); all share the
:class:`~relabel.catalog.base.Catalog` interface (``require``, ``read``,
``read_all``, ``columns``, ``nrows``), read by row ranges, never whole.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from relabel.catalog.base import Catalog
from relabel.catalog.fits import FitsCatalog
from relabel.catalog.memory import FrameCatalog, table_to_frame
from relabel.catalog.parquet import ParquetCatalog
from relabel.errors import CatalogError

__all__ = ["Catalog", "FitsCatalog", "FrameCatalog", "ParquetCatalog", "catalog_folder", "describe_catalog",
           "in_memory", "open_catalog"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")


def open_catalog(path, hdu: int | str | None = None) -> Catalog:
    """Open a FITS table (``hdu``: number or EXTNAME; default the first table), Parquet data, or a table in memory.

    Parameters
    ----------
    path : str, Path, pandas.DataFrame, astropy.table.Table or Catalog
        A file or dataset folder, or a table already in memory (returned as a :class:`FrameCatalog`).
    hdu : int or str, optional
        FITS only: the table extension by number or EXTNAME.

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
    if isinstance(path, Catalog):
        return path
    if isinstance(path, pd.DataFrame):
        return FrameCatalog(path)
    if type(path).__name__ in ("Table", "QTable") and hasattr(path, "colnames"):
        units = {name: str(path[name].unit) for name in path.colnames if getattr(path[name], "unit", None) is not None}
        return FrameCatalog(table_to_frame(path), name="<astropy Table>", units=units)
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog {path} does not exist")
    if path.is_dir() or path.suffix.lower() in (".parquet", ".pq") or _looks_like_parquet(path):
        return ParquetCatalog(path)
    if not _looks_like_fits(path):
        raise CatalogError(
            f"{path}: not a FITS file (no SIMPLE card at its start) and not Parquet (no PAR1 magic); "
            "relabel reads FITS tables and Parquet files or folders"
        )
    return FitsCatalog(path, hdu)


def in_memory(catalog) -> bool:
    """True for a catalog given as a table in memory (pandas DataFrame, astropy Table, :class:`FrameCatalog`).

    Parameters
    ----------
    catalog : str, Path, pandas.DataFrame, astropy.table.Table or Catalog
        A catalog as the commands accept it.

    Returns
    -------
    bool

    Examples
    --------
    >>> in_memory(pd.DataFrame({"OBJID": [1]})), in_memory("catalog.fits")
    (True, False)
    """
    if isinstance(catalog, (str, Path)):
        return False
    return isinstance(catalog, (pd.DataFrame, FrameCatalog)) or type(catalog).__name__ in ("Table", "QTable")


def describe_catalog(catalog) -> str:
    """How messages and records name a catalog: its resolved path, or what kind of table in memory it is.

    Parameters
    ----------
    catalog : str, Path, pandas.DataFrame, astropy.table.Table or Catalog
        As for :func:`in_memory`; a table is named by its kind and length, never printed.

    Returns
    -------
    str
        E.g. ``/data/gz1/catalog.fits`` or ``<pandas DataFrame of 1,200 rows>``.

    Examples
    --------
    >>> describe_catalog(pd.DataFrame({"OBJID": [1, 2]}))
    '<pandas DataFrame of 2 rows>'
    """
    if not in_memory(catalog):
        return str(Path(catalog).resolve())
    kind = "pandas DataFrame" if isinstance(catalog, pd.DataFrame) else (
        "astropy Table" if type(catalog).__name__ in ("Table", "QTable") else "table in memory")
    return f"<{kind} of {len(catalog):,} rows>" if hasattr(catalog, "__len__") else f"<{kind}>"


def catalog_folder(catalog) -> Path:
    """The folder a workflow's relative paths (the cutout root) are taken from when none is given.

    A file's real folder (symlinks followed: a linked catalog still finds the cutouts beside
    the file it points to); the working folder for a table in memory.

    Parameters
    ----------
    catalog : str, Path, pandas.DataFrame, astropy.table.Table or Catalog
        As for :func:`in_memory`.

    Returns
    -------
    pathlib.Path
    """
    return Path.cwd() if in_memory(catalog) else Path(catalog).resolve().parent


def whole_file_compression(path: Path) -> str | None:
    """``"gzip"`` or ``"bzip2"`` when a file is compressed whole (by its first bytes, whatever its name), else None.

    cfitsio reads such a FITS file (``.fits.gz``, ``.fits.bz2``, or a gzip stream named ``.fits``)
    by inflating it; its size on disk then says nothing of the HDUs' sizes.

    Parameters
    ----------
    path : pathlib.Path

    Returns
    -------
    str or None
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(3)
    except OSError:
        return None
    return "gzip" if head[:2] == b"\x1f\x8b" else "bzip2" if head == b"BZh" else None


def _looks_like_fits(path: Path) -> bool:
    import bz2
    import gzip

    packing = whole_file_compression(path)
    try:
        if packing == "gzip":
            with gzip.open(path, "rb") as fh:
                return fh.read(9) == b"SIMPLE  ="
        if packing == "bzip2":
            with bz2.open(path, "rb") as fh:
                return fh.read(9) == b"SIMPLE  ="
        with open(path, "rb") as fh:
            return fh.read(9) == b"SIMPLE  ="
    except OSError:
        return False


def _looks_like_parquet(path: Path) -> bool:
    """A Parquet file by its content (``PAR1`` at both ends), whatever its name (``.parq``, none)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(-4, 2)
            return head == b"PAR1" and fh.read(4) == b"PAR1"
    except OSError:
        return False
