"""Input normalisation: an arcsinh stretch whose per-band offset and scale come from the sky of the training cutouts."""

from __future__ import annotations

import numpy as np

from relabel.errors import CheckpointError

#: Width of the frame of border pixels that estimates the sky level and noise.
SKY_BORDER = 4


def estimate_normalisation(images: np.ndarray, border: int = SKY_BORDER) -> dict:
    """Arcsinh-stretch parameters per band from the sky in the cutouts' border frame.

    The offset is the median border pixel (the residual sky level) and the scale the
    robust sky noise, 1.4826 x the median absolute deviation. ``asinh((x - offset) / scale)``
    is then linear (about x / noise) at the noise level and logarithmic in bright
    cores, so faint outer structure (spiral arms) and bright bulges both stay in a
    range the network handles. One value per band for the whole survey, never per
    image, so surface brightness still means the same in every cutout.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, bands, size, size)
        Cutouts in the survey's pixel units; non-finite pixels are ignored.
    border : int
        Width in pixels of the frame taken as sky.

    Returns
    -------
    dict
        ``name`` (``"arcsinh"``), ``offset`` and ``scale`` (one float per band, pixel units), ``estimated_from``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> norm = estimate_normalisation(rng.normal(1.0, 2.0, (50, 1, 32, 32)).astype(np.float32))
    >>> norm["name"], round(norm["offset"][0], 1), round(norm["scale"][0], 1)
    ('arcsinh', 1.0, 2.0)
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"need images of shape (n, bands, H, W) with n > 0, got {images.shape}")
    if is_eight_bit(images):
        return linear_8bit(images.shape[1])
    frame = np.ones(images.shape[-2:], dtype=bool)
    frame[border:-border, border:-border] = False
    offsets, scales = [], []
    for b in range(images.shape[1]):
        sky = images[:, b][:, frame]
        sky = sky[np.isfinite(sky)]
        median = float(np.median(sky))
        mad = float(np.median(np.abs(sky - median)))
        if not mad > 0:
            mad = float(np.std(sky)) / 1.4826 or 1.0
        offsets.append(median)
        scales.append(1.4826 * mad)
    return {
        "name": "arcsinh",
        "offset": offsets,
        "scale": scales,
        "estimated_from": f"{SKY_BORDER}-pixel border frame of {images.shape[0]} training cutouts: "
        "offset = median, scale = 1.4826 x MAD (sky noise)",
    }


def normalise(images: np.ndarray, normalisation: dict, out: np.ndarray | None = None) -> np.ndarray:
    """Apply a recorded normalisation to float32 images (n, bands, H, W); non-finite pixels become the sky (0).

    ``out`` (float32, same shape) receives the result without temporaries: the pipeline
    normalises straight into its padded batch buffer.

    Parameters
    ----------
    images : numpy.ndarray of float32, shape (n, bands, H, W)
        Cutouts in the survey's pixel units (or 0..255 for 8-bit stamps).
    normalisation : dict
        As recorded in a checkpoint (:func:`estimate_normalisation` or :func:`linear_8bit`).
    out : numpy.ndarray of float32, shape (n, bands, H, W), optional
        Where to write the result.

    Returns
    -------
    numpy.ndarray of float32, shape (n, bands, H, W)
        ``out`` when given.

    Raises
    ------
    CheckpointError
        An unknown normalisation name.
    """
    name = normalisation.get("name")
    if name not in ("arcsinh", LINEAR_8BIT):
        raise CheckpointError(f"unknown normalisation {name!r}; this relabel knows 'arcsinh' and '{LINEAR_8BIT}'")
    offset = np.asarray(normalisation["offset"], dtype=np.float32)[None, :, None, None]
    scale = np.asarray(normalisation["scale"], dtype=np.float32)[None, :, None, None]
    if out is None:
        out = np.empty(np.shape(images), dtype=np.float32)
    np.subtract(np.asarray(images, dtype=np.float32), offset, out=out)
    np.divide(out, scale, out=out)
    if name == "arcsinh":
        np.arcsinh(out, out=out)
    # nan_to_num writes every pixel (7x the cost of the check); most batches have nothing to fix.
    if not np.isfinite(out).all():
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


LINEAR_8BIT = "linear8bit"


def is_eight_bit(images: np.ndarray) -> bool:
    """True when every finite pixel is a whole number in [0, 255]: PNG/JPEG stamps, never calibrated fluxes.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, bands, H, W)
        Cutouts.

    Returns
    -------
    bool
    """
    finite = images[np.isfinite(images)]
    return finite.size > 0 and finite.min() >= 0 and finite.max() <= 255 and bool((finite == np.round(finite)).all())


def linear_8bit(n_bands: int) -> dict:
    """The normalisation of 8-bit stamps: ``(x - 127.5) / 127.5``, a linear map of 0..255 onto [-1, 1].

    8-bit colour stamps are already stretched (the survey's own asinh or Lupton RGB
    mapping, Lupton et al. 2004, PASP 116, 133): a second, sky-based arcsinh would
    compress them twice, so they are only centred and scaled, as Zoobot does.

    Parameters
    ----------
    n_bands : int
        Bands per stamp.

    Returns
    -------
    dict
        ``name`` (``"linear8bit"``), ``offset`` and ``scale`` (127.5 per band), ``estimated_from``.

    Examples
    --------
    >>> norm = linear_8bit(3)
    >>> normalise(np.full((1, 3, 2, 2), 255.0, np.float32), norm).max()
    np.float32(1.0)
    """
    return {"name": LINEAR_8BIT, "offset": [127.5] * n_bands, "scale": [127.5] * n_bands,
            "estimated_from": "8-bit stamps (every pixel a whole number in 0..255): fixed linear map onto [-1, 1]"}


#: Sky noise of a run's stamps, as a multiple of the training's, beyond which the run warns (either way).
SKY_NOISE_RATIO = 3.0
#: Stamps whose sky a run or an evaluation compares with the training's before it starts.
SKY_SAMPLE = 256


def sky_mismatch(images: np.ndarray, normalisation: dict, bands) -> list[str]:
    """How the sky of some stamps differs from the training's, in words (empty when it does not, or cannot say).

    The network sees pixels through the training's offset and noise scale
    (:func:`estimate_normalisation`): stamps whose sky noise is many times the
    training's (images in other units, another zero-point, a survey far deeper or
    shallower) or whose sky level sits many noise units off are read as galaxies of
    another brightness, and their labels are not the model's on its own survey.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, bands, H, W)
        A sample of a run's cutouts in the survey's pixel units (usable ones).
    normalisation : dict
        The checkpoint's (``arcsinh``; 8-bit stamps are not compared).
    bands : sequence of str
        Band names, for the messages.

    Returns
    -------
    list of str
        One sentence per band that differs: its noise ratio, or its sky offset in training noise units.
    """
    if normalisation.get("name") != "arcsinh" or len(images) == 0 or is_eight_bit(images):
        return []
    here = estimate_normalisation(images)
    problems = []
    for b, band in enumerate(bands):
        trained_scale, scale = float(normalisation["scale"][b]), float(here["scale"][b])
        shift = (float(here["offset"][b]) - float(normalisation["offset"][b])) / trained_scale
        ratio = scale / trained_scale
        if not 1 / SKY_NOISE_RATIO <= ratio <= SKY_NOISE_RATIO:
            problems.append(f"band {band}: sky noise {scale:.4g} where the model was trained on {trained_scale:.4g} "
                            f"({ratio:.3g}x)")
        elif abs(shift) > 5:
            problems.append(f"band {band}: sky level {shift:+.1f} training noise units from the training's")
    return problems


def warn_if_sky_differs(images: np.ndarray, status: np.ndarray, normalisation: dict, bands, what: str,
                        echo=None) -> str | None:
    """Warn (:class:`relabel.errors.DataWarning`, and through ``echo``) when sampled stamps' sky is not the training's.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, bands, H, W)
        A sample of cutouts as read (survey pixel units).
    status : numpy.ndarray of str, shape (n,)
        Their statuses; only whole stamps (``ok``, ``nan_filled``) are compared.
    normalisation : dict
        The checkpoint's.
    bands : sequence of str
        Band names.
    what : str
        The model, for the message.
    echo : callable, optional
        Also given the message (the CLI prints it).

    Returns
    -------
    str or None
        The warning's text, or None when the sky agrees (:func:`sky_mismatch`).
    """
    import warnings

    from relabel import status as st
    from relabel.errors import DataWarning

    problems = sky_mismatch(images[np.isin(status, (st.OK, st.NAN_FILLED))], normalisation, bands)
    if not problems:
        return None
    text = (f"the sky of {len(images)} stamps of this catalog is not that of {what}'s training survey ("
            + "; ".join(problems) + "): images in other units, at another zero-point or depth are read as "
            "galaxies of another brightness; check the images, or train on this survey")
    warnings.warn(text, DataWarning, stacklevel=3)
    if echo:
        echo(f"warning: {text}")
    return text
