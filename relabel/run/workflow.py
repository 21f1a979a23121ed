"""The workflow a command uses: the one given, or the mapping a checkpoint recorded.

``relabel run``, ``relabel evaluate`` and :func:`relabel.predict_frame` all take an
optional workflow; without one they read the mapping the training recorded in the
checkpoint. Its relative paths (the cutout root) must resolve against a folder the
caller chooses, so that one rule serves all three.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from relabel.config import Workflow, load_workflow
from relabel.errors import ConfigError

if TYPE_CHECKING:  # the checkpoint module imports torch; this one is read by torch-free callers too
    from relabel.model.checkpoint import CheckpointMeta


def resolve_workflow(workflow: str | Path | Workflow | None, meta: CheckpointMeta, base_dir: Path,
                     model: str | Path | None = None) -> Workflow:
    """The workflow given, loaded if it is a path, or else the one recorded in the checkpoint.

    Parameters
    ----------
    workflow : str, Path, Workflow or None
        A workflow, a YAML file to load, or None for the checkpoint's recorded mapping.
    meta : CheckpointMeta
        The checkpoint's metadata (:func:`relabel.model.checkpoint.read_checkpoint`).
    base_dir : Path
        Folder against which the recorded mapping's relative paths (the cutout root)
        resolve: the catalog's real folder for files (symlinks followed, so a linked
        catalog still finds the cutouts beside the file it points to), the working
        folder for in-memory frames.
    model : str or Path, optional
        The checkpoint's path, named in messages.

    Returns
    -------
    Workflow
        The workflow to use.

    Raises
    ------
    ConfigError
        ``workflow`` is None and the checkpoint records no mapping, or the file given is invalid.
    """
    if isinstance(workflow, Workflow):
        return workflow
    if workflow is not None:
        return load_workflow(workflow)
    name = "the checkpoint" if model is None else f"checkpoint {model}"
    if not meta.workflow:
        raise ConfigError(f"{name} records no workflow mapping: give one (--config, or workflow=)")
    return Workflow.from_dict(meta.workflow, base_dir=base_dir, source=f"the workflow recorded in {name}")
