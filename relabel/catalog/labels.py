"""Catalog columns -> class labels: thresholded vote fractions, or one categorical column.

Codes are integers 0..K-1 in the order the classes are given. With probability
columns an object that passes no threshold gets :data:`NO_CLASS` (-1), or the
extra code K ("uncertain") when it is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from relabel.errors import CatalogError, ConfigError

NO_CLASS = -1
"""Code of an object that passes no threshold and is not kept as uncertain."""


def hard_labels(
    probabilities: Mapping[str, Any] | pd.DataFrame,
    thresholds: Sequence[float],
    keep_uncertain: bool = False,
    compare: str = ">=",
) -> np.ndarray:
    """Class codes from probability (vote-fraction) columns and one threshold each.

    An object is class k when ``P_k >= t_k`` (or ``P_k > t_k`` with ``compare=">"``,
    Galaxy Zoo 1's own flags: P > 0.8; Lintott et al. 2011, MNRAS 410, 166). The comparison is made in the
    column's own float precision (the threshold is cast to the column's dtype),
    so a float32 column holding 0.7 passes ``t = 0.7`` although
    ``float32(0.7) < 0.7`` in float64. When several columns pass, the later
    column wins (Galaxy Zoo style: list the class you trust most last).

    Parameters
    ----------
    probabilities
        Columns in class order: a dict of name -> array, or a DataFrame
        (its columns, in order).
    thresholds
        One threshold per column, each in [0, 1].
    keep_uncertain
        False: objects passing no threshold get ``NO_CLASS`` (-1), to be
        dropped. True: they get code K, an extra "uncertain" class.
    compare
        ``">="`` (default, the convention of Cabrera-Vives et al. 2018's code) or ``">"``.

    Returns
    -------
    numpy.ndarray of int64, shape (N,)

    Raises
    ------
    CatalogError
        A column holds NaN (never silently made a class: NaN passes no
        threshold, so it would look "uncertain"; drop those rows first, as
        ``relabel bias`` does, reporting how many), or values outside [0, 1];
        the message names the column and the count.
    ConfigError
        No columns, thresholds not one per column or outside [0, 1].

    Examples
    --------
    >>> p_el = np.array([0.9, 0.1, 0.85, 0.5], dtype=np.float32)
    >>> p_cs = np.array([0.1, 0.7, 0.85, 0.5], dtype=np.float32)
    >>> hard_labels({"P_EL": p_el, "P_CS": p_cs}, [0.8, 0.7]).tolist()
    [0, 1, 1, -1]
    >>> hard_labels({"P_EL": p_el, "P_CS": p_cs}, [0.8, 0.7], keep_uncertain=True).tolist()
    [0, 1, 1, 2]
    >>> hard_labels({"P_EL": p_el, "P_CS": p_cs}, [0.9, 0.85], compare=">").tolist()
    [-1, -1, -1, -1]
    """
    names = list(probabilities)
    thresholds = list(thresholds)
    if not names:
        raise ConfigError("hard labels need at least one probability column")
    if compare not in (">=", ">"):
        raise ConfigError(f"threshold comparison must be '>=' or '>', got {compare!r}")
    if len(thresholds) != len(names):
        raise ConfigError(
            f"{len(names)} probability column(s) ({', '.join(map(str, names))}) but {len(thresholds)} "
            f"threshold(s) {thresholds}: give one threshold per column"
        )
    columns = [_probability_column(probabilities[name], name) for name in names]
    n = len(columns[0])
    for name, col in zip(names, columns):
        if len(col) != n:
            raise ConfigError(f"probability column {name} has {len(col)} rows, {names[0]} has {n}")
    codes = np.full(n, len(names) if keep_uncertain else NO_CLASS, dtype=np.int64)
    for k, (name, col, t) in enumerate(zip(names, columns, thresholds)):
        check_threshold(t, name)
        # float32 votes like 0.7 are stored as 0.69999999; cast t the same way so equal values pass.
        limit = np.asarray(t, dtype=col.dtype) if col.dtype.kind == "f" else t
        codes[(col > limit) if compare == ">" else (col >= limit)] = k
    return codes


def check_threshold(threshold: Any, name: str) -> None:
    """Refuse a vote-fraction threshold that is not a number in [0, 1].

    Parameters
    ----------
    threshold : Any
        The threshold as given (a bool is refused: it is no vote fraction).
    name : str
        The probability column it applies to, for the message.

    Raises
    ------
    ConfigError
        ``threshold`` is not an int or float, or lies outside [0, 1].

    Examples
    --------
    >>> check_threshold(0.8, "P_EL")
    >>> check_threshold(1.5, "P_EL")
    Traceback (most recent call last):
    ...
    relabel.errors.ConfigError: threshold for P_EL must be a number in [0, 1], got 1.5
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not 0 <= threshold <= 1:
        raise ConfigError(f"threshold for {name} must be a number in [0, 1], got {threshold!r}")


def outside_unit_interval(values: np.ndarray) -> np.ndarray:
    """Which vote fractions lie outside [0, 1]; NaN counts as inside (missing is checked apart).

    Parameters
    ----------
    values : numpy.ndarray, shape (N,)
        Vote fractions or probabilities, any numeric dtype.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)

    Examples
    --------
    >>> outside_unit_interval(np.array([-0.1, 0.0, 0.5, 1.0, 1.2, np.nan])).tolist()
    [True, False, False, False, True, False]
    """
    with np.errstate(invalid="ignore"):
        return (values < 0) | (values > 1)


def labels_from_column(values: Any, classes: Sequence[Any], column: str | None = None) -> np.ndarray:
    """Class codes from a categorical label column: the position of each value in ``classes``.

    Strings are compared without surrounding blanks (FITS pads text columns
    with spaces); bytes are decoded as ASCII.

    Parameters
    ----------
    values
        The label column (strings or integers), shape (N,).
    classes
        The class values in code order.
    column
        The column's name, for error messages.

    Returns
    -------
    numpy.ndarray of int64, shape (N,), codes 0..len(classes)-1

    Raises
    ------
    CatalogError
        Some values (missing ones included) are not among ``classes``; the
        message names the column, the unknown values with their counts, and the
        known classes.
    ConfigError
        ``classes`` is empty or repeats a value.

    Examples
    --------
    >>> labels_from_column(["spiral", "elliptical ", "spiral"], ["elliptical", "spiral"]).tolist()
    [1, 0, 1]
    """
    name = f"label column {column}" if column else "the label column"
    classes = [_clean(c) for c in classes]
    if not classes:
        raise ConfigError(f"{name} needs a non-empty list of classes")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"the classes of {name} repeat a value: {classes}")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise CatalogError(f"{name} must hold one value per object, got shape {arr.shape}")
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "ascii")
    if arr.dtype.kind in "biu" and all(isinstance(c, str) for c in classes):
        # Workflow files give classes as text; an integer-coded column then matches "0", "1", ...
        arr = arr.astype(str)
    if arr.dtype.kind in "UO":
        arr = np.array([_clean(v) for v in arr], dtype=object)
    codes = pd.Index(classes, dtype=object).get_indexer(arr).astype(np.int64)
    unknown = codes < 0
    if unknown.any():
        found = pd.Series(arr[unknown], dtype=object).fillna("<missing>").value_counts()
        shown = ", ".join(f"{v!r} ({c})" for v, c in found.head(10).items())
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        codes_text = ", ".join(repr(v) for v in found.head(3).index)
        declare = f"catalog: {{missing: {{{column}: [{codes_text}]}}}}" if column else "catalog.missing"
        raise CatalogError(
            f"{name} has {int(unknown.sum())} value(s) not among the classes {classes}: {shown}{more}; "
            f"if they mean no label (uncertain, not classified), declare them in the workflow: {declare}"
        )
    return codes


def table_labels(table: pd.DataFrame, spec: Any) -> tuple[np.ndarray, list[str]]:
    """Codes and class names of a table's rows following a workflow's ``labels`` section.

    ``spec`` is a :class:`relabel.config.LabelSpec` (or anything with its
    ``probabilities``, ``label_column``, ``classes`` and ``keep_uncertain``).
    Probability mode may give ``NO_CLASS`` codes; dropping them is the
    caller's choice.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows holding the label columns the spec names (no missing values: see
        :func:`relabel.catalog.missing.drop_missing`).
    spec : relabel.config.LabelSpec
        The workflow's labels.

    Returns
    -------
    codes : numpy.ndarray of int64, shape (N,)
        Class codes, ``NO_CLASS`` where no threshold passes.
    names : list of str
        Class names in code order (``"uncertain"`` last when kept).

    Raises
    ------
    ConfigError
        Neither probability columns nor a label column are given, or a threshold is outside [0, 1].
    CatalogError
        As :func:`hard_labels` and :func:`labels_from_column`.
    """
    if spec.probabilities:
        columns = {p.column: table[p.column].to_numpy() for p in spec.probabilities}
        codes = hard_labels(columns, [p.threshold for p in spec.probabilities], spec.keep_uncertain,
                            getattr(spec, "compare", ">="))
        names = [p.name for p in spec.probabilities]
        if spec.keep_uncertain:
            names.append("uncertain")
        return codes, names
    if not spec.label_column:
        raise ConfigError("labels need probability columns with thresholds, or a label column with its classes")
    codes = labels_from_column(table[spec.label_column].to_numpy(), spec.classes, spec.label_column)
    return codes, [str(c) for c in spec.classes]


def _probability_column(values: Any, name: str) -> np.ndarray:
    col = np.asarray(values)
    if col.ndim != 1 or col.dtype.kind not in "biuf":
        raise CatalogError(
            f"probability column {name} must be numeric, one value per object; got {col.dtype} {col.shape}"
        )
    if col.dtype.kind == "f":
        n_nan = int(np.isnan(col).sum())
        if n_nan:
            raise CatalogError(
                f"probability column {name} has {n_nan} NaN value(s) of {len(col)}: a NaN vote fraction is no class "
                "and no evidence of uncertainty; drop those rows first"
            )
    n_out = int(outside_unit_interval(col).sum())
    if n_out:
        raise CatalogError(
            f"probability column {name} has {n_out} value(s) of {len(col)} outside [0, 1] "
            f"(min {col.min()}, max {col.max()}): is it a probability or vote fraction?{fraction_hint(col)}"
        )
    return col


def fraction_hint(values: np.ndarray) -> str:
    """What a column of would-be vote fractions looks like instead: vote counts, or percentages ("" if neither).

    Parameters
    ----------
    values : numpy.ndarray
        The column's values (NaN ignored).

    Returns
    -------
    str
        A sentence to append to an error message, starting with a space.

    Examples
    --------
    >>> fraction_hint(np.array([0.0, 12.5, 87.5, 100.0]))
    ' Its values lie in [0, 100]: percentages? Divide them by 100.'
    >>> fraction_hint(np.array([0, 3, 41, 7]))
    ' Its values are whole numbers up to 41: vote counts? Give fractions (votes for the answer / all votes).'
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size or finite.min() < 0 or finite.max() <= 1:
        return ""
    if (finite == np.round(finite)).all() and finite.max() != 100:
        return (f" Its values are whole numbers up to {finite.max():.0f}: vote counts? Give fractions (votes for the "
                "answer / all votes).")
    if finite.max() <= 100:
        return " Its values lie in [0, 100]: percentages? Divide them by 100."
    return ""


def _clean(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if isinstance(value, str):
        return value.strip()
    return value
