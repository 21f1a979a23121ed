"""PNG/JPEG stamps (Galaxy Zoo, Zoobot, Legacy Surveys viewer cutouts) read with Pillow.

A colour stamp holds three 8-bit channels, a grey one a single channel. The workflow
names the bands (e.g. ``[g, r, z]``) and ``cutouts.channels`` says which channel holds
each band (Legacy Surveys colour JPEGs put g in blue, r in green, z in red:
``channels: [B, G, R]``); by default one band is the grey channel ``L`` and three bands
are ``R, G, B`` in that order. Pixels keep their 0-255 values (as float32): the
checkpoint records the ``linear8bit`` normalisation for them, see
:mod:`relabel.model.normalisation`. A colour stamp is never silently turned grey (or
the reverse): a channel the file lacks is ``wrong_bands``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from relabel import status as st

#: File name endings read as 8-bit stamps, not FITS.
STAMP_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_stamp(path: str | Path) -> bool:
    """True for a PNG or JPEG file name (any case).

    Parameters
    ----------
    path : str or pathlib.Path
        A file name.

    Returns
    -------
    bool
    """
    return str(path).lower().endswith(STAMP_SUFFIXES)


def default_channels(n_bands: int) -> list[str]:
    """Grey for one band, R, G, B for three; otherwise the workflow must say (``cutouts.channels``).

    Parameters
    ----------
    n_bands : int
        Bands per cutout.

    Returns
    -------
    list of str
        ``["L"]`` for one band, else the first ``n_bands`` of ``["R", "G", "B"]``
        (a stamp with other bands needs ``cutouts.channels``).
    """
    return ["L"] if n_bands == 1 else ["R", "G", "B"][:n_bands]


def read_stamp(path: str | Path, channels: list[str]) -> tuple[np.ndarray | None, str | None]:
    """One stamp as uint8 (bands, H, W), in ``channels`` order; or (None, status).

    The caller turns the 0-255 values into float32 as it copies them into its batch: one
    conversion pass per stamp, not two.

    Parameters
    ----------
    path : str or Path
        A PNG or JPEG file.
    channels : list of str
        The channel of each band: ``R``, ``G``, ``B`` or ``L`` (grey).

    Returns
    -------
    image : numpy.ndarray of uint8, shape (bands, H, W), or None
        May be a read-only view (a grey stamp repeated for several bands).
    fault : str or None
        ``corrupt_file`` (unreadable, truncated, or not 8 bits per channel) or
        ``wrong_bands`` (a colour stamp for grey bands, or the reverse).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later
            im: Image.Image = opened
            mode = im.mode
            if mode in ("P", "PA", "RGBA", "CMYK", "YCbCr"):
                im, mode = im.convert("RGB"), "RGB"
            elif mode == "LA":
                im, mode = im.convert("L"), "L"
            if mode not in ("L", "RGB"):
                return None, st.CORRUPT_FILE  # 16-bit or float PNGs: not 8-bit data
            pixels = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, st.CORRUPT_FILE
    if mode == "L":
        if any(c != "L" for c in channels):
            return None, st.WRONG_BANDS
        return np.broadcast_to(pixels, (len(channels), *pixels.shape)), None
    if any(c not in "RGB" for c in channels):
        return None, st.WRONG_BANDS
    index = ["RGB".index(c) for c in channels]
    return pixels.transpose(2, 0, 1)[index], None
