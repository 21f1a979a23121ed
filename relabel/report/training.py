"""What the report can say without truth: how the run's model was trained, and whether it over-corrects.

From the checkpoint the run recorded (path and sha256 in ``_run.json``): the training
method, lambda (and the lambda path's table when it was chosen from the data), soft L
on the validation rows before and after the bias term. From the run's own rows: the
agreement of the new labels with the confident original labels in the best-observed
bin of each observable (L's own cells), on the rows the checkpoint held out. A
de-biased model should change the labels the bias made wrong and hardly any confident
label of a well-observed galaxy; one that disagrees with those labels more than the
biased model does is over-correcting (issue 15's signature: lambda too large).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from relabel.bias.agreement import best_bin_agreement
from relabel.catalog.missing import drop_missing
from relabel.config import Workflow
from relabel.errors import RelabelError
from relabel.model.checkpoint import CheckpointMeta, read_checkpoint
from relabel.run.output import RUN_RECORD
from relabel.train.split import validation_mask

#: The agreement may fall this far below the biased model's before the report warns (and further within
#: two binomial standard errors of the two shares: a few hundred objects per bin are not exact).
AGREEMENT_TOLERANCE = 0.02
#: Without a biased reference (lambda not chosen from the data), the documented floor: in the best-observed
#: bin the confident labels are nearly all right (98 % on the simulator), so a model that keeps fewer than
#: 90 % of them is changing labels the bias did not make wrong.
NO_REFERENCE_FLOOR = 0.90


def training_numbers(out_dir: Path, frame: pd.DataFrame, wf: Workflow, classes: list[str],
                     predicted: np.ndarray) -> dict:
    """The training section of the report: the checkpoint's record, the best-bin agreement, the warning.

    Parameters
    ----------
    out_dir : Path
        Output folder of ``relabel run``.
    frame : pandas.DataFrame
        The run's output rows (:func:`relabel.report.numbers.read_output`).
    wf : Workflow
        The run's workflow.
    classes : list of str
        The run's classes, in the model's order.
    predicted : numpy.ndarray of bool, shape (len(frame),)
        Rows with a new label.

    Returns
    -------
    dict
        ``checkpoint``, ``checkpoint_sha256``; from the checkpoint (unless ``error`` says why it could
        not be read): ``method``, ``lambda``, ``lambda_selection`` (or None), ``settled``, ``soft_L``,
        ``temperature`` and ``calibration`` (how it was fitted; None for checkpoints that predate the record),
        ``catalog_inputs`` (the catalog columns the network takes beside the cutouts);
        ``agreement`` (:func:`relabel.bias.agreement.best_bin_agreement` plus ``rows``) and
        ``over_correction`` (``warning``, ``text``, ``reference``).
    """
    record = json.loads((out_dir / RUN_RECORD).read_text())
    out: dict = {"checkpoint": record.get("model"), "checkpoint_sha256": record.get("model_hash")}
    meta = _run_checkpoint(record, out)
    if meta is not None:
        selection = meta.metrics.get("lambda_selection")
        out.update(method=meta.method, **{"lambda": meta.lam}, lambda_selection=selection,
                   settled=meta.metrics.get("settled"), soft_L=soft_l_before_after(meta),
                   temperature=meta.temperature, calibration=meta.metrics.get("calibration"),
                   catalog_inputs=meta.catalog_inputs)
    out["agreement"] = run_agreement(frame, wf, classes, predicted, meta)
    method = meta.method if meta is not None else record.get("method")
    if method == "debiased":
        out["over_correction"] = over_correction(out["agreement"], meta)
    else:  # a biased model reproduces the labels' bias by design; disagreeing with them is not over-correcting
        out["over_correction"] = {"warning": False, "reference": None,
                                  "text": f"not checked: the model's method is {method or 'unknown'}, not debiased"}
    return out


def _run_checkpoint(record: dict, out: dict) -> CheckpointMeta | None:
    """The metadata of the checkpoint the run used, or None with ``out["error"]`` saying why not."""
    path = record.get("model")
    if not path:
        out["error"] = "the run recorded no checkpoint"
        return None
    try:
        _, meta = read_checkpoint(path)
    except RelabelError as exc:
        out["error"] = f"the run's checkpoint cannot be read ({exc})"
        return None
    if record.get("model_hash") and meta.content_hash != record["model_hash"]:
        out["error"] = (f"the checkpoint at {path} is not the one the run used (sha256 {meta.content_hash[:12]}, "
                        f"the run's {str(record['model_hash'])[:12]}): it was replaced after the run")
        return None
    return meta


def soft_l_before_after(meta: CheckpointMeta) -> dict:
    """Soft L of the validation predictions without the bias term and with it, from the checkpoint.

    With a lambda path: the biased reference's and the chosen model's. Otherwise, for a
    de-biased model: its last warm-up epoch (cross-entropy alone) and its kept epoch.

    Parameters
    ----------
    meta : CheckpointMeta
        The run's checkpoint metadata.

    Returns
    -------
    dict
        ``before``, ``after`` (floats or None) and ``source`` (in words).
    """
    metrics = meta.metrics
    after = (metrics.get("best") or {}).get("val_L_soft")
    selection = metrics.get("lambda_selection")
    if selection:
        return {"before": selection["biased"]["val_L_soft"], "after": after,
                "source": "validation rows: the lambda path's biased reference and the chosen model"}
    if meta.method != "debiased":
        return {"before": None, "after": after, "source": "validation rows (a biased model: no bias term)"}
    warmup = int(meta.binning.get("warmup_epochs", 0) or 0)
    history = metrics.get("history") or []
    before = history[warmup - 1].get("val_L_soft") if 0 < warmup <= len(history) else None
    return {"before": before, "after": after,
            "source": f"validation rows: epoch {warmup} (end of the warm-up, cross-entropy alone) and the kept epoch"}


def run_agreement(frame: pd.DataFrame, wf: Workflow, classes: list[str], predicted: np.ndarray,
                  meta: CheckpointMeta | None) -> dict:
    """Agreement of the new labels with the confident original ones in each observable's best-observed bin.

    On the run's rows the checkpoint held out for validation (by id, with its split's seed
    and share), so that the model's own training labels do not flatter it; on all predicted
    rows when the checkpoint is unknown. Rows missing a binning value are left out, as in L.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output rows with the id, intrinsic and observable columns, ``label`` and ``label_original``.
    wf : Workflow
        The run's workflow (columns, L's bins, best ends, missing-value codes).
    classes : list of str
        The run's classes.
    predicted : numpy.ndarray of bool, shape (len(frame),)
        Rows with a new label.
    meta : CheckpointMeta or None
        The run's checkpoint (its split).

    Returns
    -------
    dict
        :func:`relabel.bias.agreement.best_bin_agreement`'s result plus ``rows`` (in words), or
        ``{"error": text}`` when there are too few rows.
    """
    rows = frame[predicted]
    split = (meta.split or {}) if meta is not None else {}
    which = "all predicted rows"
    if "seed" in split and "val_fraction" in split and len(rows):
        held_out = validation_mask(rows[wf.catalog.id], int(split["seed"]), float(split["val_fraction"]))
        rows, which = rows[held_out], f"the predicted rows the checkpoint held out ({split['val_fraction']:g})"
    rows, _ = drop_missing(rows, [*wf.intrinsic, *wf.observable_columns], wf.catalog.missing)
    code = {name: k for k, name in enumerate(classes)}  # "uncertain" and nulls: -1, not a class
    original, new = (rows[c].map(code).fillna(-1).to_numpy(np.int64) for c in ("label_original", "label"))
    try:
        result = best_bin_agreement(rows[wf.intrinsic], rows[wf.observable_columns], wf.best_ends, original, new,
                                    wf.bias["log2_bins_int"], wf.bias["bins_obs"])
    except RelabelError as exc:
        return {"error": f"{which}: {exc}"}
    return {**result, "rows": which}


def over_correction(agreement: dict, meta: CheckpointMeta | None) -> dict:
    """Whether the new labels disagree with the confident labels of the best-observed bins too much.

    With a lambda path in the checkpoint, the reference is its biased model's agreement on
    validation in the same cells: the report warns when an observable's agreement falls below
    it by more than :data:`AGREEMENT_TOLERANCE` and two standard errors. Without one, the fixed
    floor :data:`NO_REFERENCE_FLOOR`.

    Parameters
    ----------
    agreement : dict
        :func:`run_agreement`'s result.
    meta : CheckpointMeta or None
        The run's checkpoint.

    Returns
    -------
    dict
        ``warning`` (bool), ``text`` (one sentence per observable that fails, or what was checked)
        and ``reference`` (``"biased model"`` or ``"fixed floor"``).
    """
    if "error" in agreement:
        return {"warning": False, "text": f"not checked: {agreement['error']}", "reference": None}
    selection = (meta.metrics.get("lambda_selection") if meta is not None else None) or {}
    biased = {r["observable"]: r for r in
              (selection.get("biased", {}).get("best_bin_agreement") or {}).get("by_observable", [])}
    failures, checked = [], []
    for row in agreement["by_observable"]:
        value, ref = row["agreement"], biased.get(row["observable"])
        if value is None:
            continue
        if ref is not None and ref["agreement"] is not None:
            p, q = ref["agreement"], value
            allowed = max(AGREEMENT_TOLERANCE, 2 * math.sqrt(p * (1 - p) / max(ref["n"], 1)
                                                              + q * (1 - q) / max(row["n"], 1)))
            checked.append(f"{row['observable']}: {q:.3f} against the biased model's {p:.3f}")
            if q < p - allowed:
                failures.append(f"in the best-observed bin of {row['observable']} the new labels keep {q:.1%} of "
                                f"the {row['n']} confident original labels, the biased model {p:.1%} "
                                f"(allowed drop {allowed:.3f})")
        else:
            checked.append(f"{row['observable']}: {value:.3f} against the floor {NO_REFERENCE_FLOOR:g}")
            if value < NO_REFERENCE_FLOOR:
                failures.append(f"in the best-observed bin of {row['observable']} the new labels keep {value:.1%} of "
                                f"the {row['n']} confident original labels (below {NO_REFERENCE_FLOOR:.0%})")
    reference = "biased model" if biased else "fixed floor"
    if failures:
        text = ("WARNING: the de-biased labels disagree with the confident labels of well-observed galaxies, where "
                "the labels are right: " + "; ".join(failures) + ". The model over-corrects (lambda too large): "
                "retrain with a smaller lambda or --lambda automatic.")
        return {"warning": True, "text": text, "reference": reference}
    return {"warning": False, "text": "no over-correction: " + "; ".join(checked), "reference": reference}
