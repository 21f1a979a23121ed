"""Galaxy ids: any integer or text type, checked for nulls and duplicates before any work starts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from relabel.catalog.missing import missing_mask
from relabel.errors import CatalogError

SHOWN = 5  # row numbers named in an error message


def check_ids(ids: pd.Series, source, column: str) -> None:
    """Refuse null, floating-point and duplicate ids, naming their row numbers.

    Parameters
    ----------
    ids : pandas.Series, shape (n,)
        The id column, indexed by catalog row number.
    source : str or Path
        The catalog, for the message.
    column : str
        The id column's name, for the message.

    Raises
    ------
    CatalogError
        ``"{source}: id column OBJID holds 2 null value(s) (rows 4, 9)"`` and the like.
    """
    kind = getattr(ids.dtype, "kind", "O")
    if kind == "f":
        raise CatalogError(f"{source}: id column {column} holds floating-point numbers ({ids.dtype}); ids must be "
                           "integers or text, which a float cannot hold exactly beyond 2**53")
    null = missing_mask(ids) if kind not in "iu" or hasattr(ids.dtype, "numpy_dtype") else np.zeros(len(ids), bool)
    if kind in "OUS" or str(ids.dtype) in ("str", "string"):
        null |= np.array([isinstance(v, str) and v.strip() == "" for v in ids], dtype=bool)
    rows = ids.index.to_numpy()
    if null.any():
        raise CatalogError(f"{source}: id column {column} holds {int(null.sum())} null value(s) "
                           f"(rows {_first(rows[null])}); every galaxy needs an id")
    values = ids.str.rstrip() if kind in "OUS" or str(ids.dtype) in ("str", "string") else ids
    repeated = values.duplicated(keep=False).to_numpy()
    if repeated.any():
        first = values[repeated].iloc[0]
        shown = _shown(first)
        raise CatalogError(f"{source}: id column {column} repeats {int(values[repeated].nunique())} id(s) on "
                           f"{int(repeated.sum())} rows (rows {_first(rows[repeated])}; e.g. {shown} on rows "
                           f"{_first(rows[(values == first).to_numpy()])}); relabel needs one row per galaxy: "
                           "deduplicate the catalog first")


def _first(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:SHOWN])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > SHOWN else "")


def id_keys(ids: pd.Series) -> pd.Series:
    """Each id as the text it stands for, so tables that store one id in different types still match.

    Integers (NumPy or pandas nullable, any width or signedness) become their exact
    decimal text, never through float; text loses the trailing blanks FITS pads it with;
    bytes are decoded as ASCII. A truth table with integer ids thus matches a catalog
    that stores the same ids as text, and ``"NGC 1300  "`` matches ``"NGC 1300"``.

    Parameters
    ----------
    ids : pandas.Series, shape (n,)
        An id column (integer or text).

    Returns
    -------
    pandas.Series of object, shape (n,)
        The keys, same index; None where the id is null.
    """
    def key(value):
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            return None
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str):
            return value.rstrip()
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        return str(value)

    dtype = ids.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":  # the common case, without a Python loop
        return pd.Series(ids.to_numpy().astype(str).astype(object), index=ids.index, dtype=object)
    return pd.Series([key(v) for v in ids.to_numpy(dtype=object)], index=ids.index, dtype=object)


def match_by_id(ids: pd.Series, table_ids: pd.Series, values: pd.Series, where: str, id_column: str) -> pd.Series:
    """``values`` of another table (e.g. a truth table) for each of ``ids``, matched by :func:`id_keys`.

    Parameters
    ----------
    ids : pandas.Series, shape (n,)
        The ids to look up (a catalog's or a run's).
    table_ids, values : pandas.Series, shape (m,)
        The other table's ids and the column to take from it.
    where : str
        The other table, for messages.
    id_column : str
        The id column's name, for messages.

    Returns
    -------
    pandas.Series, shape (n,)
        Aligned with ``ids`` (same index).

    Raises
    ------
    CatalogError
        The other table repeats an id, or lacks some of ``ids`` (naming one, and the two
        tables' id types when none match at all).
    """
    keys = id_keys(table_ids)
    repeated = keys.duplicated(keep=False).to_numpy()
    if repeated.any():
        raise CatalogError(f"{where}: {id_column} repeats {int(keys[repeated].nunique())} id(s) "
                           f"(e.g. {keys[repeated].iloc[0]!r}); it needs one row per galaxy")
    lookup = pd.Series(values.to_numpy(), index=pd.Index(keys.to_numpy(), dtype=object))
    wanted = id_keys(ids)
    absent = ~wanted.isin(lookup.index).to_numpy()
    if absent.any():
        hint = ""
        if absent.all():
            hint = (f"; no id matches at all: the ids are {ids.dtype} here and {table_ids.dtype} there "
                    f"(e.g. {_shown(ids.iloc[0])} and {_shown(table_ids.iloc[0])})" if len(table_ids)
                    else "; it is empty")
        raise CatalogError(f"{where} has no row for {int(absent.sum())} of the {len(ids)} galaxies "
                           f"(e.g. {id_column} {_shown(ids[absent].iloc[0])}){hint}")
    return pd.Series(lookup.reindex(wanted.to_numpy()).to_numpy(), index=ids.index)


def _shown(value) -> str:
    """An id as a message shows it: text quoted (its blanks visible), numbers bare."""
    return repr(value) if isinstance(value, (str, bytes)) else str(value)
