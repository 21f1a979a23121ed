"""Training: a biased or de-biased classifier from a catalog's labels, written as a checkpoint.

``biased`` is what the field does: cross-entropy on the thresholded labels of the
confidently labelled objects (hard classes, because that is what catalogs
publish and what the paper trains on; the vote fractions themselves carry the
same resolution bias). ``debiased`` adds lambda times the loss term of the
differentiable labeling bias (:func:`relabel.train.penalty.penalty_loss`,
``B**2 / B_0``, B anchored to the labels of the best-observed cells) on the soft predictions of *all*
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from relabel.bias.metric import reference_bin
from relabel.catalog.reader import describe_catalog
from relabel.config import Workflow, load_workflow
from relabel.destination import check_output_file
from relabel.errors import ConfigError
from relabel.model.calibration import calibrate_on_validation
from relabel.model.checkpoint import CheckpointMeta, save_checkpoint
from relabel.model.device import autocast_for, choose_device
from relabel.model.inputs import input_columns, rows_inputs
from relabel.model.network import MorphologyCNN
from relabel.model.predict import dihedral_augment, predict_proba
from relabel.progress import progress_iter
from relabel.train.augment import degrader_for
from relabel.train.data import LabelledCutouts, load_labelled_cutouts
from relabel.train.options import METHODS, TrainOptions, resolve_options, wants_automatic_lambda
from relabel.train.penalty import BiasPenalty, label_reference, penalty_cells, penalty_loss
from relabel.train.schedule import lambda_share, learning_rate_schedule
from relabel.train.selection import GUARD_METRIC, select_epoch, settled_epochs, settlement
from relabel.train.split import SPLIT_SCHEME

__all__ = ["METHODS", "GUARD_METRIC", "TrainResult", "train_model", "validation_metrics", "workflow_record"]


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

    @property
    def settled(self) -> bool:
        """Whether the class balance and guard accuracy had settled when the run stopped."""
        return bool(self.meta.metrics.get("settlement", {}).get("settled", False))


@dataclass
class _Split:
    """Rows of the cutouts used for training and for validation."""

    train_rows: np.ndarray
    val_rows: np.ndarray
    n_labelled: int


def train_model(catalog_path, workflow, method: str, out, epochs: int | None = None, batch_size: int | None = None,
                lam: float | str | None = None, seed: int | None = None, val_fraction: float | None = None,
                device: str | torch.device | None = "auto", progress: bool = True, *,
                log2_bins_int: int | None = None, bins_obs: int | None = None, width: int = 16,
                lr: float = 2e-3, weight_decay: float = 1e-4, warmup_epochs: int = 2, patience: int = 4,
                accuracy_tolerance: float = 0.1, settle_window: int = 3, settle_tolerance: float = 0.05,
                cache_dir=None, data: LabelledCutouts | None = None, overwrite: bool = False,
                augment: str | None = None, catalog_inputs: str | None = None) -> TrainResult:
    """Train a classifier on a catalog's labels and write its checkpoint to ``out``.

    The steps: options, data and split, penalty, epoch loop, selection and settlement, checkpoint.

    Parameters
    ----------
    catalog_path : str, Path, pandas.DataFrame or astropy.table.Table
        FITS or Parquet catalog with the workflow's columns.
    workflow : Workflow or str or Path
        A :class:`relabel.config.Workflow` or the path of a workflow file.
    method : str
        ``biased`` (cross-entropy on confident labels) or ``debiased`` (plus ``lam`` x the
        bias term, :func:`relabel.train.penalty.penalty_loss`).
    epochs, batch_size, lam, seed, val_fraction : optional
        Default to the workflow's ``train`` section. ``lam`` ``automatic`` (the workflow's default) for
        ``debiased`` trains the lambda path (:func:`relabel.train.lambda_path.select_lambda`) and returns
        the chosen lambda's result.
    device : str or torch.device
        ``auto`` (GPU if present), ``cpu``, ``cuda``, ``cuda:1``...
    log2_bins_int, bins_obs : int, optional
        Binning of the bias term (and of L on validation); default the workflow's ``bias`` section.
    warmup_epochs : int
        Epochs of cross-entropy alone before lambda rises linearly to its value over one more epoch
        (the network first learns the classes; the warm-up's accuracy is the collapse guard's reference).
    patience : int
        Stop after this many epochs past the warm-up without a better validation criterion.
    accuracy_tolerance : float
        Collapse guard: an epoch is eligible only if its balanced accuracy is within this of the run's best.
    settle_window, settle_tolerance : int, float
        Settled: over the last ``settle_window`` epochs at full lambda, no validation class share nor the
        balanced accuracy moved by more than ``settle_tolerance`` (else the checkpoint says so, and a warning).
    data : LabelledCutouts, optional
        Already loaded cutouts (several models on one cache); must come from the same seed and split.
    overwrite : bool
        Replace an existing checkpoint at ``out`` (otherwise an error, found before training).
    augment : str, optional
        ``none`` or ``degrade`` (:mod:`relabel.train.augment`: well-observed labelled galaxies
        made to look worse-observed, keeping their labels); default the workflow's ``train.augment``.
    catalog_inputs : str, optional
        ``none`` (images only) or ``intrinsic``: the network also takes each galaxy's intrinsic
        columns (:class:`relabel.model.network.MorphologyCNN`); default the workflow's
        ``train.catalog_inputs``.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Unknown method, bad option values, no labelled training rows.
    OutputError
        ``out`` exists (without ``overwrite``) or its folder cannot take it.
    """
    check_output_file(out, overwrite, "checkpoint")
    if not isinstance(workflow, Workflow):
        workflow = load_workflow(workflow)
    tuning: dict[str, Any] = dict(
        epochs=epochs, batch_size=batch_size, seed=seed, val_fraction=val_fraction, log2_bins_int=log2_bins_int,
        bins_obs=bins_obs, width=width, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        patience=patience, accuracy_tolerance=accuracy_tolerance, settle_window=settle_window,
        settle_tolerance=settle_tolerance, catalog_inputs=catalog_inputs)
    if wants_automatic_lambda(method, lam, workflow):
        from relabel.train.lambda_path import select_lambda  # the path trains each of its lambdas through here

        return select_lambda(catalog_path, workflow, out, progress=progress, cache_dir=cache_dir, data=data,
                             overwrite=overwrite, device=device, augment=augment, **tuning)
    augment = _augment_option(workflow, augment)
    options = resolve_options(workflow, method, lam=lam, **tuning)
    device = choose_device(device)
    log = _Log(True)  # per-epoch lines are results, not progress: --no-progress hides only the bars
    torch.manual_seed(options.seed)
    run = _epoch_loop(catalog_path, workflow, options, device, augment, cache_dir, progress, data, log)
    stop_reason = run.run(progress)
    return _select_and_save(catalog_path, workflow, options, run, stop_reason, device, augment, Path(out), log)


def _epoch_loop(catalog_path, workflow: Workflow, options: TrainOptions, device: torch.device, augment: str,
                cache_dir, progress: bool, data: LabelledCutouts | None, log) -> _EpochLoop:
    """The data and split, the penalty and the augmentation, assembled into the loop that trains."""
    data = _load_data(catalog_path, workflow, options, cache_dir, progress, data)
    split = _split_rows(catalog_path, data, options)
    penalty = _build_penalty(data, split, workflow, options, device)
    degrade = degrader_for(data, workflow, split.train_rows, options.seed) if augment == "degrade" else None
    log(f"training {options.method} model: {len(split.train_rows)} training objects ({split.n_labelled} labelled), "
        f"{len(split.val_rows)} validation, classes {data.classes}, lambda {options.lam:g}, device {device}")
    return _EpochLoop(data, split, workflow, options, penalty, device, log, degrade)


def _select_and_save(catalog_path, workflow: Workflow, options: TrainOptions, run: _EpochLoop, stop_reason: str,
                     device: torch.device, augment: str, path: Path, log) -> TrainResult:
    """Keep the selected epoch's weights, fit the temperature on validation, write the checkpoint."""
    data, split = run.data, run.split
    best_epoch, guarded, settled = _select(run.history, options)
    run.model.load_state_dict(run.states[best_epoch - 1])
    run.model.eval()
    meta = _checkpoint_meta(catalog_path, workflow, data, split, options, run, best_epoch, guarded, settled,
                            stop_reason, device)
    calibration = calibrate_on_validation(run.model, data, split.val_rows, workflow, options.log2_bins_int,
                                          options.bins_obs)
    meta.temperature = calibration.temperature
    meta.metrics["calibration"] = asdict(calibration)
    meta.augment = augment
    save_checkpoint(run.model, meta, path)
    log(f"best epoch {best_epoch} ({stop_reason}); checkpoint {path} sha256 {meta.content_hash[:12]}")
    log(_calibration_line(calibration))
    seconds = float(np.mean([h["seconds"] for h in run.history]))
    return TrainResult(path=path, meta=meta, history=run.history, best_epoch=best_epoch, seconds_per_epoch=seconds,
                       stop_reason=stop_reason, model=run.model)


AUGMENTS = ("none", "degrade")


def _augment_option(workflow: Workflow, augment: str | None) -> str:
    """``augment`` as given, else the workflow's ``train.augment``; checked."""
    augment = str((workflow.train.get("augment") or "none") if augment is None else augment)
    if augment not in AUGMENTS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    return augment


def _load_data(catalog_path, workflow: Workflow, options: TrainOptions, cache_dir, progress: bool,
               data: LabelledCutouts | None) -> LabelledCutouts:
    """The labelled cutouts, loaded (or checked against the options when given)."""
    if data is None:
        return load_labelled_cutouts(catalog_path, workflow, options.seed, options.val_fraction, cache_dir,
                                     progress=progress)
    if (data.seed, data.val_fraction) != (options.seed, options.val_fraction):
        raise ConfigError(f"the cutouts given were split with seed {data.seed} and val_fraction {data.val_fraction}, "
                          f"not {options.seed} and {options.val_fraction}")
    return data


def _split_rows(catalog_path, data: LabelledCutouts, options: TrainOptions) -> _Split:
    """Training rows (confidently labelled only for ``biased``) and validation rows; both must be usable."""
    train_rows = np.flatnonzero(~data.is_val)
    val_rows = np.flatnonzero(data.is_val)
    labelled = data.codes >= 0
    if options.method == "biased":
        train_rows = train_rows[labelled[train_rows]]
    n_labelled = int(labelled[train_rows].sum())
    if n_labelled == 0:
        raise ConfigError(f"{describe_catalog(catalog_path)}: no training row has a label passing its threshold")
    if len(val_rows) == 0:
        where = describe_catalog(catalog_path)
        raise ConfigError(f"{where}: the validation split is empty (val_fraction={options.val_fraction})")
    return _Split(train_rows, val_rows, n_labelled)


def _build_penalty(data: LabelledCutouts, split: _Split, workflow: Workflow, options: TrainOptions,
                   device: torch.device) -> BiasPenalty | None:
    """The bias term over L's own cells of the training rows (None for ``biased``)."""
    if options.method != "debiased":
        return None
    ends = [o.best for o in workflow.observables]
    reference_bins = [reference_bin(end, options.bins_obs) for end in ends]
    rows = split.train_rows
    leaf, obs_bin = penalty_cells(data.intrinsic.iloc[rows], data.observables.iloc[rows], ends,
                                  options.log2_bins_int, options.bins_obs)
    n_leaves, n_classes = 2**options.log2_bins_int, len(data.classes)
    target = label_reference(leaf, obs_bin, data.codes[rows], n_leaves, reference_bins, n_classes)
    return BiasPenalty(torch.as_tensor(leaf), torch.as_tensor(obs_bin), n_leaves, options.bins_obs,
                       reference_bins, n_classes, memory=True, device=device, reference=target)


class _EpochLoop:
    """The model, optimiser and schedules of one run, and its epochs: train, validate, stop on patience."""

    def __init__(self, data: LabelledCutouts, split: _Split, workflow: Workflow, options: TrainOptions,
                 penalty: BiasPenalty | None, device: torch.device, log, degrade=None):
        self.data, self.split, self.workflow, self.options = data, split, workflow, options
        self.penalty, self.device, self.log, self.degrade = penalty, device, log, degrade
        self.architecture: dict[str, Any] = {"name": "MorphologyCNN", "n_bands": len(workflow.cutouts.bands),
                             "n_classes": len(data.classes), "width": options.width,
                             "blocks": [1, 1, 1, 1], "stem_stride": 2, "dropout": 0.2,
                             "catalog_inputs": input_columns(options.catalog_inputs, workflow.intrinsic)}
        # Channels-last: oneDNN's (CPU) and cuDNN's (bf16 tensor cores) faster convolutions; 1.3x per
        # step on 2 CPU threads. Checkpoints store the plain layout.
        # Module.to takes memory_format at run time (torch's documented signature); its stubs omit it.
        self.model = MorphologyCNN(**{k: v for k, v in self.architecture.items() if k != "name"}).to(  # type: ignore[call-overload]
            device, memory_format=torch.channels_last)
        self.inputs = rows_inputs(self.model, data.intrinsic, np.arange(len(data)))
        if self.inputs is not None:
            self.model.set_input_scaling(self.inputs[split.train_rows])
        self.steps_per_epoch = max(1, len(split.train_rows) // options.batch_size)
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        self.schedule = learning_rate_schedule(self.optimiser, self.steps_per_epoch * options.epochs,
                                               warmup_steps=self.steps_per_epoch)
        self.generator = torch.Generator().manual_seed(options.seed)
        self.codes = torch.as_tensor(data.codes, dtype=torch.long)
        self.penalty_scale: float | None = None  # B when lambda starts to rise (see penalty_loss)
        self.history: list[dict] = []
        self.states: list[dict] = []  # every epoch's weights (a few MB each): the best one is only known at the end
        self.step_seconds: list[float] = []
        self.first_eligible = _first_eligible(options)

    def run(self, progress: bool) -> str:
        """Train until ``epochs`` or until patience runs out; returns why it stopped.

        Parameters
        ----------
        progress : bool
            Show a progress bar per epoch.

        Returns
        -------
        str
            Why training stopped (patience ran out, or the last epoch was reached).
        """
        # cuDNN's autotuner pays off over many same-shape steps; it is restored afterwards so that the
        # caller's process (a notebook, a test) keeps its own setting.
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = previous or self.device.type == "cuda"
        try:
            return self._epochs(progress)
        finally:
            torch.backends.cudnn.benchmark = previous

    def _epochs(self, progress: bool) -> str:
        o = self.options
        for epoch in range(o.epochs):
            record = self.train_epoch(epoch, progress)
            record.update(validation_metrics(self.model, self.data, self.split.val_rows, self.workflow,
                                             o.log2_bins_int, o.bins_obs))
            soft_L = record["val_L_soft"]
            record["criterion"] = record["val_ce"] + (o.lam * soft_L if math.isfinite(soft_L) else 0.0)
            self.history.append(record)
            self.states.append({k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()})
            self.log(_epoch_line(record, o.epochs))
            settled = _settled_stretch(self.history, o)
            best_epoch, _ = select_epoch(self.history, self.first_eligible, o.accuracy_tolerance, settled)
            # A de-biased run stops early only once settled: mid-swing, an epoch scoring worse than a chance one
            # before it says nothing about the epochs to come (the learning rate is still falling).
            waiting = settled is not None and (epoch + 1) not in settled
            if best_epoch is not None and epoch + 1 - best_epoch >= o.patience and not waiting:
                return f"no better validation criterion for {o.patience} epochs"
        return f"reached {o.epochs} epochs"

    def train_epoch(self, epoch: int, progress: bool) -> dict:
        """One pass over the training rows in a random order; the epoch's mean losses."""
        o, rows = self.options, self.split.train_rows
        self.model.train()
        t0 = time.perf_counter()
        order = rows[torch.randperm(len(rows), generator=self.generator).numpy()]
        sums = {"ce": 0.0, "bias": 0.0, "loss": 0.0}
        for step in progress_iter(range(self.steps_per_epoch), f"epoch {epoch + 1}/{o.epochs}", progress, unit="batch"):
            t_step = time.perf_counter()
            batch = np.sort(order[step * o.batch_size:(step + 1) * o.batch_size])
            lam_now = o.lam * lambda_share(epoch + step / self.steps_per_epoch, o.warmup_epochs)
            ce, bias_value, loss = self.losses(batch, lam_now)
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            self.schedule.step()
            for key, value in (("ce", ce), ("bias", bias_value), ("loss", loss)):
                sums[key] += float(value.detach())
            self.step_seconds.append(time.perf_counter() - t_step)
        n = self.steps_per_epoch
        return {"epoch": epoch + 1, "lambda": o.lam * lambda_share(epoch + 1, o.warmup_epochs),
                "train_ce": sums["ce"] / n, "train_bias": sums["bias"] / n, "train_loss": sums["loss"] / n,
                "seconds": time.perf_counter() - t0}

    def batch_logits(self, batch: np.ndarray) -> torch.Tensor:
        """Logits (n, K) of the augmented cutouts of ``batch`` (sorted rows of the data)."""
        x = torch.from_numpy(np.ascontiguousarray(self.data.images[batch]))
        if self.degrade is not None:
            x = self.degrade(x, batch)
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = dihedral_augment(x.to(self.device, non_blocking=True), self.generator).contiguous(
            memory_format=torch.channels_last)
        with autocast_for(self.device):
            if self.inputs is None:
                logits = self.model(x)
            else:
                logits = self.model(x, self.inputs[batch].to(self.device, non_blocking=True))
        return logits.float()

    def losses(self, batch: np.ndarray, lam_now: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy on the batch's confident labels, the bias term B, and the loss to minimise."""
        logits = self.batch_logits(batch)
        y = self.codes[batch].to(self.device)
        has_label = y >= 0
        ce = nn.functional.cross_entropy(logits[has_label], y[has_label]) if has_label.any() else logits.sum() * 0
        if self.penalty is None:
            return ce, torch.zeros(()), ce
        # During the warm-up too: the memory of every object's probabilities is full when lambda rises.
        index = torch.from_numpy(np.searchsorted(self.split.train_rows, batch))
        bias_value = self.penalty(torch.softmax(logits, dim=1), index)
        if lam_now <= 0:
            return ce, bias_value, ce
        if self.penalty_scale is None:
            self.penalty_scale = max(float(bias_value.detach()), 1e-3)
        return ce, bias_value, ce + lam_now * penalty_loss(bias_value, self.penalty_scale)


def _calibration_line(calibration) -> str:
    """One line: the temperature, what it was fitted on, and the class-share shift that decided it."""
    line = f"temperature {calibration.temperature:.3g}"
    if calibration.views == "none":
        return line + " (no confident validation labels in the best-observed bins)"
    line += f", fitted on {calibration.n_galaxies} best-observed confident validation galaxies {calibration.views}"
    if calibration.share_shift is not None:
        line += (f" (class shares moved by {calibration.share_shift:.3f} at the survey's conditions; "
                 f"T there {calibration.temperature_conditions:.3g})")
    return line


def _first_eligible(options: TrainOptions) -> int:
    """First epoch (1-based) that may be kept: a de-biased run's penalty is at full strength from warm-up + 1
    (a run that short keeps its last epoch); a biased run's from its first."""
    return min(options.warmup_epochs + 1, options.epochs) if options.method == "debiased" else 1


def _settled_stretch(history: list[dict], options: TrainOptions) -> set[int] | None:
    """For a de-biased run, the epochs that end a settled window (:func:`settled_epochs`); None otherwise."""
    if options.method != "debiased":
        return None
    return settled_epochs(history, _first_eligible(options), options.settle_window, options.settle_tolerance)


def _select(history: list[dict], options: TrainOptions) -> tuple[int, bool, dict]:
    """The kept epoch, whether the collapse guard passed, and the run's settlement; warns on either failing."""
    first_eligible = _first_eligible(options)
    best_epoch, guarded = select_epoch(history, first_eligible, options.accuracy_tolerance,
                                       _settled_stretch(history, options))
    if best_epoch is None:
        # The loop stops on patience only once an eligible epoch exists, and otherwise runs every epoch.
        raise RuntimeError(f"no epoch reached the first eligible one ({first_eligible}) in {len(history)} epochs")
    settled = settlement(history, first_eligible, options.settle_window, options.settle_tolerance)
    warn = _Log(True)  # shown even without progress output: the checkpoint is written, but may not be usable
    if not guarded:
        warn(f"warning: no epoch after the warm-up kept its balanced validation accuracy "
             f"within {options.accuracy_tolerance:g} of the best ({max(h[GUARD_METRIC] for h in history):.4f}); "
             f"keeping epoch {best_epoch}, the best of them by that measure. lambda {options.lam:g} is probably too "
             f"large (a collapse towards one class), or train for more epochs")
    if options.method != "debiased":
        pass  # settlement guards the penalty's feedback loop; it is recorded, not warned about, for biased runs
    elif settled["epochs_seen"] < options.settle_window:
        warn(f"warning: training had not settled when it stopped: it ran {settled['epochs_seen']} epoch(s) at "
             f"full lambda, fewer than the {options.settle_window} the check needs to see it settle; the kept epoch "
             f"{best_epoch} may be a chance one: train for more epochs")
    elif not settled["settled"]:
        warn(f"warning: training had not settled when it stopped: over its last {settled['epochs_seen']} epoch(s) "
             f"at full lambda the validation class share moved by {settled['class_share_swing']:.3f} and the "
             f"balanced accuracy by {settled['accuracy_swing']:.3f} (settled: both <= {options.settle_tolerance:g} "
             f"over {options.settle_window} epochs); the kept epoch {best_epoch} may be a chance one: train for "
             f"more epochs or with a smaller lambda")
    return best_epoch, guarded, settled


def _checkpoint_meta(catalog_path, workflow: Workflow, data: LabelledCutouts, split: _Split, options: TrainOptions,
                     run: _EpochLoop, best_epoch: int, guarded: bool, settled: dict, stop_reason: str,
                     device: torch.device) -> CheckpointMeta:
    """What the checkpoint records: inputs for inference, binning, workflow, metrics, split."""
    history = run.history
    seconds = float(np.mean([h["seconds"] for h in history]))
    metrics = {"best_epoch": best_epoch, "collapse_guard_passed": guarded, "settled": settled["settled"],
               "settlement": settled, "best": history[best_epoch - 1], "history": history,
               "stop_reason": stop_reason, "seconds_per_epoch": seconds,
               "seconds_per_step": float(np.median(run.step_seconds)), "device": str(device),
               "batch_size": options.batch_size, "epochs": options.epochs, "lr": options.lr,
               "weight_decay": options.weight_decay, "accuracy_tolerance": options.accuracy_tolerance,
               "patience": options.patience, "penalty_scale": run.penalty_scale}
    return CheckpointMeta(
        classes=list(data.classes), bands=list(workflow.cutouts.bands), size=int(workflow.cutouts.size),
        normalisation=data.normalisation, architecture=run.architecture, method=options.method, lam=options.lam,
        binning={"log2_bins_int": options.log2_bins_int, "bins_obs": options.bins_obs,
                 "intrinsic": list(workflow.intrinsic),
                 "observables": [{"column": o.column, "best": o.best} for o in workflow.observables],
                 "penalty": "lambda * B^2 / B_0, B the soft L over a memory of every training object's latest "
                            "probabilities, B_0 its value when lambda starts to rise",
                 "warmup_epochs": options.warmup_epochs},
        workflow=workflow_record(workflow), metrics=metrics,
        split={"scheme": SPLIT_SCHEME, "seed": options.seed, "val_fraction": options.val_fraction,
               "id_column": workflow.catalog.id, "catalog": describe_catalog(catalog_path),
               "n_train": int(len(split.train_rows)), "n_train_labelled": split.n_labelled,
               "n_val": int(len(split.val_rows)), "dropped": data.dropped},
    )


def validation_metrics(model: nn.Module, data: LabelledCutouts, rows: np.ndarray, workflow: Workflow,
                       log2_bins_int: int, bins_obs: int, batch_size: int = 256) -> dict:
    """Cross-entropy and accuracy on the labelled validation rows, and L (soft and argmax) of the predictions on all.

    Also the collapse guard's measure (``GUARD_METRIC``): the balanced accuracy (mean recall
    of the classes) against the confident validation labels.

    Parameters
    ----------
    model : torch.nn.Module
        The network being trained.
    data : LabelledCutouts
        The training data.
    rows : numpy.ndarray of int
        The validation rows.
    workflow : Workflow
        Its observables' best ends.
    log2_bins_int : int
        Depth of L's intrinsic k-d tree.
    bins_obs : int
        Bins per observable in each leaf.
    batch_size : int
        Cutouts per forward pass.

    Returns
    -------
    dict
        ``val_ce``, ``val_accuracy``, ``GUARD_METRIC``, ``val_L_soft``, ``val_L`` (NaN when the
        bins cannot be made) and ``val_fractions`` (predicted count per class).
    """
    from relabel.bias.metric import BiasError, labeling_bias

    probs = np.concatenate([
        predict_proba(model, torch.from_numpy(np.ascontiguousarray(data.images[rows[i:i + batch_size]])), batch_size,
                      inputs=rows_inputs(model, data.intrinsic, rows[i:i + batch_size]))
        for i in range(0, len(rows), batch_size)
    ])
    codes = data.codes[rows]
    has = codes >= 0
    picked = np.clip(probs[has, codes[has]], 1e-12, 1.0)
    ends = [o.best for o in workflow.observables]
    intrinsic, observables = data.intrinsic.iloc[rows], data.observables.iloc[rows]
    try:
        soft = labeling_bias(intrinsic, observables, probs, None, log2_bins_int, bins_obs, ends)
        hard = labeling_bias(intrinsic, observables, probs.argmax(axis=1), probs.shape[1], log2_bins_int, bins_obs,
                             ends)
    except BiasError:
        # Too few validation objects for these bins: the criterion falls back to cross-entropy alone.
        soft = hard = math.nan
    predicted = probs.argmax(axis=1)
    recalls = [float((predicted[codes == k] == k).mean()) for k in range(probs.shape[1]) if (codes == k).any()]
    return {"val_ce": float(-np.log(picked).mean()), "val_accuracy": float((predicted[has] == codes[has]).mean()),
            GUARD_METRIC: float(np.mean(recalls)) if recalls else float("nan"),
            "val_L_soft": float(soft), "val_L": float(hard),
            "val_fractions": np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(float).tolist()}


def workflow_record(workflow: Workflow) -> dict:
    """The workflow mapping as a checkpoint records it (plain JSON).

    Paths in it resolve against the catalog's folder.

    Parameters
    ----------
    workflow : Workflow
        The workflow used for training.

    Returns
    -------
    dict
        Its raw mapping with tuples as lists and any other non-JSON value (a Path) as its string.
    """
    return _jsonable(workflow.raw)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _epoch_line(r: dict, epochs: int) -> str:
    return (f"epoch {r['epoch']}/{epochs}: loss {r['train_loss']:.4f} (ce {r['train_ce']:.4f}, "
            f"B {r['train_bias']:.4f}, "
            f"lambda {r['lambda']:g}) | val ce {r['val_ce']:.4f} acc {r['val_accuracy']:.4f} "
            f"(balanced {r[GUARD_METRIC]:.4f}) "
            f"L {r['val_L']:.4f} L_soft {r['val_L_soft']:.4f} | {r['seconds']:.1f} s")


class _Log:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)
