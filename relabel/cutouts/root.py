"""The check that a workflow's cutouts can be found, made before any work is submitted.

Without it a mistyped ``cutouts.root`` (or a recorded relative root resolved against
another folder) gives a run that "succeeds" with every row ``missing_file``.
"""

from __future__ import annotations

from pathlib import Path

from relabel.errors import CatalogError

#: Rows whose cutout files are looked for: if none of them exists, the root is wrong, not the rows.
SAMPLE_ROWS = 50


def check_cutout_root(workflow, catalog=None, how: str = "") -> None:
    """Raise when ``workflow.cutouts.root`` is missing, or none of the first rows' cutout files is in it.

    Parameters
    ----------
    workflow : relabel.config.Workflow
        Its ``cutouts`` section gives the root, layout and path column.
    catalog : relabel.catalog.reader.Catalog, optional
        When given, the first :data:`SAMPLE_ROWS` rows' files are looked for.
    how : str
        How the root was found, for the message (e.g. "the checkpoint's recorded root, taken
        relative to the catalog's folder").

    Raises
    ------
    CatalogError
        Naming the root, how it was resolved, and what to do.
    """
    cut = workflow.cutouts
    root = Path(cut.root)
    said = f" ({how})" if how else ""
    if not root.is_dir():
        raise CatalogError(f"cutouts.root {root}{said} is not a folder; set cutouts.root in the workflow "
                           "(--config) to where the cutouts are")
    if catalog is None or catalog.nrows == 0:
        return
    column = cut.columns[0]
    paths = catalog.read([column], 0, min(catalog.nrows, SAMPLE_ROWS))[column]
    names = [p.decode() if isinstance(p, bytes) else str(p) for p in paths]
    if not any((root / name.rstrip()).is_file() for name in names):
        raise CatalogError(f"none of the first {len(names)} cutout files named by column {column} "
                           f"(e.g. {names[0].rstrip()!r}) is in cutouts.root {root}{said}; set cutouts.root in the "
                           "workflow (--config) to the folder they are relative to")
