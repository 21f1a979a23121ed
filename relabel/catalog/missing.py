"""The one missing-value rule, used by bias, train, evaluate, run and report.

A value is missing when it is a FITS null (TNULLn, a blank ASCII field, an empty
text field), NaN or infinite, a Parquet null, or one of the codes the workflow
declares for its column (``catalog.missing: {REDSHIFT: [-9999], M_R: [99]}``, as
SDSS and Galaxy Zoo tables use). Rows missing a value a command needs are left
out of bias and training and counted by column (each row once in the total);
``relabel run`` still predicts them and writes null where the value is missing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from relabel.catalog.base import is_decimal
from relabel.errors import ConfigError, DataWarning


def parse_missing_codes(value: Any, where: str = "workflow") -> dict[str, list]:
    """Validate ``catalog.missing``: a mapping of column name to a list of codes (numbers or text).

    Parameters
    ----------
    value : Any
        The ``catalog.missing`` value as read from YAML; None means no codes.
    where : str
        The workflow file, for messages.

    Returns
    -------
    dict of str to list
        Column name -> its missing-value codes.

    Raises
    ------
    ConfigError
        Naming the file and the key when the value is not such a mapping.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: key 'catalog.missing' must map column names to lists of codes, "
                          f"e.g. {{REDSHIFT: [-9999]}}; got {value!r}")
    codes = {}
    for column, items in value.items():
        items = items if isinstance(items, (list, tuple)) else [items]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                raise ConfigError(f"{where}: key 'catalog.missing.{column}' holds {item!r}; codes are numbers or text")
        codes[str(column)] = list(items)
    return codes


def missing_mask(values: pd.Series, codes: Sequence = ()) -> np.ndarray:
    """True where a column's value is missing: null, NaN, +-inf, or one of ``codes``.

    Codes compare in the column's own precision (a float32 column's -9999.0 is the
    float32 code), and text values after stripping trailing blanks.

    Parameters
    ----------
    values : pandas.Series, shape (n,)
    codes : sequence of numbers or str

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
    """
    if values.dtype == object and any(isinstance(v, np.ndarray) for v in values):
        return np.array([v is None or (np.ndim(v) == 0 and pd.isna(v)) for v in values], dtype=bool)
    if is_decimal(values.dtype):  # exact decimals: their codes compare as the float64 relabel reads them as
        values = pd.Series(values.to_numpy(dtype=np.float64, na_value=np.nan), index=values.index)
    mask = np.array(pd.isna(values), dtype=bool)
    kind = getattr(values.dtype, "kind", "O")
    if kind == "f":
        mask |= np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan))
    if len(codes):
        mask |= _matches(values, codes, kind)
    return mask


def _matches(values: pd.Series, codes: Sequence, kind: str) -> np.ndarray:
    if kind in "iuf":
        numbers = [c for c in codes if not isinstance(c, str)]
        if not numbers:
            return np.zeros(len(values), dtype=bool)
        dtype = values.dtype.numpy_dtype if hasattr(values.dtype, "numpy_dtype") else values.dtype
        if kind in "iu":
            numbers = [int(c) for c in numbers if float(c).is_integer()]
            return np.asarray(values.isin(numbers).fillna(False), dtype=bool)
        return np.asarray(values.isin(np.asarray(numbers, dtype=dtype)), dtype=bool)
    text = {str(c).rstrip() for c in codes}
    return np.array([isinstance(v, str) and v.rstrip() in text for v in values], dtype=bool)


def drop_missing(frame: pd.DataFrame, columns: Sequence[str], codes: Mapping[str, Sequence] | None = None
                 ) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of ``frame`` with every one of ``columns`` present, and the count of missing values by column.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table.
    columns : sequence of str
        The columns every kept row must have (null, NaN, inf and listed codes are missing).
    codes : mapping of str to sequence, optional
        Column -> values that mean missing (the workflow's ``catalog.missing``).

    Returns
    -------
    kept : pandas.DataFrame
        The complete rows, in order.
    counts : dict
        ``"missing COLUMN"`` -> rows missing that column (a row missing two columns counts in both;
        ``len(frame) - len(kept)`` counts it once).
    """
    codes = codes or {}
    keep = np.ones(len(frame), dtype=bool)
    counts = {}
    for column in dict.fromkeys(columns):
        bad = missing_mask(frame[column], codes.get(column, ()))
        if bad.any():
            counts[f"missing {column}"] = int(bad.sum())
            keep &= ~bad
    kept = frame[keep]
    _warn_about_suspect_codes(kept, columns, codes)
    return kept, counts


#: Values that catalogs (SDSS, Galaxy Zoo, VizieR tables) use to mean "missing" in numeric columns.
COMMON_CODES = (-99999, -9999, -999, -99, 99, 999, 9999, 99999)


def suspect_codes(values: pd.Series) -> dict[float, int]:
    """Common missing-value codes that a numeric column holds at its minimum or maximum.

    A real measurement can equal -99 or 9999 by chance, but a code used for missing values
    sits at the end of the column's range (below or above every real value), where it
    silently becomes the best or worst bin of an observable.

    Parameters
    ----------
    values : pandas.Series
        One numeric column (missing values already removed).

    Returns
    -------
    dict
        Code -> number of rows holding it; empty when there is none.

    Examples
    --------
    >>> suspect_codes(pd.Series([0.05, 0.1, -9999.0, 0.2, -9999.0]))
    {-9999.0: 2}
    >>> suspect_codes(pd.Series([-120.0, -99.0, 3.0]))  # -99 inside the range: a value like any other
    {}
    """
    if values.dtype.kind not in "iuf" or len(values) == 0:
        return {}
    array = values.to_numpy()
    low, high = array.min(), array.max()
    found = {}
    for code in COMMON_CODES:
        if code in (low, high):
            count = int((array == code).sum())
            if count:
                found[float(code)] = count
    return found


def _warn_about_suspect_codes(frame: pd.DataFrame, columns: Sequence[str], codes: Mapping[str, Sequence]) -> None:
    for column in dict.fromkeys(columns):
        if column in codes:
            continue  # declared: the user has said what the codes of this column are
        for code, count in suspect_codes(frame[column]).items():
            warnings.warn(f"column {column} holds {count} value(s) of {code:g} at the end of its range, a common "
                          f"missing-value code; they are used as real values. If they mean missing, declare them "
                          f"in the workflow: catalog: {{missing: {{{column}: [{code:g}]}}}}", DataWarning,
                          stacklevel=3)


def as_numpy_columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with nullable integer columns (no nulls left) as plain NumPy integers, and Arrow decimals
    (database exports) as float64, for array code.

    Parameters
    ----------
    frame : pandas.DataFrame
        A table without nulls in ``columns``.
    columns : sequence of str
        The columns to convert; others are kept as they are.

    Returns
    -------
    pandas.DataFrame
    """
    out = frame.copy(deep=False)
    for column in dict.fromkeys(columns):
        dtype = out[column].dtype
        if hasattr(dtype, "numpy_dtype") and dtype.kind in "iub" and not out[column].isna().any():
            out[column] = out[column].to_numpy(dtype=dtype.numpy_dtype)
        elif is_decimal(dtype):
            out[column] = out[column].to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def null_where(values: pd.Series, mask: np.ndarray):
    """``values`` with null where ``mask`` is True, keeping the column's type (integers become nullable).

    Parameters
    ----------
    values : pandas.Series, shape (n,)
        A column.
    mask : numpy.ndarray of bool, shape (n,)
        True where the value is to be null.

    Returns
    -------
    pandas array or numpy.ndarray, shape (n,)
    """
    if not mask.any():
        return values.array
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        nullable = pd.array(values.to_numpy(), dtype=f"{'U' if dtype.kind == 'u' else ''}Int{8 * dtype.itemsize}")
        nullable[mask] = pd.NA
        return nullable
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        out = values.to_numpy(copy=True)
        out[mask] = np.nan
        return out
    out = values.array.copy()
    out[mask] = None if not hasattr(dtype, "na_value") else dtype.na_value
    return out
