"""Evaluation of a checkpoint on a catalog: labeling bias and accuracy, on the rows it did not train on.

Every label set is measured with the same L (:func:`relabel.bias.bias_with_errors`,
the workflow's bins, bootstrap and null repetitions): the catalog's labels as
the field uses them (thresholds, uncertain objects dropped), the model's labels
(argmax) and probabilities on *all* evaluated objects, and, with a truth table,
the true classes on the labels' confident subset (dropping uncertain objects is
itself a selection that depends on resolution) and on all objects. Accuracy
and class fractions are also given per quartile of the first observable,
worst-observed quartile first (lowest resolution when high values are best).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel import status as st
from relabel.bias.metric import BiasError, bias_with_errors, repetition_options
from relabel.catalog.coordinates import catalog_coordinate_units
from relabel.catalog.labels import NO_CLASS, table_labels
from relabel.catalog.reader import catalog_folder, describe_catalog
from relabel.config import Workflow
from relabel.cutouts.root import check_cutout_root
from relabel.cutouts.sources import open_cutout_source
from relabel.errors import CatalogError, ConfigError
from relabel.model.checkpoint import load_checkpoint
from relabel.model.device import choose_device
from relabel.model.normalisation import SKY_SAMPLE, warn_if_sky_differs
from relabel.quartiles import observable_quartiles
from relabel.run.inference import predict_rows
from relabel.run.workflow import resolve_workflow
from relabel.train.data import read_table
from relabel.train.split import validation_mask

TRUTH_CLASS_COLUMN = "TRUE_CLASS"


def evaluate_model(catalog_path, model_path, truth=None, all_rows: bool = False, *, workflow=None,
                   device: str | None = "auto", batch_size: int = 256) -> dict[str, Any]:
    """L and accuracy of a model's predictions on a catalog, as one JSON-ready dict.

    Parameters
    ----------
    catalog_path : str, Path, pandas.DataFrame or astropy.table.Table
        The catalog (FITS or Parquet file, Parquet dataset, or a table in memory) with the workflow's columns.
    model_path
        A checkpoint written by :func:`relabel.train.train_model`.
    truth
        Optional table (Parquet/CSV path or DataFrame) with the catalog's id column
        (or ``OBJID``) and ``TRUE_CLASS``: the simulator's ``truth.parquet``.
    all_rows
        Evaluate every row, not only the held-out ones the checkpoint's split names.
    workflow
        Column mapping; default the one recorded in the checkpoint, its relative paths
        taken from the catalog's folder.

    Returns
    -------
    dict
        ``n`` (objects evaluated), ``n_confident`` (with a label passing its threshold),
        ``classes``; ``L_labels``, ``null_L_labels`` (confident subset),
        ``L_model``, ``null_L_model`` (argmax, all objects), ``L_model_soft``,
        ``null_L_model_soft`` (probabilities), ``L_model_confident`` (argmax on the
        confident subset), ``L_truth_confident``, ``L_truth``, each with ``_std``,
        ``excess_`` (L minus null L), ``excess_..._mc_error`` (its Monte-Carlo error,
        :func:`relabel.bias.bias_with_errors`) and ``_repetitions`` ([bootstrap, null])
        companions; ``accuracy_labels`` (model vs
        confident labels), ``accuracy_truth`` (model vs truth, all objects),
        ``accuracy_truth_labels`` (confident labels vs truth); per quartile of the
        first observable (worst first): ``accuracy_truth_by_quartile``,
        ``accuracy_truth_labels_by_quartile``, ``fraction_by_quartile``,
        ``true_fraction_by_quartile``, ``label_fraction_by_quartile`` ({class: [4 values]});
        ``quartile_edges``. Truth-based fields are None without ``truth``.

    Raises
    ------
    CheckpointError
        The checkpoint is unreadable or does not fit the workflow's cutouts.
    CatalogError
        Missing columns; truth without the id or ``TRUE_CLASS`` column.

    Notes
    -----
    Too few objects for the bins does not raise: the L fields are then None and
    ``L_<set>_error`` says why, so the accuracies are still reported.
    """
    model, meta = load_checkpoint(model_path, choose_device(device))
    how = "the checkpoint's recorded root, relative to the catalog's real folder" if workflow is None else ""
    # As `relabel run`: relative paths from the catalog's real folder (symlinks followed).
    workflow = resolve_workflow(workflow, meta, catalog_folder(catalog_path), model_path)
    meta.check_input(workflow.cutouts.bands, workflow.cutouts.size,
                     source=f"the cutouts of {describe_catalog(catalog_path)}")
    meta.check_columns(workflow.intrinsic, source=f"the workflow of {describe_catalog(catalog_path)} (intrinsic "
                       f"columns {workflow.intrinsic})")
    check_cutout_root(workflow, how=how)
    table, probs, dropped = _evaluated_rows(catalog_path, model_path, model, meta, workflow, all_rows, batch_size)
    predicted = probs.argmax(axis=1)
    classes = list(meta.classes)
    codes, label_classes = table_labels(table, workflow.labels)
    codes = _recode(codes, label_classes, classes)
    confident = codes >= 0
    everyone = np.ones(len(table), dtype=bool)
    params = workflow.bias
    out: dict[str, Any] = {
        "n": int(len(table)), "n_confident": int(confident.sum()), "rows": "all" if all_rows else "held-out",
        "classes": classes, "model": str(model_path), "model_hash": meta.content_hash, "method": meta.method,
        "lambda": meta.lam, "bins": f"{2 ** params['log2_bins_int']} x {params['bins_obs']}", "dropped": dropped,
    }
    _put(out, "labels", _bias_fields(table, workflow, confident, codes[confident], len(classes), classes))
    _put(out, "model", _bias_fields(table, workflow, everyone, predicted, len(classes), classes))
    _put(out, "model_soft", _bias_fields(table, workflow, everyone, probs, None, classes))
    _put(out, "model_confident", _bias_fields(table, workflow, confident, predicted[confident], len(classes), classes))
    out["accuracy_labels"] = float((predicted[confident] == codes[confident]).mean()) if confident.any() else None
    quartile = _quartile_fields(out, table, workflow, classes, codes, predicted)
    out.update(_truth_fields(truth, table, workflow, classes, codes, predicted, quartile))
    return out


def _quartile_fields(out: dict, table: pd.DataFrame, workflow: Workflow, classes: list[str], codes: np.ndarray,
                     predicted: np.ndarray) -> np.ndarray:
    """Put the quartile edges and class fractions per quartile into ``out``; return each row's quartile."""
    quartile, edges = observable_quartiles(table[workflow.observable_columns[0]].to_numpy(),
                                           workflow.observables[0].best)
    out["quartile_observable"] = workflow.observable_columns[0]
    out["quartile_edges"] = edges
    out["fraction_by_quartile"] = _fractions(predicted, quartile, classes)
    out["label_fraction_by_quartile"] = _fractions(np.where(codes >= 0, codes, len(classes)), quartile,
                                                   classes + ["no confident label"])
    return quartile


def _evaluated_rows(catalog_path, model_path, model, meta, workflow: Workflow, all_rows: bool,
                    batch_size: int) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    """The evaluated rows with a usable cutout, their probabilities (n, K) and the counts of rows left out."""
    table, dropped = read_table(catalog_path, workflow)
    if not all_rows:
        split = meta.split
        if not split:
            raise ConfigError(f"checkpoint {model_path} records no training split: evaluate with all_rows")
        held_out = validation_mask(table[workflow.catalog.id].to_numpy(), split["seed"], split["val_fraction"])
        table = table[held_out].reset_index(drop=True)

    workflow = catalog_coordinate_units(catalog_path, workflow)  # RA/Dec in the catalog's units
    if workflow.cutouts.layout != "images":  # survey images: their WCS says their scale
        meta.check_pixel_scale(workflow, f"checkpoint {model_path}")
    with open_cutout_source(workflow) as source:
        sample = source.read(table.iloc[:SKY_SAMPLE])
        warn_if_sky_differs(sample.images, sample.status, meta.normalisation, meta.bands, str(model_path))
        predictions = predict_rows(table, source, model, meta, batch_size=batch_size)
    usable = np.isin(predictions.status, st.PREDICTED)
    for name, count in pd.Series(predictions.status[~usable]).value_counts().items():
        dropped[f"cutout_{name}"] = int(count)
    if not usable.any():
        where = describe_catalog(catalog_path)
        raise CatalogError(f"{where}: none of the {len(usable)} evaluated rows has a usable cutout "
                           f"({', '.join(f'{v} {k}' for k, v in dropped.items())}); check cutouts.root "
                           f"{workflow.cutouts.root}")
    table = table[usable].reset_index(drop=True)
    probs = predictions.probabilities[usable].astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 within rounding; L wants [0, 1]
    return table, probs, dropped


def _bias_fields(table: pd.DataFrame, workflow: Workflow, rows: np.ndarray, labels: np.ndarray,
                 n_classes: int | None, names: list[str]) -> dict:
    """L, its null and their errors for one label set on ``rows``, with the workflow's bins and repetitions.

    Too few objects for the bins is not a reason to withhold the accuracies: L is then None and
    ``error`` says why (and what to change).
    """
    try:
        result = _bias_of_rows(table, workflow, rows, labels, n_classes, names)
    except BiasError as exc:
        return {"error": str(exc)}
    return {"L": result.L, "L_std": result.L_std, "null_L": result.null_L, "null_L_std": result.null_L_std,
            "excess": result.excess, "mc_error": result.mc_error, "repetitions": [result.n_boot, result.n_null]}


def _bias_of_rows(table: pd.DataFrame, workflow: Workflow, rows: np.ndarray, labels: np.ndarray,
                  n_classes: int | None, names: list[str]):
    """:func:`relabel.bias.metric.bias_with_errors` of one label set on ``rows``, with the workflow's bins."""
    params = workflow.bias
    return bias_with_errors(table[workflow.intrinsic][rows], table[workflow.observable_columns][rows], labels,
                            n_classes, params["log2_bins_int"], params["bins_obs"],
                            [o.best for o in workflow.observables], **repetition_options(params),
                            classes=names)


def _truth_fields(truth, table: pd.DataFrame, workflow: Workflow, classes: list[str], codes: np.ndarray,
                  predicted: np.ndarray, quartile: np.ndarray) -> dict[str, Any]:
    """The truth-based fields of :func:`evaluate_model` (all None without ``truth``)."""
    out: dict[str, Any] = {}
    if truth is None:
        for key in ("truth_confident", "truth"):
            _put(out, key, None)
        for key in ("accuracy_truth", "accuracy_truth_labels", "accuracy_truth_by_quartile",
                    "accuracy_truth_labels_by_quartile", "true_fraction_by_quartile"):
            out[key] = None
        return out
    confident = codes >= 0
    everyone = np.ones(len(table), dtype=bool)
    id_column = workflow.catalog.id
    true_names = _truth_classes(truth, table[id_column], id_column)
    truth_classes = classes + sorted(set(true_names) - set(classes))
    truth_codes = pd.Categorical(true_names, categories=truth_classes).codes.astype(np.int64)
    _put(out, "truth_confident", _bias_fields(table, workflow, confident, truth_codes[confident], len(truth_classes),
                                              truth_classes))
    _put(out, "truth", _bias_fields(table, workflow, everyone, truth_codes, len(truth_classes), truth_classes))
    right = predicted == truth_codes
    labels_right = codes == truth_codes
    out["accuracy_truth"] = float(right.mean())
    out["accuracy_truth_labels"] = float(labels_right[confident].mean()) if confident.any() else None
    out["accuracy_truth_by_quartile"] = [float(right[quartile == q].mean()) for q in range(4)]
    out["accuracy_truth_labels_by_quartile"] = [
        float(labels_right[(quartile == q) & confident].mean()) if ((quartile == q) & confident).any() else None
        for q in range(4)]
    out["true_fraction_by_quartile"] = _fractions(truth_codes, quartile, truth_classes)
    return out


def format_evaluation(result: dict) -> str:
    """A few readable lines of :func:`evaluate_model`'s result.

    Parameters
    ----------
    result : dict
        What :func:`evaluate_model` returned.

    Returns
    -------
    str
        L (with its null and excess) of the labels and the model, accuracies, and the
        class fractions per quartile of the first observable, one item per line.
    """
    def num(key):
        value = result.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"{result['n']} {result['rows']} objects ({result['n_confident']} with a confident label), "
        f"model {result['method']} lambda {result['lambda']:g}, {result['bins']} bins",
        f"L labels      {num('L_labels')} (null {num('null_L_labels')}, excess {num('excess_L_labels')})",
        f"L model       {num('L_model')} (null {num('null_L_model')}, excess {num('excess_L_model')})",
        f"L model soft  {num('L_model_soft')} (null {num('null_L_model_soft')}, excess {num('excess_L_model_soft')})",
        f"accuracy vs labels {num('accuracy_labels')}",
    ]
    errors = list(dict.fromkeys(v for k, v in result.items() if k.endswith("_error") and v))
    lines += [f"L n/a: {text}" for text in errors]
    if result.get("accuracy_truth") is not None:
        lines.append(f"L truth (confident subset) {num('L_truth_confident')} (null {num('null_L_truth_confident')})")
        lines.append(f"accuracy vs truth {num('accuracy_truth')} (labels' own: {num('accuracy_truth_labels')})")
        by_q = ", ".join(f"{a:.3f}" for a in result["accuracy_truth_by_quartile"])
        lines.append(f"accuracy vs truth per {result['quartile_observable']} quartile (worst first): {by_q}")
    for name, values in result["fraction_by_quartile"].items():
        true = (result.get("true_fraction_by_quartile") or {}).get(name)
        text = ", ".join(f"{v:.3f}" for v in values)
        lines.append(f"fraction {name} per quartile: {text}"
                     + (f" (true {', '.join(f'{v:.3f}' for v in true)})" if true else ""))
    return "\n".join(lines)


def _put(out: dict, name: str, values: dict | None) -> None:
    values = values or {}
    out[f"L_{name}"] = values.get("L")
    out[f"L_{name}_std"] = values.get("L_std")
    out[f"null_L_{name}"] = values.get("null_L")
    out[f"null_L_{name}_std"] = values.get("null_L_std")
    out[f"excess_L_{name}"] = values.get("excess")
    out[f"excess_L_{name}_mc_error"] = values.get("mc_error")
    out[f"L_{name}_repetitions"] = values.get("repetitions")
    if "error" in values:
        out[f"L_{name}_error"] = values["error"]


def _recode(codes: np.ndarray, label_classes: list[str], classes: list[str]) -> np.ndarray:
    """Label codes in the model's class order; objects without a confident label keep NO_CLASS."""
    if label_classes == classes:
        return codes
    unknown = sorted(set(label_classes) - set(classes))
    if unknown:
        raise ConfigError(f"the workflow's label classes {label_classes} include {unknown}, "
                          f"which the model does not predict (its classes: {classes})")
    lookup = np.array([classes.index(c) for c in label_classes] + [NO_CLASS])
    return lookup[np.where(codes >= 0, codes, len(label_classes))]


def _fractions(codes: np.ndarray, quartile: np.ndarray, names: list[str]) -> dict[str, list[float | None]]:
    """Per class, its share of ``codes`` in each quartile 0..3 (None for an empty quartile)."""
    out = {}
    for k, name in enumerate(names):
        out[name] = [float((codes[quartile == q] == k).mean()) if (quartile == q).any() else None for q in range(4)]
    return out


def _truth_classes(truth, ids: pd.Series, id_column: str) -> np.ndarray:
    from relabel.catalog.ids import match_by_id

    if not isinstance(truth, pd.DataFrame):
        path = Path(truth)
        if not path.exists():
            raise CatalogError(f"truth table {path} does not exist")
        if path.suffix.lower() == ".csv":
            truth = pd.read_csv(path)
        else:  # FITS or Parquet, read as every catalog is (nulls, ids of any type)
            from relabel.catalog.reader import open_catalog

            table = open_catalog(path)
            wanted = [c for c in (id_column, "OBJID", TRUTH_CLASS_COLUMN) if c in table.columns]
            truth = table.read_all(list(dict.fromkeys(wanted)))
        where = str(path)
    else:
        where = "the truth table"
    key = id_column if id_column in truth.columns else "OBJID"
    if key not in truth.columns or TRUTH_CLASS_COLUMN not in truth.columns:
        raise CatalogError(f"{where} needs columns {id_column} (or OBJID) and {TRUTH_CLASS_COLUMN}; "
                           f"it has {', '.join(map(str, truth.columns))}")
    found = match_by_id(ids, truth[key], truth[TRUTH_CLASS_COLUMN], where, id_column)
    missing = int(found.isna().sum())
    if missing:
        raise CatalogError(f"{where} has no {TRUTH_CLASS_COLUMN} for {missing} of the {len(ids)} evaluated objects "
                           f"(e.g. {id_column} {ids[found.isna()].iloc[0]})")
    return found.astype(str).str.strip().to_numpy()


# --------------------------------------------------------------------------- comparison with the baselines

#: Row names of :func:`compare_methods`, in table order (models follow under the names given).
LABELS_ROW, CORRECTION_ROW = "labels", "catalog-level correction"


def compare_methods(catalog_path, models: dict, truth, *, workflow=None, device: str | None = "auto",
                    batch_size: int = 256, ece_bins: int = 10,
                    correction_observables: Sequence[str] | None = None) -> dict[str, Any]:
    """The catalog's labels, the catalog-level correction and several models on the same held-out galaxies.

    Every method is measured on the same rows (the held-out split of the models, which
    must share it; rows whose cutout any model could not read are left out for all)
    and the same bins: excess L of its labels (L minus its null L; the labels' own on
    their confident subset, as the field uses them), true accuracy overall and per
    quartile of the first observable (worst first), class fractions per quartile
    against the true ones (``fraction_error``: the largest absolute difference), and
    the expected calibration error of its probabilities against the truth (models:
    with their checkpoint's temperature; labels: the vote fractions normalised over
    the classes; correction: the corrected fractions likewise). The catalog-level
    correction (:func:`relabel.baselines.catalog_level_correction`) is computed on the
    whole catalog, as a catalog would publish it, and labels every galaxy by the
    argmax of its corrected fractions.

    Parameters
    ----------
    catalog_path : str, Path, pandas.DataFrame or astropy.table.Table
        The catalog (a file, a Parquet dataset, or a table in memory).
    models : dict
        Row name -> checkpoint path, e.g. ``{"biased": ..., "de-biased": ...}``.
    truth
        Table (path or DataFrame) with the id column and ``TRUE_CLASS``.
    workflow
        Default: the mapping recorded in the first checkpoint.
    correction_observables : sequence of str, optional
        The observables to run the catalog-level correction along, one row each: the
        first is the row ``"catalog-level correction"``, the others
        ``"catalog-level correction (COLUMN)"``. Default: the workflow's first
        observable only. Hart et al. 2016 correct along redshift.

    Returns
    -------
    dict
        ``rows``: one dict per method (``method``, ``n``, ``coverage``, ``L``, ``L_std``, ``null_L``, ``null_L_std``,
        ``excess_L``, ``accuracy``, ``accuracy_by_quartile``, ``fraction_by_quartile``,
        ``fraction_error``, ``ece``, ``ece_by_quartile``), ``true_fraction_by_quartile``, ``truth_L`` (``L``,
        ``L_std``, ``null_L``, ``null_L_std``, ``excess_L`` of the true classes on the same rows and bins: the
        dependence an unbiased classifier keeps, since the truth itself varies with the observables inside
        L's intrinsic bins; a method whose excess L is below it has removed real dependence), ``reliability``
        (method -> :func:`relabel.model.calibration.reliability_diagram`), ``quartile_edges``,
        ``quartile_observable``, ``classes``, ``n``, ``bins``, ``correction_observables``. Plain data; see
        :func:`comparison_frame` for a table.

    Raises
    ------
    ConfigError
        No models, models with different splits or classes, labels that are not vote fractions,
        a correction observable that is not one of the workflow's observables.
    """
    if not models:
        raise ConfigError("compare_methods needs at least one model")
    loaded, workflow = _comparable_models(catalog_path, models, workflow, device)
    along = _correction_observables(workflow, correction_observables)
    table, methods = _method_probabilities(catalog_path, loaded, workflow, batch_size, along)
    classes = list(next(iter(loaded.values()))[1].classes)
    params = workflow.bias

    true_names = _truth_classes(truth, table[workflow.catalog.id], workflow.catalog.id)
    truth_classes = classes + sorted(set(true_names) - set(classes))
    truth_codes = pd.Categorical(true_names, categories=truth_classes).codes.astype(np.int64)
    quartile, edges = observable_quartiles(table[workflow.observable_columns[0]].to_numpy(),
                                           workflow.observables[0].best)
    true_fractions = _fractions(truth_codes, quartile, truth_classes)
    true_L = bias_with_errors(table[workflow.intrinsic], table[workflow.observable_columns], truth_codes,
                              len(truth_classes), params["log2_bins_int"], params["bins_obs"],
                              [o.best for o in workflow.observables], **repetition_options(params),
                              classes=truth_classes)
    rows, reliability = [], {}
    for name, (probs, hard) in methods.items():
        row, reliability[name] = _method_row(name, probs, hard, truth_codes, quartile, true_fractions, table,
                                             workflow, classes, ece_bins)
        rows.append(row)
    return {"rows": rows, "true_fraction_by_quartile": true_fractions, "reliability": reliability,
            "truth_L": {"L": true_L.L, "L_std": true_L.L_std, "null_L": true_L.null_L,
                        "null_L_std": true_L.null_L_std, "excess_L": true_L.excess},
            "quartile_edges": edges, "quartile_observable": workflow.observable_columns[0], "classes": classes,
            "n": int(len(table)), "bins": f"{2 ** params['log2_bins_int']} x {params['bins_obs']}",
            "correction_observables": along,
            "models": {name: str(path) for name, path in models.items()},
            "temperatures": {name: float(meta.temperature) for name, (_, meta) in loaded.items()}}


def _comparable_models(catalog_path, models: dict, workflow, device) -> tuple[dict, Workflow]:
    """The checkpoints (name -> (model, meta)), refused unless they share one split and class list; the workflow."""
    loaded = {name: load_checkpoint(path, choose_device(device)) for name, path in models.items()}
    first_name, (_, first) = next(iter(loaded.items()))
    for name, (_, meta) in loaded.items():
        if (meta.split.get("seed"), meta.split.get("val_fraction"), meta.classes) != (
                first.split.get("seed"), first.split.get("val_fraction"), first.classes):
            raise ConfigError(f"models {first_name!r} and {name!r} were trained on different splits or classes; "
                              "compare models of one split")
    workflow = resolve_workflow(workflow, first, catalog_folder(catalog_path), models[first_name])
    if not workflow.labels.probabilities:
        raise ConfigError("the comparison needs vote-fraction labels (the catalog-level correction maps them)")
    return loaded, workflow


def _correction_observables(workflow: Workflow, asked: Sequence[str] | None) -> list[str]:
    """The observables to correct along (default the first), refused unless each is one of the workflow's."""
    names = workflow.observable_columns
    along = list(dict.fromkeys(asked)) if asked else [names[0]]
    unknown = [column for column in along if column not in names]
    if unknown:
        raise ConfigError(f"catalog-level correction along {', '.join(unknown)}: not among the workflow's observables "
                          f"{names}")
    return along


def correction_row(along: list[str], column: str) -> str:
    """Name of the comparison row of the catalog-level correction along ``column`` (the first is the plain one).

    Parameters
    ----------
    along : list of str
        The observables corrected along, in order.
    column : str
        One of them.

    Returns
    -------
    str
    """
    return CORRECTION_ROW if column == along[0] else f"{CORRECTION_ROW} ({column})"


def _method_probabilities(catalog_path, loaded: dict, workflow: Workflow, batch_size: int, along: list[str]):
    """The held-out rows every model predicted, and per method its probabilities and (labels only) hard codes."""
    from relabel.baselines import catalog_level_correction

    first = next(iter(loaded.values()))[1]
    classes = list(first.classes)
    table, _ = read_table(catalog_path, workflow)
    fractions = table[workflow.labels.columns].to_numpy(dtype=np.float64)
    params = workflow.bias
    best = {o.column: o.best for o in workflow.observables}
    # On the whole catalog, as a catalog publishes it; then restricted to the held-out rows.
    corrected = {column: catalog_level_correction(fractions, table[workflow.intrinsic], table[column], best[column],
                                                  params["log2_bins_int"], params["bins_obs"])
                 for column in along}
    held_out = validation_mask(table[workflow.catalog.id].to_numpy(), first.split["seed"], first.split["val_fraction"])
    table, fractions = table[held_out].reset_index(drop=True), fractions[held_out]
    corrected = {column: values[held_out] for column, values in corrected.items()}
    probabilities = {}
    usable = np.ones(len(table), dtype=bool)
    workflow = catalog_coordinate_units(catalog_path, workflow)  # RA/Dec in the catalog's units
    with open_cutout_source(workflow) as source:
        sample = source.read(table.iloc[:SKY_SAMPLE])
        for name, (model, meta) in loaded.items():
            if workflow.cutouts.layout != "images":
                meta.check_pixel_scale(workflow, f"checkpoint {name}")
            warn_if_sky_differs(sample.images, sample.status, meta.normalisation, meta.bands, name)
            meta.check_columns(table.columns, source=f"the workflow of {describe_catalog(catalog_path)} (intrinsic "
                               f"columns {workflow.intrinsic})")
            predictions = predict_rows(table, source, model, meta, batch_size=batch_size)
            usable &= np.isin(predictions.status, st.PREDICTED)
            probabilities[name] = predictions.probabilities.astype(np.float64)
    table = table[usable].reset_index(drop=True)
    codes, label_classes = table_labels(table, workflow.labels)
    methods: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        LABELS_ROW: (_normalised(fractions[usable]), _recode(codes, label_classes, classes))}
    for column, values in corrected.items():
        methods[correction_row(along, column)] = (_normalised(values[usable]), None)
    for name, probs in probabilities.items():
        methods[name] = (_normalised(probs[usable]), None)
    return table, methods


def comparison_frame(result: dict) -> pd.DataFrame:
    """:func:`compare_methods`' rows as one table: a row per method, quartiles (worst first) as columns.

    Parameters
    ----------
    result : dict
        The plain-data comparison from :func:`compare_methods`.

    Returns
    -------
    pandas.DataFrame
        Indexed by method (plus a ``truth`` row: the true fractions and the truth's own L): ``n``, ``coverage``,
        ``excess_L``, ``L``, ``L_std``, ``null_L``, ``null_L_std``, ``accuracy``, ``fraction_error``, ``ece``,
        ``accuracy_q1..q4``, ``ece_q1..q4`` and ``<class>_q1..q4`` (quartile 1 is the worst observed).
    """
    records = []
    for row in result["rows"]:
        record = {k: row.get(k) for k in ("method", "n", "coverage", "excess_L", "L", "L_std", "null_L",
                                          "null_L_std", "accuracy", "fraction_error", "ece")}
        for q, value in enumerate(row["accuracy_by_quartile"]):
            record[f"accuracy_q{q + 1}"] = value
        for q, value in enumerate(row.get("ece_by_quartile") or []):
            record[f"ece_q{q + 1}"] = value
        for name, values in row["fraction_by_quartile"].items():
            for q, value in enumerate(values):
                record[f"{name}_q{q + 1}"] = value
        records.append(record)
    truth = {"method": "truth", **result.get("truth_L", {})}
    for name, values in result["true_fraction_by_quartile"].items():
        if name in result["classes"]:
            truth.update({f"{name}_q{q + 1}": v for q, v in enumerate(values)})
    records.append(truth)
    return pd.DataFrame.from_records(records).set_index("method")


def format_comparison(result: dict) -> str:
    """:func:`compare_methods`' table as text: a line per method, the truth's fractions last.

    Parameters
    ----------
    result : dict
        What :func:`compare_methods` returned.

    Returns
    -------
    str
        A header line and a fixed-width table (quartiles worst observed first).
    """
    target = result["classes"][-1]
    columns = ["coverage", "excess_L", "accuracy", *[f"accuracy_q{q}" for q in range(1, 5)],
               *[f"{target}_q{q}" for q in range(1, 5)], "fraction_error", "ece"]
    frame = comparison_frame(result).reindex(columns=columns)
    return (f"{result['n']} held-out galaxies, {result['bins']} bins; quartiles of {result['quartile_observable']} "
            f"(q1 worst observed); accuracy, fractions and ece against the truth\n"
            + frame.to_string(float_format=lambda v: f"{v:.3f}", na_rep=""))


def _normalised(p: np.ndarray) -> np.ndarray:
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)


def _method_row(name, probs, hard, truth_codes, quartile, true_fractions, table, workflow, classes, ece_bins):
    """One method's numbers; ``hard`` (codes, NO_CLASS for no label) restricts L and accuracy to labelled rows."""
    from relabel.model.calibration import reliability_diagram

    predicted = probs.argmax(axis=1) if hard is None else hard
    labelled = predicted >= 0
    params = workflow.bias
    result = bias_with_errors(table[workflow.intrinsic][labelled], table[workflow.observable_columns][labelled],
                              predicted[labelled], len(classes), params["log2_bins_int"], params["bins_obs"],
                              [o.best for o in workflow.observables], **repetition_options(params),
                              classes=classes)
    right = predicted == truth_codes
    fractions = {}
    for k, cls in enumerate(classes):
        fractions[cls] = [float((predicted[(quartile == q) & labelled] == k).mean())
                          if ((quartile == q) & labelled).any() else None for q in range(4)]
    error = max(abs(f - t) for cls in classes for f, t in zip(fractions[cls], true_fractions[cls]) if f is not None)
    diagram = reliability_diagram(probs, truth_codes, ece_bins)
    row = {"method": name, "n": int(labelled.sum()), "coverage": float(labelled.mean()), "L": result.L,
           "L_std": result.L_std, "null_L": result.null_L, "null_L_std": result.null_L_std,
           "excess_L": result.excess, "accuracy": float(right[labelled].mean()),
           "accuracy_by_quartile": [float(right[(quartile == q) & labelled].mean()) for q in range(4)],
           "fraction_by_quartile": fractions, "fraction_error": float(error), "ece": diagram["ece"],
           "ece_by_quartile": [reliability_diagram(probs[quartile == q], truth_codes[quartile == q], ece_bins)["ece"]
                               for q in range(4)]}
    return row, diagram
