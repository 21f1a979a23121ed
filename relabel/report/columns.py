"""Names, units and definitions of catalog columns, as the report's axes and tables show them."""

from __future__ import annotations

#: Known columns (the simulator's and the usual survey names): (description, unit or "").
COLUMNS = {
    "ABS_MAG": ("absolute magnitude", "mag"),
    "R50_KPC": ("physical half-light radius", "kpc"),
    "COLOR_GR": ("rest-frame g - r colour", "mag"),
    "REDSHIFT": ("redshift z", ""),
    "PSF_FWHM": ("seeing, PSF FWHM", "arcsec"),
    "RESOLUTION": ("resolution, angular R50 / PSF FWHM", ""),
    "SNR": ("signal-to-noise ratio", ""),
    "MAG_R": ("apparent r magnitude", "mag"),
}

#: One-sentence definitions printed under the report's tables.
DEFINITIONS = {
    "RESOLUTION": "RESOLUTION is the galaxy's angular half-light radius divided by the PSF FWHM (both in arcsec): "
                  "1 means the galaxy is as large as the seeing disc, below about 0.8 its structure is blurred away.",
    "L": "L is the labeling-bias metric of Cabrera-Vives et al. (2018, AJ 156, 284): the rms change of the class "
         "fractions from the best-observed bin, at fixed intrinsic properties. The null L is the same number after "
         "shuffling the observables within each intrinsic bin: the noise floor. Excess = L - null L.",
}


def axis_label(column: str) -> str:
    """``"R50_KPC: physical half-light radius (kpc)"`` for a known column, the bare name otherwise.

    Parameters
    ----------
    column : str
        A catalog column name, e.g. ``PSF_FWHM`` or ``R50_KPC``.

    Returns
    -------
    str
        ``"NAME: description (unit)"`` for the simulator's known columns, else ``column``.

    Examples
    --------
    >>> axis_label("PSF_FWHM")
    'PSF_FWHM: seeing, PSF FWHM (arcsec)'
    >>> axis_label("MY_COL")
    'MY_COL'
    """
    if column.upper() not in COLUMNS:
        return column
    text, unit = COLUMNS[column.upper()]
    return f"{column}: {text}" + (f" ({unit})" if unit else "")


def unit(column: str) -> str:
    """The unit of a known column (``"kpc"``), or ``""``.

    Parameters
    ----------
    column : str
        A catalog column name.

    Returns
    -------
    str
        Its unit (``"arcsec"``, ``"kpc"``, ``"mag"``...), or ``""`` for unknown or unitless columns.
    """
    return COLUMNS.get(column.upper(), ("", ""))[1]
