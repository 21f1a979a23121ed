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
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from relabel.bias.metric import BiasError, object_cells
from relabel.config import Workflow, load_workflow
from relabel.model.checkpoint import read_checkpoint, save_checkpoint
from relabel.model.network import MorphologyCNN
from relabel.model.predict import predict_proba
from relabel.train.data import LabelledCutouts, load_labelled_cutouts
from relabel.train.loop import TrainResult, train_model

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


def reference_accuracy(model: torch.nn.Module, data: LabelledCutouts, rows: np.ndarray, mask: np.ndarray) -> float:
    """Accuracy against the confident labels of ``rows[mask]`` (NaN when none has one).

    Parameters
    ----------
    model : torch.nn.Module
        A trained network.
    data : LabelledCutouts
        The data ``rows`` index.
    rows : numpy.ndarray of int
        Candidate rows (the validation rows).
    mask : numpy.ndarray of bool, shape (len(rows),)
        Which of them to score (:func:`best_observed`).

    Returns
    -------
    float
        Share of the masked, confidently labelled rows whose argmax equals the label.
    """
    chosen = rows[mask & (data.codes[rows] >= 0)]
    if len(chosen) == 0:
        return float("nan")
    probs = predict_proba(model, torch.from_numpy(np.ascontiguousarray(data.images[chosen])), 256)
    return float((probs.argmax(axis=1) == data.codes[chosen]).mean())


def select_lambda(catalog_path, workflow, out, path=DEFAULT_PATH, tolerance: float = DEFAULT_TOLERANCE,
                  progress: bool = True, cache_dir=None, **train_options) -> TrainResult:
    """Train a biased model and a de-biased one per lambda of ``path``; write the chosen one to ``out``.

    Parameters
    ----------
    catalog_path, workflow, out
        As for :func:`relabel.train.loop.train_model`.
    path : sequence of float
        lambdas to try, each > 0 (sorted ascending here).
    tolerance : float
        Largest drop of accuracy against the labels on the best-observed objects, versus the biased model.
    **train_options
        Passed to every :func:`train_model` call (epochs, seed, width, ...); not ``lam``.

    Returns
    -------
    TrainResult
        Of the chosen lambda; its checkpoint's metrics hold ``lambda_selection``
        (the rule, the biased reference, one row per lambda) and ``chosen_lambda``.
    """
    from relabel.train.options import resolve_options

    if not isinstance(workflow, Workflow):
        workflow = load_workflow(workflow)
    lams = sorted(float(x) for x in path)
    opts = resolve_options(workflow, "debiased", **{k: v for k, v in train_options.items()
                                                  if k in ("seed", "val_fraction", "log2_bins_int", "bins_obs")})
    data = load_labelled_cutouts(catalog_path, workflow, opts.seed, opts.val_fraction, cache_dir, progress=progress)
    val_rows = np.flatnonzero(data.is_val)
    mask = best_observed(data, val_rows, workflow, opts.log2_bins_int, opts.bins_obs)
    out = Path(out)
    common = dict(progress=progress, data=data, **train_options)

    def part(name: str) -> Path:
        return out.with_name(f".{out.name}.{name}.part")

    biased = train_model(catalog_path, workflow, "biased", part("biased"), **common)
    reference = {"lambda": 0.0, "ref_accuracy": reference_accuracy(_trained(biased), data, val_rows, mask),
                 "val_L_soft": biased.meta.metrics["best"]["val_L_soft"]}
    rows, results, chosen, falling = [], {}, None, True
    previous = reference["val_L_soft"]
    for lam in lams:
        result = train_model(catalog_path, workflow, "debiased", part(f"lambda{lam:g}"), lam=lam, **common)
        row = {"lambda": lam, "ref_accuracy": reference_accuracy(_trained(result), data, val_rows, mask),
               "val_L_soft": result.meta.metrics["best"]["val_L_soft"],
               "val_accuracy": result.meta.metrics["best"]["val_accuracy"],
               "collapse_guard_passed": result.meta.metrics["collapse_guard_passed"],
               "settled": result.meta.metrics["settled"]}
        row["keeps_labels"] = bool(row["ref_accuracy"] >= reference["ref_accuracy"] - tolerance)
        row["L_falls"] = bool(row["val_L_soft"] < previous)
        falling = falling and row["keeps_labels"] and row["L_falls"] and row["collapse_guard_passed"]
        row["accepted"] = falling
        if falling:
            chosen = lam
        previous = row["val_L_soft"]
        rows.append(row)
        results[lam] = result
    return _write_chosen(out, results, rows, reference, chosen, lams, tolerance, int(mask.sum()), part)


def _trained(result: TrainResult) -> torch.nn.Module:
    """The network :func:`train_model` returned (it always sets one; the field is optional for loaded results)."""
    if result.model is None:
        raise RuntimeError(f"training {result.path} returned no network")
    return result.model


def _write_chosen(out: Path, results: dict, rows: list[dict], reference: dict, chosen: float | None, lams: list,
                  tolerance: float, n_reference: int, part) -> TrainResult:
    """Copy the chosen lambda's checkpoint to ``out`` with the path's table in its metrics; drop the others."""
    if chosen is None:
        chosen = lams[0]
        print(f"warning: even lambda {chosen:g}, the smallest tried, lost more than {tolerance:g} of accuracy against "
              f"the labels of the best-observed objects (or did not lower soft L); keeping it, but the de-biased "
              f"labels may over-correct: try smaller lambdas", file=sys.stderr, flush=True)
    result = results[chosen]
    state, meta = read_checkpoint(result.path)
    meta.metrics["chosen_lambda"] = chosen
    meta.metrics["lambda_selection"] = {
        "rule": "largest lambda whose best-observed accuracy against the labels stays within tolerance of the "
                "biased model's and whose validation soft L keeps falling along the path",
        "tolerance": tolerance, "n_reference_objects": n_reference, "biased": reference, "path": rows}
    model = MorphologyCNN(**{k: v for k, v in meta.architecture.items() if k != "name"})
    model.load_state_dict(state)
    save_checkpoint(model, meta, out)
    for r in results.values():
        r.path.unlink(missing_ok=True)
    part("biased").unlink(missing_ok=True)
    result.path, result.meta, result.model = out, meta, model.eval()
    return result
