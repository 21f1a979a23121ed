"""lambda from the data, without truth: a short path of lambdas, judged where the labels can be trusted.

The penalty's strength for a given lambda depends on the survey (observables,
bins, class balance), so a fixed lambda is a survey-specific tuning: lambda 10
over-corrected a Galaxy Zoo 1 / SDSS-like survey (issue 15) where 1-3 did not.
Over-correction has a signature that needs no truth: in the best-observed bins the
labels are right, so a model that disagrees with them there more than the biased
model does has started to change labels the bias did not make wrong. Each lambda
of the path is trained (all on one cutout cache), and the kept one is the largest
for which, and for every smaller one on the path,

1. the accuracy against the confident labels of the validation objects in the
   best-observed half of every observable stays within ``tolerance`` of the biased
   model's there, and
2. the validation soft L is lower than at the previous (smaller) lambda, so the
   penalty still buys de-biasing; and the collapse guard passed.

The path is trained smallest lambda first and stops at the first lambda rejected: no
larger one can be kept after it, so training it would be wasted. The biased reference
is trained on the same rows, or taken from a biased checkpoint of the same catalog,
split and workflow (``reference_model``: the demo passes the one it has just trained).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from relabel.bias.agreement import best_bin_agreement
from relabel.bias.metric import BiasError, object_cells
from relabel.config import Workflow, load_workflow
from relabel.destination import check_output_file
from relabel.errors import ConfigError
from relabel.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from relabel.model.inputs import input_columns, rows_inputs
from relabel.model.network import build_model
from relabel.model.predict import predict_proba
from relabel.train.data import LabelledCutouts, load_labelled_cutouts
from relabel.train.loop import TrainResult, train_model, validation_metrics
from relabel.train.options import TrainOptions, resolve_options, wants_automatic_lambda
from relabel.train.split import SPLIT_SCHEME

#: The lambdas tried, smallest first (each about a factor 3 apart).
DEFAULT_PATH = (1.0, 3.0, 10.0)
#: Largest loss of accuracy against the labels on the best-observed objects (1 point, the acceptance bar).
DEFAULT_TOLERANCE = 0.01


def best_observed(data: LabelledCutouts, rows: np.ndarray, workflow: Workflow, log2_bins_int: int,
                  bins_obs: int) -> np.ndarray:
    """Mask over ``rows``: objects in the best-observed half of every observable, inside their intrinsic leaf.

    Uses L's own cells (:func:`relabel.bias.metric.object_cells`); the half is
    ``bins_obs // 2`` bins from the best end (at least one).

    Parameters
    ----------
    data : LabelledCutouts
        The training data.
    rows : numpy.ndarray of int
        Rows to consider (the validation rows).
    workflow : Workflow
        Its observables' best ends.
    log2_bins_int : int
        Depth of L's intrinsic k-d tree (2**log2_bins_int leaves).
    bins_obs : int
        Equal-count bins per observable within each leaf.

    Returns
    -------
    numpy.ndarray of bool, shape (len(rows),)
    """
    ends = [o.best for o in workflow.observables]
    try:
        _, obs_bin = object_cells(data.intrinsic.iloc[rows], data.observables.iloc[rows], ends, log2_bins_int,
                                  bins_obs)
    except BiasError:  # too few validation objects for L's bins: one bin per leaf would be everything
        _, obs_bin = object_cells(data.intrinsic.iloc[rows], data.observables.iloc[rows], ends, 0, 2)
        bins_obs = 2
    half = max(1, bins_obs // 2)
    good = [obs_bin[:, j] >= bins_obs - half if end == "high" else obs_bin[:, j] < half for j, end in enumerate(ends)]
    return np.logical_and.reduce(good)


def judge_model(model: torch.nn.Module, data: LabelledCutouts, rows: np.ndarray, mask: np.ndarray,
                workflow: Workflow, log2_bins_int: int, bins_obs: int) -> dict:
    """What the path measures of one model on the validation ``rows``, with no truth.

    Parameters
    ----------
    model : torch.nn.Module
        A trained network.
    data : LabelledCutouts
        The data ``rows`` index.
    rows : numpy.ndarray of int
        The validation rows.
    mask : numpy.ndarray of bool, shape (len(rows),)
        The best-observed half of every observable (:func:`best_observed`).
    workflow : Workflow
        Its observables' best ends.
    log2_bins_int, bins_obs : int
        L's binning.

    Returns
    -------
    dict
        ``ref_accuracy``: share of the confident labels of ``rows[mask]`` that the argmax keeps
        (NaN when there is none); ``best_bin_agreement``: the same in L's reference bin of each
        observable (:func:`relabel.bias.agreement.best_bin_agreement`).
    """
    chunk = 4096  # the cutouts of a large survey's validation rows need not all be in memory at once
    predicted = np.concatenate([
        predict_proba(model, torch.from_numpy(np.ascontiguousarray(data.images[rows[i:i + chunk]])), 256,
                      inputs=rows_inputs(model, data.intrinsic, rows[i:i + chunk])).argmax(1)
        for i in range(0, len(rows), chunk)]) if len(rows) else np.zeros(0, np.int64)
    codes = data.codes[rows]
    chosen = mask & (codes >= 0)
    accuracy = float((predicted[chosen] == codes[chosen]).mean()) if chosen.any() else float("nan")
    agreement = best_bin_agreement(data.intrinsic.iloc[rows], data.observables.iloc[rows],
                                   [o.best for o in workflow.observables], codes, predicted, log2_bins_int, bins_obs)
    return {"ref_accuracy": accuracy, "best_bin_agreement": agreement}


def select_lambda(catalog_path, workflow, out, path=DEFAULT_PATH, tolerance: float = DEFAULT_TOLERANCE,
                  progress: bool = True, cache_dir=None, *, reference_model=None, data: LabelledCutouts | None = None,
                  overwrite: bool = False, **train_options) -> TrainResult:
    """Train a de-biased model per lambda of ``path`` (smallest first); write the chosen one to ``out``.

    Parameters
    ----------
    catalog_path, workflow, out
        As for :func:`relabel.train.loop.train_model`.
    path : sequence of float
        lambdas to try, each > 0 (sorted ascending here); the path stops at the first one rejected.
    tolerance : float
        Largest drop of accuracy against the labels on the best-observed objects, versus the biased model.
    reference_model : str or Path, optional
        A biased checkpoint trained on the same catalog, workflow and split (seed, val_fraction): the
        reference, instead of training one here.
    data : LabelledCutouts, optional
        Already loaded cutouts of the same seed and split.
    overwrite : bool
        Replace an existing checkpoint at ``out`` (checked before anything is trained).
    **train_options
        Passed to every :func:`train_model` call (epochs, seed, width, ...); not ``lam``.

    Returns
    -------
    TrainResult
        Of the chosen lambda; its checkpoint's metrics hold ``lambda_selection``
        (the rule, the biased reference, one row per lambda tried) and ``chosen_lambda``.

    Raises
    ------
    ConfigError
        A lambda of the path <= 0; a ``reference_model`` that is not a biased model of the same
        catalog, classes, cutouts and split.
    OutputError
        ``out`` exists (without ``overwrite``).
    """
    check_output_file(out, overwrite, "checkpoint")
    if not isinstance(workflow, Workflow):
        workflow = load_workflow(workflow)
    lams = sorted(float(x) for x in path)
    if not lams or lams[0] <= 0:
        raise ConfigError(f"the lambda path must hold numbers > 0, got {list(path)}")
    opts = resolve_options(workflow, "biased", **{k: v for k, v in train_options.items()
                                                if k in ("seed", "val_fraction", "log2_bins_int", "bins_obs",
                                                         "catalog_inputs")})
    if data is None:
        data = load_labelled_cutouts(catalog_path, workflow, opts.seed, opts.val_fraction, cache_dir,
                                     progress=progress)
    val_rows = np.flatnonzero(data.is_val)
    mask = best_observed(data, val_rows, workflow, opts.log2_bins_int, opts.bins_obs)
    out = Path(out)
    common = dict(progress=progress, data=data, overwrite=True, **train_options)

    def part(name: str) -> Path:
        return out.with_name(f".{out.name}.{name}.part")

    def judge(model: torch.nn.Module) -> dict:
        return judge_model(model, data, val_rows, mask, workflow, opts.log2_bins_int, opts.bins_obs)

    reference = _biased_reference(catalog_path, workflow, data, opts, reference_model, part("biased"), common, judge)
    _say(f"lambda path {', '.join(f'{x:g}' for x in lams)}: biased reference {reference['ref_accuracy']:.4f} on "
         f"the {int(mask.sum())} best-observed validation objects, soft L {reference['val_L_soft']:.4f}")
    rows: list[dict] = []
    results: dict[float, TrainResult] = {}
    chosen = None
    for lam in lams:
        results[lam] = train_model(catalog_path, workflow, "debiased", part(f"lambda{lam:g}"), lam=lam, **common)
        rows.append(_path_row(results[lam], judge, reference, rows[-1] if rows else reference, tolerance))
        if not rows[-1]["accepted"]:
            break  # no larger lambda can be kept after a rejected one: training it would be wasted
        chosen = lam
    untried = [lam for lam in lams if lam not in results]
    return _write_chosen(out, results, rows, reference, chosen, lams, tolerance, int(mask.sum()), part, untried)


def _path_row(result: TrainResult, judge, reference: dict, previous: dict, tolerance: float) -> dict:
    """One lambda's row of the path's table: what it measures, and whether the rule accepts it."""
    metrics = result.meta.metrics
    row = {"lambda": result.meta.lam, **judge(_trained(result)), "val_L_soft": metrics["best"]["val_L_soft"],
           "val_accuracy": metrics["best"]["val_accuracy"], "collapse_guard_passed": metrics["collapse_guard_passed"],
           "settled": metrics["settled"]}
    row["keeps_labels"] = bool(row["ref_accuracy"] >= reference["ref_accuracy"] - tolerance)
    row["L_falls"] = bool(row["val_L_soft"] < previous["val_L_soft"])
    row["accepted"] = row["keeps_labels"] and row["L_falls"] and bool(row["collapse_guard_passed"])
    _say(f"lambda {row['lambda']:g}: {row['ref_accuracy']:.4f} on the best-observed objects, soft L "
         f"{row['val_L_soft']:.4f}: {'accepted' if row['accepted'] else 'rejected'}")
    return row


def _biased_reference(catalog_path, workflow: Workflow, data: LabelledCutouts, opts: TrainOptions, reference_model,
                      part: Path, common: dict, judge) -> dict:
    """The biased model's numbers on validation: from ``reference_model``, or from one trained here."""
    if reference_model is None:
        result = train_model(catalog_path, workflow, "biased", part, **common)
        model, source = _trained(result), "trained on the path's rows"
        part.unlink(missing_ok=True)
    else:
        model, meta = load_checkpoint(reference_model)
        _check_reference(Path(reference_model), meta, data, workflow, opts)
        source = f"{Path(reference_model).resolve()} (sha256 {meta.content_hash[:12]})"
    metrics = validation_metrics(model, data, np.flatnonzero(data.is_val), workflow, opts.log2_bins_int,
                                 opts.bins_obs)
    return {"lambda": 0.0, **judge(model), "val_L_soft": metrics["val_L_soft"],
            "val_accuracy": metrics["val_accuracy"], "source": source}


def _check_reference(path: Path, meta, data: LabelledCutouts, workflow: Workflow, opts: TrainOptions) -> None:
    """A reference model must be biased and trained on these cutouts with this split."""
    split = meta.split or {}
    problems = []
    if meta.method != "biased":
        problems.append(f"its method is {meta.method!r}, not 'biased'")
    if list(meta.classes) != list(data.classes):
        problems.append(f"its classes are {meta.classes}, these labels' {data.classes}")
    if (split.get("scheme"), split.get("seed"), split.get("val_fraction")) != (SPLIT_SCHEME, opts.seed,
                                                                               opts.val_fraction):
        problems.append(f"its split is seed {split.get('seed')} / val_fraction {split.get('val_fraction')}, "
                        f"not {opts.seed} / {opts.val_fraction}")
    elif split.get("n_val") != int(data.is_val.sum()):
        problems.append(f"it held out {split.get('n_val')} validation rows, this catalog {int(data.is_val.sum())}")
    if meta.normalisation != data.normalisation or list(meta.bands) != list(workflow.cutouts.bands):
        problems.append("its cutout bands or normalisation differ from this workflow's")
    wanted = input_columns(opts.catalog_inputs, workflow.intrinsic)
    if meta.catalog_inputs != wanted:
        problems.append(f"it takes the catalog inputs {meta.catalog_inputs}, this training's models {wanted} "
                        "(train.catalog_inputs)")
    if problems:
        raise ConfigError(f"reference model {path} cannot be the biased reference: {'; '.join(problems)}")


def _say(text: str) -> None:
    """The path's lines are results, like training's epoch lines: shown even without progress bars."""
    print(text, file=sys.stderr, flush=True)


def _trained(result: TrainResult) -> torch.nn.Module:
    """The network :func:`train_model` returned (it always sets one; the field is optional for loaded results)."""
    if result.model is None:
        raise RuntimeError(f"training {result.path} returned no network")
    return result.model


RULE = ("largest lambda whose best-observed accuracy against the labels stays within tolerance of the biased "
        "model's and whose validation soft L keeps falling along the path (smallest first; the path stops at the "
        "first lambda rejected)")


def _write_chosen(out: Path, results: dict, rows: list[dict], reference: dict, chosen: float | None, lams: list,
                  tolerance: float, n_reference: int, part, untried: list) -> TrainResult:
    """Copy the chosen lambda's checkpoint to ``out`` with the path's table in its metrics; drop the others."""
    kept_rejected = chosen is None
    if kept_rejected:
        chosen = lams[0]
        print(f"warning: even lambda {chosen:g}, the smallest tried, lost more than {tolerance:g} of accuracy against "
              f"the labels of the best-observed objects (or did not lower soft L); keeping it, but the de-biased "
              f"labels may over-correct: try smaller lambdas", file=sys.stderr, flush=True)
    result = results[chosen]
    state, meta = read_checkpoint(result.path)
    meta.metrics["chosen_lambda"] = chosen
    meta.metrics["lambda_selection"] = {
        "rule": RULE, "tolerance": tolerance, "n_reference_objects": n_reference, "lambdas": lams,
        "untried": untried, "biased": reference, "path": rows, "kept_rejected": kept_rejected}
    model = build_model(meta.architecture)
    model.load_state_dict(state)
    save_checkpoint(model, meta, out)
    for r in results.values():
        r.path.unlink(missing_ok=True)
    part("biased").unlink(missing_ok=True)
    result.path, result.meta, result.model = out, meta, model.eval()
    return result


def select_or_train(catalog_path, workflow, method: str, out, lam=None, reference_model=None,
                    **options) -> TrainResult:
    """:func:`train_model`, or the lambda path when lambda is ``automatic`` (given, or the workflow's default).

    Parameters
    ----------
    catalog_path, workflow, method, out, lam
        As for :func:`relabel.train.loop.train_model`.
    reference_model : str or Path, optional
        The path's biased reference (:func:`select_lambda`); only with an automatic lambda.
    **options
        Passed on (epochs, seed, width, overwrite, ...).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        ``reference_model`` given where lambda is not automatic (it would be silently unused).
    """
    if not isinstance(workflow, Workflow):
        workflow = load_workflow(workflow)
    if wants_automatic_lambda(method, lam, workflow):
        return select_lambda(catalog_path, workflow, out, reference_model=reference_model, **options)
    if reference_model is not None:
        given = lam if lam is not None else workflow.train["lambda"]
        raise ConfigError(f"a reference model ({reference_model}) is the biased reference of an automatic lambda; "
                          f"this training has method {method} and lambda {given}")
    return train_model(catalog_path, workflow, method, out, lam=lam, **options)


def format_path(metrics: dict) -> str:
    """The lambda path of a checkpoint's metrics as a few lines of text (``relabel train``, ``relabel demo``).

    Parameters
    ----------
    metrics : dict
        A checkpoint's ``metrics`` holding ``lambda_selection`` and ``chosen_lambda``.

    Returns
    -------
    str
    """
    table = metrics["lambda_selection"]
    ref = table["biased"]
    lines = [f"lambda {metrics['chosen_lambda']:g} chosen from the path (best-observed accuracy against the labels "
             f"within {table['tolerance']:g} of the biased model's, on {table['n_reference_objects']} validation "
             f"objects; soft L falling):",
             "  lambda   best-observed acc.   soft L   settled   accepted",
             f"  biased   {ref['ref_accuracy']:>18.4f}   {ref['val_L_soft']:.4f}"]
    for row in table["path"]:
        lines.append(f"  {row['lambda']:<6g}   {row['ref_accuracy']:>18.4f}   {row['val_L_soft']:.4f}   "
                     f"{'yes' if row['settled'] else 'no':<7}   {'yes' if row['accepted'] else 'no'}")
    for lam in table.get("untried", []):
        lines.append(f"  {lam:<6g}   not trained: a smaller lambda was rejected")
    return "\n".join(lines)
