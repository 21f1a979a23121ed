"""Quartiles of an observable, worst-observed first: the subsets the evaluation and the report compare.

The one definition shared by :func:`relabel.evaluate.evaluate_model`, :func:`relabel.evaluate.compare_methods`
and the report's comparison table, so that "quartile 1" is the same galaxies everywhere. Torch-free, so
the report can use it without the model's dependencies.
"""

from __future__ import annotations

import numpy as np


def observable_quartiles(values: np.ndarray, best: str) -> tuple[np.ndarray, list[float]]:
    """Quartile 0..3 of each object, worst-observed first, and the 5 edges in that order.

    The edges are the 0, 25, 50, 75 and 100 per cent quantiles (numpy's default linear
    interpolation); an object on an inner edge goes to the quartile above it.

    Parameters
    ----------
    values : numpy.ndarray, shape (n,)
        The observable of each object, in its own unit (e.g. resolution in arcsec, S/N).
    best : {"low", "high"}
        Which end of the observable is best observed: with ``"low"`` (e.g. the PSF FWHM) the
        highest values form quartile 0.

    Returns
    -------
    quartile : numpy.ndarray of int, shape (n,)
        0 (worst observed) to 3 (best).
    edges : list of float, length 5
        The quantiles bounding the quartiles, in quartile order (descending when ``best`` is ``"low"``).

    Raises
    ------
    ValueError
        ``values`` is empty (numpy has no quantile of nothing).

    Examples
    --------
    >>> q, edges = observable_quartiles(np.arange(8.0), "high")
    >>> q.tolist(), edges
    ([0, 0, 1, 1, 2, 2, 3, 3], [0.0, 1.75, 3.5, 5.25, 7.0])
    >>> observable_quartiles(np.arange(8.0), "low")[0].tolist()
    [3, 3, 2, 2, 1, 1, 0, 0]
    """
    edges = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
    quartile = np.clip(np.searchsorted(edges[1:4], values, side="right"), 0, 3)
    if best == "low":
        return 3 - quartile, [float(e) for e in edges[::-1]]
    return quartile, [float(e) for e in edges]
