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
    if not cut.columns:
        # Layout images without a column: the images are found by WCS footprint from a path pattern.
        pattern = cut.image_pattern or ""
        if not any(any(root.glob(pattern.replace("{band}", band))) for band in cut.bands):
            raise CatalogError(f"cutouts.image_pattern {pattern!r} matches no file in cutouts.root {root}{said}; "
                               "set cutouts.root (--config) to the folder of the survey images")
        return
    if catalog is None or catalog.nrows == 0:
        return
    column = cut.columns[0]
    paths = catalog.read([column], 0, min(catalog.nrows, SAMPLE_ROWS))[column]
    # A survey image's path may name its band ("field_{band}.fits.fz"): look for the first band's file.
    names = [(p.decode() if isinstance(p, bytes) else str(p)).replace("{band}", cut.bands[0]) for p in paths]
    found = list(dict.fromkeys(root / n.rstrip() for n in names if (root / n.rstrip()).is_file()))
    if not found:
        raise CatalogError(f"none of the first {len(names)} cutout files named by column {column} "
                           f"(e.g. {names[0].rstrip()!r}) is in cutouts.root {root}{said}; set cutouts.root in the "
                           "workflow (--config) to the folder they are relative to")
    if cut.layout == "images":
        return  # a survey image holds one band; its pixel scale is checked against the checkpoint's at planning
    # One odd file is that galaxy's fault (a status on its row); the workflow is wrong only when every file disagrees.
    problems = [header_mismatch(workflow, path) for path in found[:HEADER_FILES]]
    if all(problems):
        from relabel.errors import ConfigError

        more = "" if len(problems) == 1 else f" (and {len(problems) - 1} more files agree)"
        raise ConfigError(f"{problems[0]}{more}")


#: Cutout files whose headers are compared with the workflow.
HEADER_FILES = 5
#: Header keys that say what a cutout file holds, as the simulator writes them.
BANDS_KEY, PIXSCALE_KEY = "BANDS", "PIXSCALE"
#: Relative difference of pixel scales taken as a mismatch (headers round to a few digits).
PIXSCALE_TOLERANCE = 1e-3


def header_mismatch(workflow, path: Path) -> str | None:
    """How a FITS cutout's header contradicts ``cutouts.bands`` or ``cutouts.pixel_scale``, or None.

    A header without ``BANDS`` (comma-separated names along the band axis) or ``PIXSCALE``
    (arcsec / pixel) is not checked on that key; non-FITS and unreadable files are not checked.

    Parameters
    ----------
    workflow : relabel.config.Workflow
        Its ``cutouts.bands`` and ``cutouts.pixel_scale`` (arcsec / pixel) are checked.
    path : pathlib.Path
        One cutout file.

    Returns
    -------
    str or None
        A message naming the file, the header value and the workflow's, or None when they agree.
    """
    if not path.name.lower().endswith((".fits", ".fit", ".fits.gz", ".fits.fz")):
        return None
    import fitsio

    try:
        header = fitsio.read_header(str(path), 0)
    except OSError:
        return None  # an unreadable file is a per-row status later, not a reason to refuse the run
    cut = workflow.cutouts
    if BANDS_KEY in header:
        bands = [b.strip() for b in str(header[BANDS_KEY]).split(",") if b.strip()]
        if [b.lower() for b in bands] != [b.lower() for b in cut.bands]:
            return (f"cutouts.bands is {cut.bands} but {path} says {BANDS_KEY} = {','.join(bands)} "
                    "(bands along its band axis, in order); make the workflow match the cutouts")
    if PIXSCALE_KEY in header:
        scale = float(header[PIXSCALE_KEY])
        if abs(scale - cut.pixel_scale) > PIXSCALE_TOLERANCE * max(scale, 1e-12):
            return (f"cutouts.pixel_scale is {cut.pixel_scale:g} arcsec/pixel but {path} says "
                    f"{PIXSCALE_KEY} = {scale:g}; make the workflow match the cutouts")
    return None
