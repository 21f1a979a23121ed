"""The labeling bias a preset's volunteers put into its labels, measured against the truth.

What ``docs/simulator.md`` reports per preset: the metric L of the thresholded
labels (and its null), and the spiral fraction per quartile of an observable,
true against labelled. Catalog columns only, no images: a few thousand
galaxies take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from relabel.bias.metric import bias_with_errors
from relabel.simulate.presets import SurveyPreset, get_preset
from relabel.simulate.survey import simulate_galaxies

INTRINSIC = ["ABS_MAG", "R50_KPC", "COLOR_GR"]
"""The intrinsic columns every simulated workflow uses."""


@dataclass(frozen=True)
class PresetBias:
    """Labeling bias of one simulated survey.

    Attributes
    ----------
    preset : str
    n, n_labelled : int
        Galaxies simulated, and those with a confident label (P >= 0.8).
    labelled_share_true_spiral : float
        Share of true spirals that get a confident label (any): the rest is uncertain.
    L, null_L : float
        L of the labels on the preset's workflow observables (l = 3, B = 4,
        all objects), and the mean L after shuffling the observables within
        intrinsic bins (the noise floor).
    lost_to_resolution, lost_to_snr : float
        Mean over true spirals of ``1 - s(RESOLUTION)`` and ``1 - s(SNR)``, the
        volunteer model's two visibility factors: where the bias sits.
    quartiles : dict
        Per observable: a DataFrame with one row per quartile (worst first) and
        columns ``true`` (spiral share of all galaxies), ``labelled`` (spiral
        share among the confidently labelled), ``n_labelled`` and
        ``dont_know`` (mean P_DK).
    """

    preset: str
    n: int
    n_labelled: int
    labelled_share_true_spiral: float
    L: float
    null_L: float
    lost_to_resolution: float
    lost_to_snr: float
    quartiles: dict[str, pd.DataFrame]


def confident_labels(table: pd.DataFrame, threshold: float = 0.8) -> np.ndarray:
    """Galaxy Zoo 1-style labels: 1 spiral (P_CS >= t), 0 elliptical (P_EL >= t), -1 neither.

    Parameters
    ----------
    table : pandas.DataFrame
        With P_EL and P_CS (float32, compared in their own precision).
    threshold : float

    Returns
    -------
    numpy.ndarray of int

    Examples
    --------
    >>> confident_labels(pd.DataFrame({"P_EL": [0.9, 0.1, 0.5], "P_CS": [0.1, 0.8, 0.5]}).astype("f4"))
    array([ 0,  1, -1])
    """
    p_el = table["P_EL"].to_numpy()
    p_cs = table["P_CS"].to_numpy()
    labels = np.full(len(table), -1)
    labels[p_el >= p_el.dtype.type(threshold)] = 0
    labels[p_cs >= p_cs.dtype.type(threshold)] = 1
    return labels


def spiral_fraction_by_quartile(table: pd.DataFrame, column: str, best: str) -> pd.DataFrame:
    """True and labelled spiral fractions per quartile of ``column``, worst quartile first.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`relabel.simulate.simulate_galaxies`.
    column : str
        An observable.
    best : {"high", "low"}
        Which end of ``column`` is the best quality.

    Returns
    -------
    pandas.DataFrame
        Columns ``true``, ``labelled``, ``n_labelled``, ``dont_know`` (mean P_DK);
        index 1..4 from worst to best.
    """
    values = table[column].to_numpy()
    quartile = np.searchsorted(np.quantile(values, [0.25, 0.5, 0.75]), values, side="right")
    if best == "low":
        quartile = 3 - quartile
    labels = confident_labels(table)
    spiral = (table["TRUE_CLASS"] == "spiral").to_numpy()
    dont_know = table["P_DK"].to_numpy()
    rows = []
    for q in range(4):
        on = quartile == q
        sure = on & (labels >= 0)
        rows.append({"true": spiral[on].mean(), "labelled": (labels[sure] == 1).mean(),
                     "n_labelled": int(sure.sum()), "dont_know": dont_know[on].mean()})
    return pd.DataFrame(rows, index=pd.RangeIndex(1, 5, name="quartile"))


def preset_label_bias(preset: str | SurveyPreset, n: int = 4000, seed: int = 0) -> PresetBias:
    """Simulate ``n`` galaxies of a preset (no images) and measure the bias of their labels.

    Parameters
    ----------
    preset : str or SurveyPreset
    n : int
        Galaxies; 4000 gives L to about +-0.01 (compare with ``null_L``).
    seed : int

    Returns
    -------
    PresetBias
    """
    preset = get_preset(preset)
    table = simulate_galaxies(n, seed, preset)
    labels = confident_labels(table)
    sure = labels >= 0
    columns = [column for column, _ in preset.observables]
    best = [side for _, side in preset.observables]
    result = bias_with_errors(table.loc[sure, INTRINSIC], table.loc[sure, columns], labels[sure], 2, 3, 4, best,
                              n_boot=0, n_null=5, seed=seed, workers=1)
    spiral = (table["TRUE_CLASS"] == "spiral").to_numpy()
    v = preset.volunteers
    resolution = table["RESOLUTION"].to_numpy()[spiral]
    snr = table["SNR"].to_numpy()[spiral]
    return PresetBias(
        preset=preset.name, n=n, n_labelled=int(sure.sum()),
        labelled_share_true_spiral=float(sure[spiral].mean()),
        L=float(result.L), null_L=float("nan") if result.null_L is None else float(result.null_L),
        lost_to_resolution=float(np.mean(1.0 - v.visibility(resolution, v.resolution_half, v.resolution_slope))),
        lost_to_snr=float(np.mean(1.0 - v.visibility(snr, v.snr_half, v.snr_slope))),
        quartiles={column: spiral_fraction_by_quartile(table, column, side) for column, side in preset.observables},
    )
