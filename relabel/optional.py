"""Optional dependencies: an import that fails names the extra that installs it.

relabel's core (bias, train, run) needs neither the simulator's GalSim nor the report's
matplotlib nor dask-jobqueue; they come with ``pip install 'relabel[sim]'``, ``[report]``,
``[queues]`` (or ``[all]``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from relabel.errors import MissingDependencyError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or explain which extra of relabel installs it.

    Parameters
    ----------
    module : str
        The module to import, e.g. ``"galsim"``.
    extra : str
        The optional-dependency group of relabel that provides it, e.g. ``"sim"``.
    purpose : str
        What needs it, for the message, e.g. ``"the survey simulator"``.

    Returns
    -------
    types.ModuleType
        The imported module.

    Raises
    ------
    MissingDependencyError
        The module is not installed; the message gives the pip command.

    Examples
    --------
    >>> require("json", "core", "nothing").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package {module!r}, which is not installed ({exc}); "
            f"install it with: pip install 'relabel[{extra}]'"
        ) from None
