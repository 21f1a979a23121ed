"""relabel: measure and remove the labeling bias of galaxy morphology catalogs.

The public API. Names load on first use, so ``import relabel`` (and the CLI's
``--help``) stays fast and does not import torch or Dask until they are needed.

Examples
--------
>>> import relabel
>>> "labeling_bias" in relabel.__all__
True
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("relabel")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC = {
    "labeling_bias": "relabel.bias.metric",
    "bias_with_errors": "relabel.bias.metric",
    "fraction_curves": "relabel.bias.metric",
    "bias_of_table": "relabel.bias.table",
    "open_catalog": "relabel.catalog.reader",
    "load_workflow": "relabel.config",
    "Workflow": "relabel.config",
    "simulate_survey": "relabel.simulate.survey",
    "train_model": "relabel.train.loop",
    "evaluate_model": "relabel.evaluate",
    "load_checkpoint": "relabel.model.checkpoint",
    "run_catalog": "relabel.run.pipeline",
    "predict_frame": "relabel.run.frame",
    "ClusterOptions": "relabel.run.clusters",
    "RelabelError": "relabel.errors",
    "RelabelWarning": "relabel.errors",
    "make_report": "relabel.report.page",
    "run_demo": "relabel.demo",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'relabel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
