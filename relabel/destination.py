"""Checks of an output's destination, made before any long work starts.

Every command that writes (a checkpoint, a report, a run, a survey) refuses to
replace what is there without ``--overwrite`` and needs its parent folder to exist,
be a folder and be writable: finding out after an hour of training loses the model.
"""

from __future__ import annotations

import os
from pathlib import Path

from relabel.errors import OutputError


def check_output_file(path: str | Path, overwrite: bool = False, what: str = "output") -> Path:
    """Check that ``path`` can be written as a new file (or replaced, with ``overwrite``).

    Parameters
    ----------
    path : str or Path
        The file to write (e.g. a checkpoint).
    overwrite : bool
        Allow replacing an existing file (never a folder).
    what : str
        What the file is, for the message (``checkpoint``).

    Returns
    -------
    Path
        ``path`` as a Path.

    Raises
    ------
    OutputError
        ``path`` is a folder, exists without ``overwrite``, or its parent is missing, not a folder
        or not writable. Missing parent folders are not created: a mistyped path should fail, not
        grow a tree.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name, e.g. {path / 'model.pt'}")
    if path.exists() and not overwrite:
        raise OutputError(f"{what} {path} already exists; pass --overwrite to replace it, or choose another name")
    _check_parent(path, what)
    return path


def check_output_dir(path: str | Path, overwrite: bool = False, what: str = "output folder",
                     allow_existing: bool = False) -> Path:
    """Check that ``path`` can be written as a folder of outputs.

    Parameters
    ----------
    path : str or Path
        The folder to write into.
    overwrite : bool
        Allow a non-empty existing folder.
    what : str
        What the folder is, for the message.
    allow_existing : bool
        Leave a non-empty folder to the caller's own rules (a run's ``--resume``).

    Returns
    -------
    Path

    Raises
    ------
    OutputError
        ``path`` is a file, is a non-empty folder without ``overwrite``, or its nearest existing
        ancestor is a file or not writable. Missing parent folders are not an error: the output
        folder is made with them.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder; choose a folder name")
    if path.is_dir():
        if any(path.iterdir()) and not (overwrite or allow_existing):
            raise OutputError(f"{what} {path} is not empty; pass --overwrite to replace its contents, "
                              "or choose another folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{what} {path} is not writable")
        return path
    _check_ancestor(path, what)
    return path


def _check_ancestor(path: Path, what: str) -> None:
    """A folder that does not exist yet is made with its missing parents (``mkdir -p``, as users
    expect of an output folder); its nearest existing ancestor must be a writable folder."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{what} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: folder {ancestor} is not writable")


def _check_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"{what} {path}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise OutputError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: folder {parent} is not writable")
