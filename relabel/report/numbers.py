"""The report's numbers: a run's output rows, the truth joined to them, L of every label set,
the like-for-like comparison table, and trends of the truth inside intrinsic bins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from relabel.bias.metric import bias_with_errors, fraction_curves, repetition_options
from relabel.bias.table import bias_of_run
from relabel.catalog.missing import drop_missing
from relabel.config import Workflow
from relabel.errors import CatalogError, OutputError, RelabelError
from relabel.output_columns import probability_column
from relabel.quartiles import observable_quartiles
from relabel.run.output import SUMMARY

#: Intrinsic bins in the fraction figures: 2^2 panels stay readable; L itself uses the workflow's depth.
PLOT_LOG2_BINS_INT = 2
#: A truth trend is called out when its ends differ by more than this many combined binomial errors.
TREND_SIGMA = 3.0


def read_output(out_dir: Path, wf: Workflow, classes: list[str]) -> pd.DataFrame:
    """The output columns the report uses (ids, intrinsic, observables, probabilities, labels, status, cutouts).

    Parameters
    ----------
    out_dir : Path
        Output folder of ``relabel run`` (a Parquet dataset).
    wf : Workflow
        The run's workflow (column names).
    classes : list of str
        The run's classes (``p_<class>`` columns).

    Returns
    -------
    pandas.DataFrame
        Those columns of every output row, each once.
    """
    columns = [wf.catalog.id, *wf.intrinsic, *wf.observable_columns, *[probability_column(c) for c in classes],
               "label", "label_original", "status", *wf.cutouts.columns]
    return pd.read_parquet(out_dir, columns=list(dict.fromkeys(columns)))


def join_truth(frame: pd.DataFrame, truth: Path, id_column: str, truth_column: str) -> pd.DataFrame:
    """``frame`` with a ``true_label`` column from a FITS or Parquet truth table, matched by id.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output rows with the id column.
    truth : Path
        FITS or Parquet table with ``id_column`` and ``truth_column``.
    id_column : str
        The catalog's id column.
    truth_column : str
        The column of true class names (e.g. the simulator's ``TRUE_CLASS``).

    Returns
    -------
    pandas.DataFrame
        ``frame`` with ``true_label`` (trailing blanks stripped), same rows and order.

    Raises
    ------
    CatalogError
        The table is missing or unreadable (as :func:`relabel.catalog.reader.open_catalog`).
    OutputError
        It lacks the id or truth column, or has no truth for some output rows.
    """
    from relabel.catalog.ids import match_by_id
    from relabel.catalog.reader import open_catalog

    table = open_catalog(truth)
    missing = [c for c in (id_column, truth_column) if c not in table.columns]
    if missing:
        raise OutputError(f"truth table {truth} lacks column(s) {', '.join(missing)}; "
                          f"it has {', '.join(table.columns[:20])}")
    values = table.read_all([id_column, truth_column]).rename(columns={truth_column: "true_label"})
    try:
        found = match_by_id(frame[id_column], values[id_column], values["true_label"], f"truth table {truth}",
                            id_column)
    except CatalogError as exc:
        raise OutputError(str(exc)) from None
    merged = frame.assign(true_label=[None if v is None or pd.isna(v) else str(v).rstrip() for v in found])
    lost = int(merged["true_label"].isna().sum())
    if lost:
        raise OutputError(f"truth table {truth} has no {truth_column} for {lost} output rows")
    return merged


def bias_numbers(out_dir: Path, wf: Workflow, classes: list[str], frame: pd.DataFrame, predicted: np.ndarray) -> dict:
    """L of the original and the new labels, as the run recorded them, and L of the truth.

    Parameters
    ----------
    out_dir : Path
        Output folder of ``relabel run``.
    wf : Workflow
        The workflow the run recorded (columns, bins, bootstrap and null repetitions).
    classes : list of str
        The run's classes, in the model's order.
    frame : pandas.DataFrame
        The output rows (:func:`read_output`), with ``true_label`` when a truth table was joined.
    predicted : numpy.ndarray of bool, shape (len(frame),)
        Rows the model predicted (status in :data:`relabel.status.PREDICTED`).

    Returns
    -------
    dict
        ``original`` and ``new``: :meth:`relabel.bias.metric.BiasResult.to_dict` or ``{"error": text}``,
        read from the run's ``_summary.json`` (the numbers ``relabel bias OUT_DIR`` prints), computed
        here only when the summary holds none (a run with ``--no-bias``, or no summary yet);
        ``truth``: L of the true classes on the predicted rows, when ``frame`` has them.
    """
    out = _recorded_bias(out_dir)
    if out is None:
        try:
            out = {k: r.to_dict() for k, r in bias_of_run(out_dir, wf).items()}
        except RelabelError as exc:
            out = {"original": {"error": str(exc)}, "new": {"error": str(exc)}}
    if "true_label" in frame:
        # The one missing-value rule: rows missing a binning value are left out of L.
        rows, _ = drop_missing(frame[predicted], [*wf.intrinsic, *wf.observable_columns], wf.catalog.missing)
        codes = pd.Categorical(rows["true_label"], categories=classes).codes
        opts = wf.bias
        try:
            out["truth"] = bias_with_errors(
                rows[wf.intrinsic], rows[wf.observable_columns], codes.astype(np.int64), len(classes),
                opts["log2_bins_int"], opts["bins_obs"], wf.best_ends, n_per_bin=opts["n_per_bin"],
                **repetition_options(opts), classes=classes,
            ).to_dict()
        except RelabelError as exc:
            out["truth"] = {"error": str(exc)}
    return out


def _recorded_bias(out_dir: Path) -> dict | None:
    """The ``labeling_bias`` entry of the run's summary (a copy), or None when it has none."""
    path = out_dir / SUMMARY
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text()).get("labeling_bias")
    except (json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(recorded, dict) or not {"original", "new"} <= recorded.keys():
        return None
    return {"original": recorded["original"], "new": recorded["new"]}


def comparison_table(frame: pd.DataFrame, wf: Workflow, classes: list[str], predicted: np.ndarray) -> dict:
    """Original labels, new labels and the truth on the same galaxies: all, the confident subset, per quartile.

    Every row of the table is one set of galaxies (the predicted output rows, all of them, those
    the original labels call confident, and each quartile of the first observable, worst first);
    in it, each label set gives the share of the last class (``spiral``) and, with the truth, its
    accuracy. The original labels' "uncertain" counts as wrong in the accuracy, and its share is
    given, so the sets are compared on the same galaxies rather than each on its own subset.

    Parameters
    ----------
    frame : pandas.DataFrame
        The run's output rows, with ``true_label`` when a truth table was joined.
    wf : Workflow
        The run's workflow; its first observable defines the quartiles.
    classes : list of str
        The run's classes; the last one's share is compared.
    predicted : numpy.ndarray of bool, shape (len(frame),)
        Rows with a new label.

    Returns
    -------
    dict
        ``{"target": class, "observable": column, "rows": [{"subset", "n", "uncertain_original",
        "fraction": {set: f}, "accuracy": {set: a} or None}, ...]}``
    """
    rows = frame[predicted]
    target = classes[-1]
    obs = wf.observables[0]
    quartile = (observable_quartiles(rows[obs.column].to_numpy(np.float64), obs.best)[0] if len(rows)
                else np.zeros(0, int))
    confident = (rows["label_original"].isin(classes)).to_numpy()
    subsets = [("all galaxies", np.ones(len(rows), bool)), ("confident original label", confident)]
    for i in range(4):
        edges = rows[obs.column][quartile == i]
        span = f" ({edges.min():.3g} to {edges.max():.3g})" if len(edges) else ""
        subsets.append((f"{obs.column} quartile {i + 1} of 4{span}", quartile == i))
    sets = {"original": "label_original", "new": "label"}
    if "true_label" in rows:
        sets["truth"] = "true_label"
    out = []
    for name, mask in subsets:
        part = rows[mask]
        entry = {"subset": name, "n": int(mask.sum()),
                 "uncertain_original": float((~part["label_original"].isin(classes)).mean()) if len(part) else None,
                 "fraction": {k: float((part[c] == target).mean()) if len(part) else None for k, c in sets.items()},
                 "accuracy": None}
        if "truth" in sets and len(part):
            entry["accuracy"] = {k: float((part[c] == part["true_label"]).mean()) for k, c in sets.items()
                                 if k != "truth"}
        out.append(entry)
    return {"target": target, "observable": obs.column, "quartile_order": "worst quality first", "rows": out}


def fraction_curves_of(rows: pd.DataFrame, label_column: str, wf: Workflow, classes: list[str],
                       obs: str) -> pd.DataFrame | None:
    """Class fractions against ``obs`` in the report's coarse intrinsic bins, or None when too few rows.

    Parameters
    ----------
    rows : pandas.DataFrame
        Output rows with ``label_column``, the intrinsic columns and ``obs``.
    label_column : str
        ``label_original``, ``label`` or ``true_label``; rows whose value is not a class are left out.
    wf : Workflow
        The run's workflow (intrinsic columns, ``bias.bins_obs``, best ends).
    classes : list of str
        The run's classes.
    obs : str
        The observable column.

    Returns
    -------
    pandas.DataFrame or None
        :func:`relabel.bias.metric.fraction_curves`' table, or None with fewer than two objects per
        cell on average or when the bins cannot be made.
    """
    rows = rows[rows[label_column].isin(classes)]
    depth = min(PLOT_LOG2_BINS_INT, wf.bias["log2_bins_int"])
    bins = wf.bias["bins_obs"]
    if len(rows) < bins * 2**depth * 2:
        return None
    codes = pd.Categorical(rows[label_column], categories=classes).codes.astype(np.int64)
    best = wf.best_ends[wf.observable_columns.index(obs)]
    try:
        return fraction_curves(rows[wf.intrinsic], rows[[obs]], codes, len(classes), depth, bins, [best],
                               classes=classes)
    except RelabelError:
        return None


def binning_columns(wf: Workflow) -> list[str]:
    """The intrinsic columns the report's bins are really cut in: level t of the k-d tree splits column t mod d.

    Parameters
    ----------
    wf : Workflow
        The run's workflow.

    Returns
    -------
    list of str
        The intrinsic columns split at the report's depth (:data:`PLOT_LOG2_BINS_INT`), each once.
    """
    depth = min(PLOT_LOG2_BINS_INT, wf.bias["log2_bins_int"])
    return list(dict.fromkeys(wf.intrinsic[t % len(wf.intrinsic)] for t in range(depth)))


def truth_trends(frame: pd.DataFrame, wf: Workflow, classes: list[str], predicted: np.ndarray) -> list[dict]:
    """Intrinsic bins where the TRUE fraction of the last class changes with an observable.

    The metric assumes morphology does not depend on the observables at fixed intrinsic
    properties; coarse bins can hide a real dependence (faint compact galaxies are both
    smaller on the sky and more often ellipticals). Such a trend is not labeling bias and
    the reader should be told where it is.

    Parameters
    ----------
    frame : pandas.DataFrame
        The run's output rows; without ``true_label`` there are no trends to find.
    wf : Workflow
        The run's workflow.
    classes : list of str
        The run's classes; the last one's true fraction is tested.
    predicted : numpy.ndarray of bool, shape (len(frame),)
        Rows with a new label.

    Returns
    -------
    list of dict
        One per (observable, intrinsic bin) whose true fraction at the two ends differs by more
        than :data:`TREND_SIGMA` binomial errors: ``observable``, ``leaf``, ``from``, ``to``,
        ``sigma`` and the bin's ``ranges`` per binning column.
    """
    if "true_label" not in frame:
        return []
    target, rows = classes[-1], frame[predicted]
    found = []
    for obs in wf.observable_columns:
        curves = fraction_curves_of(rows, "true_label", wf, classes, obs)
        if curves is None:
            continue
        for leaf, part in curves[curves["class"] == target].groupby("leaf"):
            f, n = part["fraction"].to_numpy(), np.maximum(part["n"].to_numpy(), 1)
            sigma = np.sqrt(f[0] * (1 - f[0]) / n[0] + f[-1] * (1 - f[-1]) / n[-1])
            if abs(f[-1] - f[0]) > TREND_SIGMA * max(sigma, 1e-12):
                ranges = {c: [float(part[c + "_min"].iloc[0]), float(part[c + "_max"].iloc[0])]
                          for c in binning_columns(wf)}
                found.append({"observable": obs, "leaf": int(leaf), "from": float(f[0]), "to": float(f[-1]),
                              "sigma": float(sigma), "ranges": ranges})
    return found


def status_counts(frame: pd.DataFrame) -> dict:
    """Rows per status, in the status names' order.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output rows with a ``status`` column.

    Returns
    -------
    dict
        Status name -> number of rows, sorted by name.
    """
    return {str(k): int(v) for k, v in frame["status"].value_counts().sort_index().items()}

