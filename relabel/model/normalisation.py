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
    """
    name = normalisation.get("name")
    if name != "arcsinh":
        raise CheckpointError(f"unknown normalisation {name!r}; this relabel knows 'arcsinh'")
    offset = np.asarray(normalisation["offset"], dtype=np.float32)[None, :, None, None]
    scale = np.asarray(normalisation["scale"], dtype=np.float32)[None, :, None, None]
    if out is None:
        out = np.empty(np.shape(images), dtype=np.float32)
    np.subtract(np.asarray(images, dtype=np.float32), offset, out=out)
    np.divide(out, scale, out=out)
    np.arcsinh(out, out=out)
    # nan_to_num writes every pixel (7x the cost of the check); most batches have nothing to fix.
    if not np.isfinite(out).all():
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
