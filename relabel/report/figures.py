"""The report's figures: class fractions against each observable in intrinsic bins, L of each
label set with its noise floor, and rows per status. Each returns the caption printed under it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from relabel import status as st
from relabel.config import Workflow
from relabel.report.columns import axis_label, unit
from relabel.report.numbers import PLOT_LOG2_BINS_INT, binning_columns, fraction_curves_of

if TYPE_CHECKING:  # matplotlib is the optional [report] extra: imported when a figure is drawn
    from matplotlib.figure import Figure

#: Readable at the page's width: figures are drawn at their display size (no down-scaling in the browser).
FONT_SIZE = 11
DPI = 100


@contextlib.contextmanager
def report_figure(path: Path, **figure_kwargs) -> Iterator[Figure]:
    """A matplotlib Figure in the report's style, saved to ``path`` as the block ends.

    A bare :class:`matplotlib.figure.Figure` draws with the Agg renderer whatever backend the
    caller chose, and pyplot never holds it: no backend switch, no figure left open.

    Parameters
    ----------
    path : Path
        PNG file written at :data:`DPI` dots per inch when the block ends without an error.
    **figure_kwargs
        Passed to :class:`matplotlib.figure.Figure` (e.g. ``figsize`` in inches).

    Yields
    ------
    matplotlib.figure.Figure
        The figure to draw on (``fig.subplots(...)``).
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    # Only while this figure is drawn: the caller's matplotlib settings and backend stay as they were.
    with rc_context({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE, "legend.fontsize": FONT_SIZE - 1}):
        fig = Figure(**figure_kwargs)
        yield fig
        fig.savefig(path, dpi=DPI)


def plot_fractions(frame: pd.DataFrame, wf: Workflow, obs: str, classes: list[str], predicted: np.ndarray,
                   path: Path) -> str:
    """The last class's fraction against ``obs`` in each coarse intrinsic bin, for every label set.

    Parameters
    ----------
    frame : pandas.DataFrame
        The run's output rows (:func:`relabel.report.numbers.read_output`), with ``true_label`` when
        a truth table was joined.
    wf : Workflow
        The run's workflow (columns, bins, best ends).
    obs : str
        The observable column on the x axis.
    classes : list of str
        The run's classes; the last one's fraction is drawn.
    predicted : numpy.ndarray of bool, shape (len(frame),)
        Rows with a new label.
    path : Path
        PNG file to write.

    Returns
    -------
    str
        The figure's caption for the page.
    """
    target = classes[-1]
    sets = [("original labels (confident only)", frame, "label_original", "tab:red"),
            ("new labels", frame[predicted], "label", "tab:blue")]
    if "true_label" in frame:
        sets.append(("truth", frame[predicted], "true_label", "black"))
    n_panels = 2 ** min(PLOT_LOG2_BINS_INT, wf.bias["log2_bins_int"])
    cols = min(n_panels, 2)
    n_rows = (n_panels + cols - 1) // cols
    with report_figure(path, figsize=(5.6 * cols, 4.0 * n_rows)) as fig:
        axes = fig.subplots(n_rows, cols, squeeze=False, sharey=True)
        binned = binning_columns(wf)
        for label, rows, column, colour in sets:
            curves = fraction_curves_of(rows, column, wf, classes, obs)
            if curves is None:
                continue
            for leaf, part in curves[curves["class"] == target].groupby("leaf"):
                ax = axes.flat[int(leaf)]
                f, n = part["fraction"].to_numpy(), part["n"].to_numpy()
                ax.errorbar(part["obs_centre"], f, yerr=np.sqrt(f * (1 - f) / np.maximum(n, 1)), marker="o", ms=4,
                            capsize=2, color=colour, label=label)
                # The ranges of the columns the bins are cut in, with units; other intrinsic columns are not
                # binned here.
                ranges = [f"{c} {part[c + '_min'].iloc[0]:.3g} to {part[c + '_max'].iloc[0]:.3g} {unit(c)}".rstrip()
                          for c in binned]
                ax.set_title(f"bin {int(leaf) + 1}: " + ", ".join(ranges))
        for ax in axes.flat:
            ax.set_xlabel(axis_label(obs))
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel(f"fraction {target}")
        axes.flat[0].legend(loc="best")
        fig.tight_layout()
    best = wf.best_ends[wf.observable_columns.index(obs)]
    truth = (" Black: the true fraction; where it is flat, any slope of the labels is labeling bias." if
             "true_label" in frame else "")
    return (f"Fraction of galaxies labelled {target} against {axis_label(obs)}, in {n_panels} intrinsic bins "
            f"(median splits of {' and '.join(binned)}; ranges in the panel titles). Points are {wf.bias['bins_obs']} "
            f"equal-count bins of {obs} within each panel; error bars are binomial (sqrt(f(1-f)/n)). The best-observed "
            f"end is {'high' if best == 'high' else 'low'} {obs}. Red: the original labels, only galaxies they "
            f"classify confidently (the uncertain ones are left out); blue: the new labels on every galaxy.{truth}")


def plot_bias(numbers: dict, path: Path) -> str:
    """L of each label set (bars) with its null L (the noise floor, a black marker).

    Parameters
    ----------
    numbers : dict
        Label set -> :meth:`relabel.bias.metric.BiasResult.to_dict` (``L``, ``L_std``, ``null_L``,
        ``null_L_std``); sets holding only an ``error`` are left out.
    path : Path
        PNG file to write.

    Returns
    -------
    str
        The caption: how to read L against its null L.
    """
    keys = [k for k, v in numbers.items() if "L" in v]
    with report_figure(path, figsize=(6.4, 3.8)) as fig:
        ax = fig.subplots()
        x = np.arange(len(keys))
        colours = {"original": "tab:red", "new": "tab:blue", "truth": "grey"}
        ax.bar(x, [numbers[k]["L"] for k in keys], yerr=[numbers[k]["L_std"] or 0 for k in keys], capsize=4, width=0.6,
               color=[colours.get(k, "tab:green") for k in keys], label="L (bootstrap mean and std)")
        nulls = [numbers[k].get("null_L") for k in keys]
        if keys and all(v is not None for v in nulls):
            ax.errorbar(x + 0.2, nulls, yerr=[numbers[k]["null_L_std"] or 0 for k in keys], fmt="D", color="black",
                        ms=6, capsize=4, label="null L (noise floor)")
        ax.set_xticks(x, [f"{k} labels" if k != "truth" else "true classes" for k in keys])
        ax.set_ylabel("labeling bias L")
        ax.legend(loc="upper right")
        fig.tight_layout()
    return ("Labeling bias L of each label set (bars: bootstrap mean, error bars: its standard deviation) and the "
            "null L of the same data with the observables shuffled within each intrinsic bin (black diamonds): "
            "the value L takes from sampling noise alone. A label set is unbiased, as far as these data tell, "
            "when its bar reaches no higher than its diamond.")


def plot_status(counts: dict, path: Path) -> str:
    """Rows per status: green for rows with a prediction, orange for the rest.

    Parameters
    ----------
    counts : dict
        Status name -> number of catalog rows (:func:`relabel.report.numbers.status_counts`).
    path : Path
        PNG file to write (one horizontal bar per status).

    Returns
    -------
    str
        The caption: which statuses carry a new label.
    """
    with report_figure(path, figsize=(6.4, 0.9 + 0.45 * max(len(counts), 1))) as fig:
        ax = fig.subplots()
        names = list(counts)
        colours = ["tab:green" if n in st.PREDICTED else "tab:orange" for n in names]
        ax.barh(names, [counts[n] for n in names], color=colours)
        for i, n in enumerate(names):
            ax.text(counts[n], i, f" {counts[n]}", va="center")
        ax.set_xlabel("catalog rows")
        fig.tight_layout()
    return ("Catalog rows per status of the run. Green: a new label was predicted; orange: no prediction "
            "(e.g. missing_file: the cutout could not be read), those rows keep only their original labels.")
