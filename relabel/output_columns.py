"""Names of the columns a run adds to a catalog, formatted in one place.

A reader of the output (report, evaluation, baselines) and its writer (the
worker task) must agree on these names, so every one of them calls here.
"""

from __future__ import annotations


def probability_column(name: str) -> str:
    """The output column of the de-biased probability of one class.

    Parameters
    ----------
    name : str
        The class name, as in the workflow's labels (e.g. ``"elliptical"``).

    Returns
    -------
    str
        ``p_<name>``.

    Examples
    --------
    >>> probability_column("elliptical")
    'p_elliptical'
    """
    return f"p_{name}"


def spread_column(name: str) -> str:
    """The output column of the spread (std over test-time augmentations) of one class's probability.

    Parameters
    ----------
    name : str
        The class name, as in the workflow's labels.

    Returns
    -------
    str
        ``p_<name>_std``.

    Examples
    --------
    >>> spread_column("spiral")
    'p_spiral_std'
    """
    return f"{probability_column(name)}_std"
