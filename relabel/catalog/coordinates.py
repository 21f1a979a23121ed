"""Right ascension and declination in degrees, whatever unit or notation the catalog gives them in.

Catalogs mostly give RA/Dec as decimal degrees, but not all: a column may carry
a unit (FITS ``TUNITn``, the unit astropy writes into a Parquet file's metadata,
an astropy Table column's ``unit``) in radians, arcseconds or hours, and tables
from VizieR or NED often hold sexagesimal text (``09:59:44.36``, ``+02 13 31.2``,
``9h59m44.36s``; VizieR's units ``h:m:s`` and ``d:m:s``). A catalog in radians read
as degrees puts every galaxy off the survey's images without any error, so the
unit is taken from the catalog, or from the workflow (``catalog.ra_unit`` /
``catalog.dec_unit``) where the catalog says nothing, and refused when the two
disagree or the unit is not an angle. Units and notations are astropy's
(:mod:`astropy.units`, :class:`astropy.coordinates.Angle`): sexagesimal RA text is
read as hours and Dec text as degrees unless a unit says otherwise; text holding a
plain decimal number is read in the column's unit (degrees by default). A value
that cannot be read becomes NaN, which gives its row the status ``bad_coordinates``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import numpy as np
import pandas as pd

from relabel.errors import CatalogError

#: VizieR's units of sexagesimal text columns (RAJ2000 "h:m:s", DEJ2000 "d:m:s"), as astropy unit names.
SEXAGESIMAL_UNITS = {"h:m:s": "hourangle", "hms": "hourangle", "d:m:s": "deg", "dms": "deg"}


def angle_unit(text: str | None, column: str, source: str, right_ascension: bool):
    """The astropy angle unit a unit string names, or None for no unit.

    Parameters
    ----------
    text : str or None
        E.g. ``deg``, ``degree``, ``rad``, ``arcsec``, ``hourangle``, ``h`` (hours of right
        ascension, as catalogs write it) or VizieR's ``h:m:s`` / ``d:m:s``; blank or None: no unit.
    column : str
        The column it belongs to, for messages.
    source : str
        Where the unit was found (the catalog file, or the workflow), for messages.
    right_ascension : bool
        True for the RA column: hours of time (``h``) then mean hours of right ascension.

    Returns
    -------
    astropy.units.UnitBase or None

    Raises
    ------
    CatalogError
        A unit astropy does not know, or one that is not an angle (``pix``, ``mag``).
    """
    import astropy.units as u

    if text is None or not str(text).strip():
        return None
    name = SEXAGESIMAL_UNITS.get(str(text).strip().lower(), str(text).strip())
    unit = u.Unit(name, parse_strict="silent")
    # Units as catalogs write them outside the standard: DEG, Degrees, RADIANS, hours.
    for variant in (name.lower(), name.lower().rstrip(".").removesuffix("s")):
        if isinstance(unit, u.UnrecognizedUnit):
            unit = u.Unit(variant, parse_strict="silent")
    if right_ascension and unit.is_equivalent(u.hour):  # time units of right ascension: h, min, s
        return u.hourangle if unit == u.hour else unit.to(u.hour) * u.hourangle
    if isinstance(unit, u.UnrecognizedUnit) or not unit.is_equivalent(u.deg):
        what = "an angle" if not isinstance(unit, u.UnrecognizedUnit) else "a unit astropy knows"
        raise CatalogError(f"{source}: coordinate column {column} has unit {text!r}, which is not {what}; "
                           "RA and Dec must be angles (deg, rad, arcsec, hourangle, ...) or sexagesimal text")
    return unit


def resolve_coordinate_units(catalog, workflow):
    """The workflow with ``catalog.ra_unit`` / ``catalog.dec_unit`` set from the catalog's own units.

    A unit the catalog states (:meth:`relabel.catalog.base.Catalog.unit`) is used unless
    the workflow names one; when both do, they must be the same angle unit.

    Parameters
    ----------
    catalog : relabel.catalog.base.Catalog
        The opened catalog.
    workflow : relabel.config.Workflow
        Its ``catalog`` section names the RA/Dec columns and, optionally, their units.

    Returns
    -------
    relabel.config.Workflow
        A copy with both units set (None where neither the catalog nor the workflow gives one:
        degrees, or sexagesimal text read as hours / degrees).

    Raises
    ------
    CatalogError
        A unit that is not an angle, or a workflow unit that contradicts the catalog's.
    """
    spec = workflow.catalog
    units = {}
    for key, column in (("ra_unit", spec.ra), ("dec_unit", spec.dec)):
        declared = getattr(spec, key)
        where = f"workflow {workflow.source or workflow.name} (catalog.{key})"
        wanted = angle_unit(declared, column, where, key == "ra_unit")
        found_text = catalog.unit(column)
        found = angle_unit(found_text, column, str(catalog.path), key == "ra_unit")
        if wanted is not None and found is not None and wanted != found:
            raise CatalogError(f"{catalog.path}: column {column} has unit {found_text!r} but {where} says "
                               f"{declared!r}; remove catalog.{key} or correct it")
        chosen = declared if wanted is not None else (found_text if found is not None else None)
        units[key] = None if chosen is None else str(chosen).strip()
    raw = copy.deepcopy(workflow.raw)
    # The run record keeps the mapping: a unit found in the catalog goes into it, so that whatever re-reads the
    # run's output (the report's stamps) cuts at the same places. Degrees are the default and need no entry.
    import astropy.units as u

    for key, unit in units.items():
        if unit is not None and angle_unit(unit, key, "", key == "ra_unit") != u.deg:
            raw.setdefault("catalog", {})[key] = unit
    return dataclasses.replace(workflow, catalog=dataclasses.replace(spec, **units), raw=raw)


def catalog_coordinate_units(catalog_path, workflow):
    """:func:`resolve_coordinate_units` for a catalog given as a path or a table in memory (opened here).

    Parameters
    ----------
    catalog_path : str, Path, pandas.DataFrame, astropy.table.Table or Catalog
        The catalog.
    workflow : relabel.config.Workflow

    Returns
    -------
    relabel.config.Workflow
        With the RA/Dec units set.

    Raises
    ------
    CatalogError
        As :func:`resolve_coordinate_units`, or the catalog cannot be opened.
    """
    from relabel.catalog.reader import open_catalog

    # open_catalog uses the HDU for FITS files only (Parquet, folders and tables in memory have none).
    return resolve_coordinate_units(open_catalog(catalog_path, workflow.catalog.hdu), workflow)


def sky_degrees(rows: pd.DataFrame, workflow) -> tuple[np.ndarray, np.ndarray]:
    """Right ascension and declination of ``rows`` in degrees (NaN where missing or unreadable).

    Parameters
    ----------
    rows : pandas.DataFrame
        Catalog rows holding the workflow's RA/Dec columns (numbers or text).
    workflow : relabel.config.Workflow
        The columns' names and units (:func:`resolve_coordinate_units`).

    Returns
    -------
    ra, dec : numpy.ndarray of float64, shape (len(rows),)
        Degrees, as read (RA not wrapped into [0, 360)).
    """
    spec = workflow.catalog
    return (to_degrees(rows[spec.ra], spec.ra_unit, True, spec.ra),
            to_degrees(rows[spec.dec], spec.dec_unit, False, spec.dec))


def to_degrees(values: pd.Series, unit: str | None, right_ascension: bool, column: str = "RA") -> np.ndarray:
    """One coordinate column in degrees: numbers scaled from ``unit``, text parsed by astropy.

    Parameters
    ----------
    values : pandas.Series
        Numbers (any dtype, nullable ones included) or text, one per row.
    unit : str or None
        The column's unit (None: degrees; for sexagesimal text, hours for RA and degrees for Dec).
    right_ascension : bool
        Whether the column is the RA.
    column : str
        Its name, for messages.

    Returns
    -------
    numpy.ndarray of float64
        NaN where a value is missing or cannot be read as an angle.

    Examples
    --------
    >>> to_degrees(pd.Series(["09:59:44.36", "150.5", "", "9h59m44.36s"]), None, True).round(4).tolist()
    [149.9348, 150.5, nan, 149.9348]
    >>> to_degrees(pd.Series([np.pi]), "rad", False).tolist()
    [180.0]
    """
    import astropy.units as u

    parsed = angle_unit(unit, column, "the workflow", right_ascension)
    if pd.api.types.is_numeric_dtype(values.dtype):  # numpy and pandas' nullable numbers
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        return numbers if parsed is None else (numbers * parsed).to_value(u.deg)
    text = values.astype(object).map(lambda v: v.decode() if isinstance(v, bytes) else v)
    text = text.map(lambda v: v.strip() if isinstance(v, str) else v)
    decimal = np.array(pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))
    out = decimal.copy() if parsed is None else (decimal * parsed).to_value(u.deg)
    rest = np.flatnonzero(np.isnan(decimal) & text.map(lambda v: isinstance(v, str) and v != "").to_numpy(bool))
    if len(rest):
        out[rest] = _sexagesimal(text.to_numpy(dtype=object)[rest],
                                 parsed or (u.hourangle if right_ascension else u.deg))
    return out


#: The common sexagesimal form, "[+-]D:M:S.s" or "[+-]D M S.s", read without astropy's per-string parser
#: (about 50 us a value: 45 minutes for a 50-million-row catalog); anything else goes to astropy.
SEXAGESIMAL = r"^\s*([+-]?)(\d{1,3})(?::|\s+)(\d{1,2})(?::|\s+)(\d{1,2}(?:\.\d*)?)\s*$"


def _sexagesimal(strings: np.ndarray, unit) -> np.ndarray:
    """Degrees of sexagesimal strings in ``unit`` (astropy for the forms the fast path does not take)."""
    import astropy.units as u

    parts = pd.Series(strings, dtype=object).str.extract(SEXAGESIMAL)
    sign = np.where(parts[0].to_numpy(dtype=object) == "-", -1.0, 1.0)
    d, m, sec = (pd.to_numeric(parts[i]).to_numpy(dtype=np.float64, na_value=np.nan) for i in (1, 2, 3))
    fast = np.isfinite(d) & (m < 60) & (sec < 60)  # out-of-range minutes or seconds: astropy says why
    out = np.full(len(strings), np.nan)
    out[fast] = ((sign * (d + m / 60 + sec / 3600))[fast] * unit).to_value(u.deg)
    if not fast.all():
        out[~fast] = _astropy_angles(strings[~fast], unit)
    return out


def _astropy_angles(strings: np.ndarray, unit) -> np.ndarray:
    """Degrees of angle strings by astropy (all at once; one by one when one is unreadable: NaN there)."""
    from astropy.coordinates import Angle

    try:
        return np.asarray(Angle(list(strings), unit=unit).deg, dtype=np.float64)
    except (ValueError, TypeError):
        pass
    out = np.full(len(strings), np.nan)
    for i, value in enumerate(strings):
        with contextlib.suppress(ValueError, TypeError):  # unreadable: NaN, and the row gets bad_coordinates
            out[i] = Angle(value, unit=unit).deg
    return out
