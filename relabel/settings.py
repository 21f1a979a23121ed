"""relabel's Dask configuration: ``relabel.yaml`` registered under ``relabel.*``, as dask-jobqueue does.

Read with ``dask.config.get("relabel.worker-timeout")``; users override keys in their own
Dask YAML, with ``DASK_RELABEL__...`` variables or ``dask.config.set``. Importing this
module only adds defaults: values the user already set win.
"""

from __future__ import annotations

from pathlib import Path

import dask
import yaml

CONFIG_FILE = Path(__file__).with_name("relabel.yaml")


def register() -> None:
    """Add relabel's defaults to ``dask.config`` (idempotent; never over a user's value)."""
    dask.config.update_defaults(yaml.safe_load(CONFIG_FILE.read_text()))


def get(key: str, override=None):
    """``override`` when given, else ``relabel.<key>`` from the Dask configuration.

    Parameters
    ----------
    key : str
        Key below ``relabel.`` (e.g. ``"worker-timeout"``).
    override : Any, optional
        A value given directly (keyword argument or command-line option), which wins.

    Returns
    -------
    Any
    """
    return override if override is not None else dask.config.get(f"relabel.{key}")


register()
