"""Training: a biased or de-biased classifier from a catalog's labels, written as a checkpoint.

``biased`` is what the field does: cross-entropy on the thresholded labels of the
confidently labelled objects (hard classes, because that is what catalogs
publish and what the paper trains on; the vote fractions themselves carry the
same resolution bias). ``debiased`` adds lambda times the differentiable
labeling-bias term of :mod:`relabel.train.penalty` on the soft predictions of *all*
training objects, the uncertain ones included (at low resolution spirals mostly
become "uncertain" rather than mislabelled, so leaving them out would hide the
very objects the penalty must move). Cross-entropy stays on the confident ones.

Rows are split into training and validation by a hash of their object id and
the seed (:func:`validation_mask`), so the split is the same whatever the
catalog's row order, and ``relabel evaluate`` finds the held-out rows again from
the checkpoint alone.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from relabel.config import Workflow, load_workflow
from relabel.errors import ConfigError
from relabel.model.calibration import fit_validation_temperature
from relabel.model.checkpoint import CheckpointMeta, save_checkpoint
from relabel.model.device import autocast_for, choose_device
from relabel.model.network import MorphologyCNN
from relabel.model.predict import dihedral_augment, predict_proba
from relabel.destination import check_output_file
from relabel.progress import progress_iter
from relabel.train.augment import degrader_for
from relabel.train.data import LabelledCutouts, load_labelled_cutouts
from relabel.train.penalty import BiasPenalty, penalty_cells
from relabel.train.split import SPLIT_SCHEME

METHODS = ("biased", "debiased")
AUGMENTS = ("none", "degrade")
#: Validation measure of the collapse guard (see ``accuracy_tolerance`` of :func:`train_model`).
GUARD = "val_balanced_accuracy"


@dataclass
class TrainResult:
    """What :func:`train_model` wrote and measured."""

    path: Path
    meta: CheckpointMeta
    history: list[dict]
    best_epoch: int
    seconds_per_epoch: float
    stop_reason: str
    model: nn.Module | None = field(default=None, repr=False)

    def summary(self) -> dict:
        """The JSON object ``relabel train --json`` prints: where the model is and how its best epoch did."""
        return {"model": str(self.path), "content_hash": self.meta.content_hash, "method": self.meta.method,
                "lambda": self.meta.lam, "classes": self.meta.classes, "best_epoch": self.best_epoch,
                "epochs_run": len(self.history), "stop_reason": self.stop_reason,
                "seconds_per_epoch": self.seconds_per_epoch,
                "collapse_guard_passed": self.meta.metrics.get("collapse_guard_passed"),
                "best": self.meta.metrics.get("best"), "split": self.meta.split}


def train_model(catalog_path, workflow, method: str, out, epochs: int | None = None, batch_size: int | None = None,
                lam: float | None = None, seed: int | None = None, val_fraction: float | None = None,
                device: str | torch.device | None = "auto", progress: bool = True, *,
                log2_bins_int: int | None = None, bins_obs: int | None = None, width: int = 16,
                lr: float = 2e-3, weight_decay: float = 1e-4, warmup_epochs: int = 2, patience: int = 4,
                accuracy_tolerance: float = 0.1, cache_dir=None,
                data: LabelledCutouts | None = None, overwrite: bool = False, augment: str | None = None) -> TrainResult:
    """Train a classifier on a catalog's labels and write its checkpoint to ``out``.

    Parameters
    ----------
    catalog_path
        FITS or Parquet catalog with the workflow's columns.
    workflow
        A :class:`relabel.config.Workflow` or the path of a workflow file.
    method
        ``biased`` (cross-entropy on confident labels) or ``debiased`` (plus ``lam`` x B).
    epochs, batch_size, lam, seed, val_fraction
        Default to the workflow's ``train`` section.
    device
        ``auto`` (GPU if present), ``cpu``, ``cuda``, ``cuda:1``...
    log2_bins_int, bins_obs
        Binning of the bias term (and of L on validation); default the workflow's ``bias`` section.
    warmup_epochs
        Epochs of cross-entropy alone before lambda rises linearly to its value over
        one more epoch: the network first learns the classes, then the penalty
        flattens them. A penalty from the start keeps an untrained network's nearly
        constant predictions constant (B's gradient does not shrink with B), and
        the warm-up's accuracy is the reference of the collapse guard.
    patience
        Stop after this many epochs past the warm-up without a better validation criterion.
    accuracy_tolerance
        Collapse guard: an epoch is eligible as the best one only if its balanced
        accuracy (mean recall of the classes) against the confident validation labels
        is within this of the run's best. A model predicting one class has L = 0 and
        balanced accuracy 0.5, and must not win on L; a de-biased model legitimately
        disagrees with the labels of mislabelled, worse-observed objects (up to
        several points), hence a tolerance of 0.1. For ``debiased``, epochs of the
        warm-up are not eligible either.
    data
        Already loaded cutouts (to train several models on one cache); must come from the same seed and split.
    overwrite
        Replace an existing checkpoint at ``out``; without it an existing file is an error, found before training.
    augment
        ``none`` or ``degrade`` (:mod:`relabel.train.augment`: well-observed labelled galaxies
        made to look worse-observed, keeping their labels); default the workflow's ``train.augment``.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Unknown method, bad option values, no labelled training rows.
    OutputError
        ``out`` exists (without ``overwrite``), is a folder, or its folder is missing or not writable.
    """
    check_output_file(out, overwrite, "checkpoint")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(workflow, Workflow):
        workflow = load_workflow(workflow)
    options = workflow.train
    epochs = int(options["epochs"] if epochs is None else epochs)
    batch_size = int(options["batch_size"] if batch_size is None else batch_size)
    lam = float(options["lambda"] if lam is None else lam) if method == "debiased" else 0.0
    seed = int(options["seed"] if seed is None else seed)
    val_fraction = float(options["val_fraction"] if val_fraction is None else val_fraction)
    log2_bins_int = int(workflow.bias["log2_bins_int"] if log2_bins_int is None else log2_bins_int)
    bins_obs = int(workflow.bias["bins_obs"] if bins_obs is None else bins_obs)
    augment = str((options.get("augment") or "none") if augment is None else augment)
    if augment not in AUGMENTS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if epochs < 1 or batch_size < 2:
        raise ConfigError(f"need epochs >= 1 and batch_size >= 2, got {epochs} and {batch_size}")
    if lam < 0:
        raise ConfigError(f"lambda must be >= 0, got {lam}")
    device = choose_device(device)
    # Per-epoch lines are results, not progress: --no-progress hides only the bars.
    log = _Log(True)

    torch.manual_seed(seed)
    if data is None:
        data = load_labelled_cutouts(catalog_path, workflow, seed, val_fraction, cache_dir, progress=progress)
    elif (data.seed, data.val_fraction) != (seed, val_fraction):
        raise ConfigError(f"the cutouts given were split with seed {data.seed} and val_fraction {data.val_fraction}, "
                          f"not {seed} and {val_fraction}")
    n_classes = len(data.classes)
    train_rows = np.flatnonzero(~data.is_val)
    val_rows = np.flatnonzero(data.is_val)
    labelled = data.codes >= 0
    if method == "biased":
        train_rows = train_rows[labelled[train_rows]]
    if int(labelled[train_rows].sum()) == 0:
        raise ConfigError(f"{catalog_path}: no training row has a label passing its threshold")
    if len(val_rows) == 0:
        raise ConfigError(f"{catalog_path}: the validation split is empty (val_fraction={val_fraction})")

    if method == "debiased":
        ends = [o.best for o in workflow.observables]
        reference_bins = [0 if end == "low" else bins_obs - 1 for end in ends]
        leaf, obs_bin = penalty_cells(data.intrinsic.iloc[train_rows], data.observables.iloc[train_rows], ends,
                                      log2_bins_int, bins_obs)
        penalty = BiasPenalty(torch.as_tensor(leaf), torch.as_tensor(obs_bin), 2**log2_bins_int, bins_obs,
                              reference_bins, n_classes, memory=True, device=device)
    steps_per_epoch = max(1, len(train_rows) // batch_size)
    degrade = degrader_for(data, workflow, train_rows, seed) if augment == "degrade" else None

    n_bands, size = len(workflow.cutouts.bands), workflow.cutouts.size
    architecture = {"name": "MorphologyCNN", "n_bands": n_bands, "n_classes": n_classes, "width": width,
                    "blocks": [1, 1, 1, 1], "stem_stride": 2, "dropout": 0.2}
    # Channels-last: oneDNN's (CPU) and cuDNN's (bf16 tensor cores) faster convolutions; 1.3x per
    # step on 2 CPU threads. Checkpoints store the plain layout.
    model = MorphologyCNN(**{k: v for k, v in architecture.items() if k != "name"}).to(
        device, memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = _one_cycle(optimiser, steps_per_epoch * epochs, warmup_steps=steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    codes = torch.as_tensor(data.codes, dtype=torch.long)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    log(f"training {method} model: {len(train_rows)} training objects ({int(labelled[train_rows].sum())} labelled), "
        f"{len(val_rows)} validation, classes {data.classes}, lambda {lam:g}, device {device}")
    history: list[dict] = []
    states: list[dict] = []  # every epoch's weights (a few MB each): the best one is only known at the end
    # The penalty is at full strength from epoch warmup_epochs + 1; a run that short keeps its last epoch.
    first_eligible = min(warmup_epochs + 1, epochs) if method == "debiased" else 1
    stop_reason = f"reached {epochs} epochs"
    step_seconds = []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        sums = {"ce": 0.0, "bias": 0.0, "loss": 0.0}
        bar = progress_iter(range(steps_per_epoch), f"epoch {epoch + 1}/{epochs}", progress, unit="batch")
        for step in bar:
            t_step = time.perf_counter()
            batch = np.sort(order[step * batch_size:(step + 1) * batch_size])
            lam_now = lam * _ramp(epoch + step / steps_per_epoch, warmup_epochs)
            x = torch.from_numpy(np.ascontiguousarray(data.images[batch]))
            if degrade is not None:
                x = degrade(x, batch)
            if device.type == "cuda":
                x = x.pin_memory()
            x = dihedral_augment(x.to(device, non_blocking=True), generator).contiguous(
                memory_format=torch.channels_last)
            y = codes[batch].to(device)
            with autocast_for(device):
                logits = model(x)
            logits = logits.float()
            has_label = y >= 0
            ce = nn.functional.cross_entropy(logits[has_label], y[has_label]) if has_label.any() else logits.sum() * 0
            loss = ce
            bias_value = torch.zeros(())
            if method == "debiased":
                # During the warm-up too: the memory of every object's probabilities is full when lambda rises.
                bias_value = penalty(torch.softmax(logits, dim=1), torch.from_numpy(np.searchsorted(train_rows, batch)))
                loss = ce + lam_now * bias_value
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            sums["ce"] += float(ce.detach())
            sums["bias"] += float(bias_value.detach())
            sums["loss"] += float(loss.detach())
            step_seconds.append(time.perf_counter() - t_step)
        train_seconds = time.perf_counter() - t0

        record = {"epoch": epoch + 1, "lambda": lam * _ramp(epoch + 1, warmup_epochs),
                  "train_ce": sums["ce"] / steps_per_epoch, "train_bias": sums["bias"] / steps_per_epoch,
                  "train_loss": sums["loss"] / steps_per_epoch, "seconds": train_seconds}
        record.update(validation_metrics(model, data, val_rows, workflow, log2_bins_int, bins_obs))
        soft_L = record["val_L_soft"]
        record["criterion"] = record["val_ce"] + (lam * soft_L if math.isfinite(soft_L) else 0.0)
        history.append(record)
        states.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        log(_epoch_line(record, epochs))
        best_epoch, _ = select_epoch(history, first_eligible, accuracy_tolerance)
        if best_epoch is not None and epoch + 1 - best_epoch >= patience:
            stop_reason = f"no better validation criterion for {patience} epochs"
            break

    best_epoch, guarded = select_epoch(history, first_eligible, accuracy_tolerance)
    if not guarded:
        # Shown even without progress output: the checkpoint is written, but it is probably not usable.
        _Log(True)(f"warning: no epoch after the warm-up kept its balanced validation accuracy "
            f"within {accuracy_tolerance:g} of the best ({max(h[GUARD] for h in history):.4f}); keeping epoch "
            f"{best_epoch}, the best of them by that measure. lambda {lam:g} is probably too large (a collapse towards "
            f"one class), or train for more epochs")
    model.load_state_dict(states[best_epoch - 1])
    model.eval()
    temperature = fit_validation_temperature(model, data, val_rows, workflow, log2_bins_int, bins_obs)

    seconds = [h["seconds"] for h in history]
    best_record = history[best_epoch - 1]
    meta = CheckpointMeta(
        classes=list(data.classes),
        bands=list(workflow.cutouts.bands),
        size=int(size),
        normalisation=data.normalisation,
        architecture=architecture,
        method=method,
        lam=lam,
        temperature=temperature,
        augment=augment,
        binning={"log2_bins_int": log2_bins_int, "bins_obs": bins_obs, "intrinsic": list(workflow.intrinsic),
                 "observables": [{"column": o.column, "best": o.best} for o in workflow.observables],
                 "penalty": "soft L, memory of every training object's latest probabilities",
                 "warmup_epochs": warmup_epochs},
        workflow=workflow_record(workflow),
        metrics={"best_epoch": best_epoch, "collapse_guard_passed": guarded, "best": best_record, "history": history, "stop_reason": stop_reason,
                 "seconds_per_epoch": float(np.mean(seconds)), "seconds_per_step": float(np.median(step_seconds)),
                 "device": str(device), "batch_size": batch_size, "epochs": epochs, "lr": lr,
                 "weight_decay": weight_decay, "accuracy_tolerance": accuracy_tolerance, "patience": patience},
        split={"scheme": SPLIT_SCHEME, "seed": seed, "val_fraction": val_fraction, "id_column": workflow.catalog.id,
               "catalog": str(Path(catalog_path).resolve()), "n_train": int(len(train_rows)),
               "n_train_labelled": int(labelled[train_rows].sum()), "n_val": int(len(val_rows)),
               "dropped": data.dropped},
    )
    path = Path(out)
    save_checkpoint(model, meta, path)
    log(f"best epoch {best_epoch} ({stop_reason}); checkpoint {path} sha256 {meta.content_hash[:12]}")
    return TrainResult(path=path, meta=meta, history=history, best_epoch=best_epoch,
                       seconds_per_epoch=float(np.mean(seconds)), stop_reason=stop_reason, model=model)


def select_epoch(history: list[dict], first_eligible: int, accuracy_tolerance: float) -> tuple[int | None, bool]:
    """The epoch (1-based) with the lowest validation criterion among the eligible ones, and whether any was.

    Eligible: from ``first_eligible`` on, with the collapse-guard accuracy (``GUARD``) at
    least the run's best minus ``accuracy_tolerance``. Marks each record's
    ``eligible``. When none is, falls back to the epoch from ``first_eligible`` on
    with the best guard accuracy (None before that epoch is reached) and returns False.

    Examples
    --------
    >>> h = [{"epoch": 1, GUARD: 0.98, "criterion": 0.5},
    ...      {"epoch": 2, GUARD: 0.50, "criterion": 0.1},   # collapsed: L = 0, one class everywhere
    ...      {"epoch": 3, GUARD: 0.97, "criterion": 0.3}]
    >>> select_epoch(h, first_eligible=1, accuracy_tolerance=0.05)
    (3, True)
    """
    top = max(h[GUARD] for h in history)
    candidates = [h for h in history if h["epoch"] >= first_eligible]
    for h in history:
        h["eligible"] = bool(h["epoch"] >= first_eligible and h[GUARD] >= top - accuracy_tolerance)
    eligible = [h for h in candidates if h["eligible"]]
    if eligible:
        return min(eligible, key=lambda h: (h["criterion"], h["epoch"]))["epoch"], True
    if not candidates:
        return None, True
    return max(candidates, key=lambda h: (h[GUARD], -h["epoch"]))["epoch"], False


def validation_metrics(model: nn.Module, data: LabelledCutouts, rows: np.ndarray, workflow: Workflow,
                       log2_bins_int: int, bins_obs: int, batch_size: int = 256) -> dict:
    """Cross-entropy and accuracy on the labelled validation rows, and L (soft and argmax) of the predictions on all.

    Also the collapse guard's measure (``GUARD``): the balanced accuracy (mean recall
    of the classes) against the confident validation labels.
    """
    from relabel.bias.metric import BiasError, labeling_bias

    probs = np.concatenate([
        predict_proba(model, torch.from_numpy(np.ascontiguousarray(data.images[rows[i:i + batch_size]])), batch_size)
        for i in range(0, len(rows), batch_size)
    ])
    codes = data.codes[rows]
    has = codes >= 0
    picked = np.clip(probs[has, codes[has]], 1e-12, 1.0)
    ends = [o.best for o in workflow.observables]
    intrinsic, observables = data.intrinsic.iloc[rows], data.observables.iloc[rows]
    try:
        soft = labeling_bias(intrinsic, observables, probs, None, log2_bins_int, bins_obs, ends)
        hard = labeling_bias(intrinsic, observables, probs.argmax(axis=1), probs.shape[1], log2_bins_int, bins_obs, ends)
    except BiasError:
        # Too few validation objects for these bins: the criterion falls back to cross-entropy alone.
        soft = hard = math.nan
    predicted = probs.argmax(axis=1)
    recalls = [float((predicted[codes == k] == k).mean()) for k in range(probs.shape[1]) if (codes == k).any()]
    return {"val_ce": float(-np.log(picked).mean()), "val_accuracy": float((predicted[has] == codes[has]).mean()),
            GUARD: float(np.mean(recalls)) if recalls else float("nan"),
            "val_L_soft": float(soft), "val_L": float(hard),
            "val_fractions": np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(float).tolist()}


def workflow_record(workflow: Workflow) -> dict:
    """The workflow mapping as a checkpoint records it (plain JSON); paths in it resolve against the catalog's folder."""
    return _jsonable(workflow.raw)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _ramp(epochs_done: float, warmup_epochs: int) -> float:
    """Share of lambda applied after ``epochs_done`` epochs: 0 during the warm-up, then up to 1 over one epoch."""
    return float(min(1.0, max(0.0, epochs_done - warmup_epochs)))


def _one_cycle(optimiser, total_steps: int, warmup_steps: int):
    """Linear warm-up of the learning rate over the first epoch, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def _epoch_line(r: dict, epochs: int) -> str:
    return (f"epoch {r['epoch']}/{epochs}: loss {r['train_loss']:.4f} (ce {r['train_ce']:.4f}, B {r['train_bias']:.4f}, "
            f"lambda {r['lambda']:g}) | val ce {r['val_ce']:.4f} acc {r['val_accuracy']:.4f} "
            f"(balanced {r[GUARD]:.4f}) "
            f"L {r['val_L']:.4f} L_soft {r['val_L_soft']:.4f} | {r['seconds']:.1f} s")


class _Log:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)
