"""The options of one training run, resolved from the call and the workflow's ``train`` and ``bias`` sections."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from relabel.config import CATALOG_INPUTS, Workflow
from relabel.errors import ConfigError

METHODS = ("biased", "debiased")
#: The value of ``lambda`` (workflow ``train.lambda``, ``--lambda``) that chooses it from the data.
AUTOMATIC = "automatic"


@dataclass(frozen=True)
class TrainOptions:
    """Everything :func:`relabel.train.loop.train_model` needs besides the data; see its parameters."""

    method: str
    epochs: int
    batch_size: int
    lam: float
    seed: int
    val_fraction: float
    log2_bins_int: int
    bins_obs: int
    width: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    patience: int = 4
    accuracy_tolerance: float = 0.1
    settle_window: int = 3
    settle_tolerance: float = 0.05
    catalog_inputs: str = "none"

    def record(self) -> dict:
        """The options as plain JSON (for the checkpoint's metrics)."""
        return asdict(self)


def wants_automatic_lambda(method: str, lam, workflow: Workflow) -> bool:
    """Whether a training takes lambda from the data: ``debiased``, with ``lam`` ``automatic``, or None and the
    workflow's ``train.lambda`` ``automatic`` (its default).

    Parameters
    ----------
    method : str
        ``biased`` or ``debiased``.
    lam : float, str or None
        lambda as the caller gave it (None: the workflow's).
    workflow : Workflow
        Supplies ``train.lambda``.

    Returns
    -------
    bool
    """
    return method == "debiased" and (lam == AUTOMATIC or (lam is None and workflow.train["lambda"] == AUTOMATIC))


def resolve_options(workflow: Workflow, method: str, **given) -> TrainOptions:
    """Fill the options not given (None) from the workflow; check them.

    Parameters
    ----------
    workflow : Workflow
        Supplies ``train.epochs``, ``batch_size``, ``lambda`` (a number: ``automatic`` is
        :func:`relabel.train.lambda_path.select_lambda`'s), ``seed``, ``val_fraction``,
        ``catalog_inputs`` and ``bias.log2_bins_int``, ``bins_obs``.
    method : str
        ``biased`` or ``debiased``; lambda is 0 for ``biased``.
    **given
        Any field of :class:`TrainOptions`; None takes the default.

    Raises
    ------
    ConfigError
        Unknown method, epochs < 1, batch size < 2, lambda < 0 or ``automatic``, a settle window < 1,
        an unknown ``catalog_inputs``.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    train, bias = workflow.train, workflow.bias
    from_workflow = {"epochs": train["epochs"], "batch_size": train["batch_size"], "lam": train["lambda"],
                     "seed": train["seed"], "val_fraction": train["val_fraction"],
                     "log2_bins_int": bias["log2_bins_int"], "bins_obs": bias["bins_obs"],
                     "catalog_inputs": train["catalog_inputs"]}
    values = {k: v for k, v in given.items() if v is not None}
    for key, default in from_workflow.items():
        values.setdefault(key, default)
    if method != "debiased":
        values["lam"] = 0.0
    elif values["lam"] == AUTOMATIC:
        raise ConfigError("lambda 'automatic' is a path of trainings, not one: train through "
                          "relabel.train.train_model (which runs the path) or select_lambda, not with these options")
    casts = {"epochs": int, "batch_size": int, "lam": float, "seed": int, "val_fraction": float,
             "log2_bins_int": int, "bins_obs": int}
    values = {k: casts.get(k, lambda v: v)(v) for k, v in values.items()}
    options = TrainOptions(method=method, **values)
    if options.epochs < 1 or options.batch_size < 2:
        raise ConfigError(f"need epochs >= 1 and batch_size >= 2, got {options.epochs} and {options.batch_size}")
    if options.lam < 0:
        raise ConfigError(f"lambda must be >= 0, got {options.lam}")
    if options.catalog_inputs not in CATALOG_INPUTS:
        raise ConfigError(f"catalog_inputs must be one of {', '.join(CATALOG_INPUTS)}, "
                          f"got {options.catalog_inputs!r}")
    if options.settle_window < 1:
        raise ConfigError(f"settle_window must be >= 1, got {options.settle_window}")
    return options
