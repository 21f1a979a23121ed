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
        shown = repr(first) if isinstance(first, str) else str(first)
        raise CatalogError(f"{source}: id column {column} repeats {int(values[repeated].nunique())} id(s) on "
                           f"{int(repeated.sum())} rows (rows {_first(rows[repeated])}; e.g. {shown} on rows "
                           f"{_first(rows[(values == first).to_numpy()])}); relabel needs one row per galaxy: "
                           "deduplicate the catalog first")


def _first(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:SHOWN])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > SHOWN else "")
