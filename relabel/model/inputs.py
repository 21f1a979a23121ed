"""The catalog values a model takes beside its cutouts (its ``catalog_inputs``), as tensors per galaxy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from relabel.catalog.base import is_decimal
from relabel.model.network import catalog_inputs


def input_columns(choice: str, intrinsic: list[str] | tuple[str, ...]) -> list[str]:
    """The columns a training's ``catalog_inputs`` choice names.

    Parameters
    ----------
    choice : str
        ``none`` (images only) or ``intrinsic`` (the workflow's intrinsic columns, L's bins).
    intrinsic : sequence of str
        The workflow's intrinsic columns.

    Returns
    -------
    list of str
    """
    return list(intrinsic) if choice == "intrinsic" else []


def input_values(table: pd.DataFrame, columns) -> np.ndarray:
    """The values of ``columns`` as float32, NaN where null or not a number.

    Parameters
    ----------
    table : pandas.DataFrame, n rows
    columns : sequence of str
        Columns of ``table``.

    Returns
    -------
    numpy.ndarray, shape (n, len(columns)), float32
    """
    values = np.empty((len(table), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        column_values = table[column]
        if not is_decimal(column_values.dtype):  # pandas' to_numeric fails on Arrow decimals with nulls
            column_values = pd.to_numeric(column_values, errors="coerce")
        values[:, j] = column_values.to_numpy(dtype=np.float64, na_value=np.nan)
    values[~np.isfinite(values)] = np.nan
    return values


def frame_inputs(model: nn.Module, table: pd.DataFrame) -> np.ndarray | None:
    """The model's catalog inputs for the rows of ``table`` (None for an image-only model).

    Parameters
    ----------
    model : torch.nn.Module
    table : pandas.DataFrame, n rows
        Holding the model's input columns.

    Returns
    -------
    numpy.ndarray, shape (n, d), float32, NaN where a value is missing; or None

    Raises
    ------
    KeyError
        A column the model takes is not in ``table``.
    """
    columns = catalog_inputs(model)
    return input_values(table, columns) if columns else None


def rows_inputs(model: nn.Module, intrinsic: pd.DataFrame, rows: np.ndarray) -> torch.Tensor | None:
    """The model's catalog inputs of ``rows`` of a training table (None for an image-only model).

    Parameters
    ----------
    model : torch.nn.Module
    intrinsic : pandas.DataFrame
        The training data's intrinsic columns (:class:`relabel.train.data.LabelledCutouts`), all finite.
    rows : numpy.ndarray of int

    Returns
    -------
    torch.Tensor, shape (len(rows), d), float32; or None
    """
    columns = catalog_inputs(model)
    if not columns:
        return None
    return torch.from_numpy(input_values(intrinsic.iloc[np.asarray(rows)], columns))
