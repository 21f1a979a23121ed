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
    found = [root / n.rstrip() for n in names if (root / n.rstrip()).is_file()]
    if not found:
        raise CatalogError(f"none of the first {len(names)} cutout files named by column {column} "
                           f"(e.g. {names[0].rstrip()!r}) is in cutouts.root {root}{said}; set cutouts.root in the "
                           "workflow (--config) to the folder they are relative to")
    check_cutout_header(workflow, found[0])


#: Header keys that say what a cutout file holds, as the simulator writes them.
BANDS_KEY, PIXSCALE_KEY = "BANDS", "PIXSCALE"
#: Relative difference of pixel scales taken as a mismatch (headers round to a few digits).
PIXSCALE_TOLERANCE = 1e-3


def check_cutout_header(workflow, path: Path) -> None:
    """Compare ``cutouts.bands`` and ``cutouts.pixel_scale`` with a FITS cutout's header, where it says them.

    A header without ``BANDS`` (comma-separated names along the band axis) or ``PIXSCALE``
    (arcsec / pixel) is not checked on that key; non-FITS files are not checked.

    Raises
    ------
    ConfigError
        The header names other bands (or another order), or another pixel scale.
    """
    from relabel.errors import ConfigError

    if not path.name.lower().endswith((".fits", ".fit", ".fits.gz", ".fits.fz")):
        return
    import fitsio

    try:
        header = fitsio.read_header(str(path), 0)
    except OSError:
        return  # an unreadable file is a per-row status later, not a reason to refuse the run
    cut = workflow.cutouts
    if BANDS_KEY in header:
        bands = [b.strip() for b in str(header[BANDS_KEY]).split(",") if b.strip()]
        if [b.lower() for b in bands] != [b.lower() for b in cut.bands]:
            raise ConfigError(f"cutouts.bands is {cut.bands} but {path} says {BANDS_KEY} = {','.join(bands)} "
                              "(bands along its band axis, in order); make the workflow match the cutouts")
    if PIXSCALE_KEY in header:
        scale = float(header[PIXSCALE_KEY])
        if abs(scale - cut.pixel_scale) > PIXSCALE_TOLERANCE * max(scale, 1e-12):
            raise ConfigError(f"cutouts.pixel_scale is {cut.pixel_scale:g} arcsec/pixel but {path} says "
                              f"{PIXSCALE_KEY} = {scale:g}; make the workflow match the cutouts")
