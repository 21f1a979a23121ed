"""Degradation augmentation: well-observed labelled galaxies made to look like worse-observed ones.

The field's other answer to labeling bias (Vega-Ferrero et al. 2021, MNRAS 506, 1927,
for DES): train on bright, well-resolved galaxies whose labels are trustworthy,
degraded to look faint and small, keeping their labels. Here a training galaxy is
degraded to the observing conditions of another training galaxy drawn at random
(the survey's own distribution of observables): shrunk as if farther away,
convolved to a wider PSF with a Gaussian kernel from astropy, and topped up with
Gaussian noise to the survey's sky level. See ``docs/baselines.md``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.nn import functional as F

#: Gaussian FWHM / sigma.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Smallest shrink factor: a galaxy is never made more than 4x smaller on the sky.
MIN_SHRINK = 0.25
#: Kernel widths (pixels) are rounded to this step, so astropy builds each kernel once.
SIGMA_STEP = 0.02
#: Before a galaxy is shrunk, its PSF is widened to at least this many pixels of the shrunk grid.
ANTIALIAS_PIXELS = 2.0
#: Width of the border frame the noise is measured in (the normalisation's sky frame).
NOISE_BORDER = 4


@functools.lru_cache(maxsize=4096)
def gaussian_kernel(sigma_px: float, size: int) -> np.ndarray:
    """Astropy's Gaussian kernel, ``size`` x ``size`` pixels with unit sum.

    Sampled at pixel centres: the image already carries its pixel response.

    Parameters
    ----------
    sigma_px : float
        Standard deviation in pixels (FWHM / 2.3548).
    size : int
        Side of the kernel in pixels (odd for a centred peak).

    Returns
    -------
    numpy.ndarray, shape (size, size)
        float64, summing to 1.
    """
    from astropy.convolution import Gaussian2DKernel

    kernel = Gaussian2DKernel(x_stddev=sigma_px, x_size=size, y_size=size, mode="center").array
    return (kernel / kernel.sum()).astype(np.float32)


def degrade(images: torch.Tensor, psf_fwhm, target_fwhm, shrink, pixel_scale: float, sky_sigma,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Images of galaxies as they would look farther away, through a wider PSF, at the sky's noise.

    Steps, per image: (1) before shrinking, a convolution that makes the PSF at least
    ``ANTIALIAS_PIXELS`` pixels wide on the shrunk grid, so that the resampling neither
    aliases nor loses flux; (2) resampling ``shrink`` times smaller about the centre
    (bilinear; surface brightness kept, i.e. no cosmological dimming), the margin
    this leaves filled with noise of the smoothed image's level; (3) a convolution
    that takes the PSF the rest of the way to ``target_fwhm``; (4) the noise, measured
    in the border frame (1.4826 x MAD, as the normalisation does), topped up with white
    Gaussian noise to ``sky_sigma``: smoothing lowered it below the survey's level.
    The convolutions use astropy's Gaussian kernel (by FFT, edges reflected) and add
    in quadrature: exact for a Gaussian PSF; the simulator's Moffat PSF widens to
    about the target, as GalSim's own convolution of the two does.

    Parameters
    ----------
    images : torch.Tensor, shape (n, bands, H, W), float32
        Sky-subtracted images, linear in flux.
    psf_fwhm, target_fwhm : array-like, shape (n,)
        PSF FWHM of each image now and wanted, arcsec.
    shrink : array-like, shape (n,)
        Angular size factor in (0, 1]; 1 keeps the size.
    pixel_scale : float
        Arcsec per pixel.
    sky_sigma : array-like, shape (bands,)
        The survey's sky noise per pixel, in the images' units.
    generator : torch.Generator, optional

    Returns
    -------
    torch.Tensor, same shape and dtype as ``images``
    """
    bands = images.shape[1]
    dtype = images.dtype
    shrink = torch.as_tensor(np.clip(np.asarray(shrink, dtype=np.float64), MIN_SHRINK, 1.0))
    sky = torch.as_tensor(np.asarray(sky_sigma, dtype=np.float32)).reshape(1, bands, 1, 1)
    psf_fwhm = np.asarray(psf_fwhm, dtype=np.float64)
    factor = shrink.numpy()
    # Widths in arcsec on the sky of the original cutout, then on the shrunk one.
    antialiased = np.where(factor < 1.0, np.maximum(psf_fwhm, ANTIALIAS_PIXELS * pixel_scale / factor), psf_fwhm)
    x = _convolve(images.float(), _kernel_sigma(psf_fwhm, antialiased, pixel_scale))
    x = _shrink(x, shrink, _border_noise(x), generator)
    x = _convolve(x, _kernel_sigma(factor * antialiased, np.asarray(target_fwhm, dtype=np.float64), pixel_scale))
    noise = _border_noise(x)
    top_up = torch.sqrt(torch.clamp(sky**2 - noise**2, min=0.0))
    x = x + torch.randn(x.shape, generator=generator) * top_up
    return x.to(dtype)


def _kernel_sigma(fwhm_now: np.ndarray, fwhm_wanted: np.ndarray, pixel_scale: float) -> np.ndarray:
    """Sigma (pixels) of the Gaussian that widens a PSF from ``fwhm_now`` to ``fwhm_wanted`` (arcsec) in quadrature."""
    wanted = np.maximum(fwhm_wanted, fwhm_now)
    return np.sqrt(wanted**2 - fwhm_now**2) / FWHM_PER_SIGMA / pixel_scale


def _shrink(x: torch.Tensor, shrink: torch.Tensor, sky: torch.Tensor, generator) -> torch.Tensor:
    """Resample each image ``shrink`` times smaller about its centre; the margin it leaves gets noise of level
    ``sky`` (n, bands, 1, 1)."""
    if bool((shrink >= 1.0).all()):
        return x
    n, bands, height, width = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = (1.0 / shrink).float()
    grid = F.affine_grid(theta, [n, bands, height, width], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    outside = (grid.abs() > 1.0).any(dim=-1)[:, None]  # (n, 1, H, W): sampled beyond the original cutout
    noise = torch.randn(out.shape, generator=generator) * sky
    return torch.where(outside, noise, out)


def _convolve(x: torch.Tensor, sigma_px: np.ndarray) -> torch.Tensor:
    """Per-image Gaussian convolution by FFT, edges reflected (the border's noise must stay noise)."""
    sigma_px = np.round(np.asarray(sigma_px) / SIGMA_STEP) * SIGMA_STEP
    todo = np.flatnonzero(sigma_px >= 0.1)  # narrower kernels are a delta at this sampling
    if len(todo) == 0:
        return x
    height, width = x.shape[-2:]
    # Margins in steps of 4 pixels, so that the kernels' transforms are reused from batch to batch.
    half = int(min(4 * math.ceil(3.5 * float(sigma_px[todo].max()) / 4), min(height, width) - 1))
    part = F.pad(x[todo], (half, half, half, half), mode="reflect")
    shape = tuple(part.shape[-2:])
    kernels = torch.stack([_kernel_transform(float(s), half, shape) for s in sigma_px[todo]])
    smoothed = torch.fft.irfft2(torch.fft.rfft2(part) * kernels[:, None], s=shape)
    out = x.clone()
    out[todo] = smoothed[..., half:half + height, half:half + width]
    return out


@functools.lru_cache(maxsize=4096)
def _kernel_transform(sigma_px: float, half: int, shape: tuple[int, int]) -> torch.Tensor:
    """The real FFT of :func:`gaussian_kernel` centred on pixel (0, 0) of a ``shape`` frame.

    Centred there, a circular convolution shifts nothing; its wrap-around touches only
    the reflected margin, which is cropped.
    """
    size = 2 * half + 1
    frame = torch.zeros(shape)
    frame[:size, :size] = torch.from_numpy(gaussian_kernel(sigma_px, size))
    return torch.fft.rfft2(torch.roll(frame, shifts=(-half, -half), dims=(0, 1)))


def _border_noise(x: torch.Tensor) -> torch.Tensor:
    """Robust sky noise per image and band (n, bands, 1, 1): 1.4826 x MAD of the border frame."""
    frame = torch.ones(x.shape[-2:], dtype=torch.bool)
    frame[NOISE_BORDER:-NOISE_BORDER, NOISE_BORDER:-NOISE_BORDER] = False
    sky = x[:, :, frame]
    median = sky.median(dim=-1, keepdim=True).values
    mad = (sky - median).abs().median(dim=-1).values
    return (1.4826 * mad)[..., None, None]


class Degrader:
    """Degrades a random share of a training batch to observing conditions drawn from the training set.

    Sources are labelled galaxies at or above the median resolution; each is, with
    probability ``probability``, given the conditions of a training galaxy drawn at
    random, when that one is worse resolved: its PSF and resolution, reached by
    shrinking the source when the donor's PSF allows it (``a = R_j f_j / (R_i f_i)``,
    target PSF ``f_j``), else by a wider PSF alone (``f_i R_i / R_j``). The label
    is kept. Works on normalised batches (``asinh((x - offset) / scale)``): the sky
    noise is 1 in ``sinh`` of them.
    """

    def __init__(self, psf_fwhm: np.ndarray, resolution: np.ndarray, labelled: np.ndarray, train_rows: np.ndarray,
                 pixel_scale: float, seed: int = 0, probability: float = 0.5, shrink: bool = True):
        self.psf = np.asarray(psf_fwhm, dtype=np.float64)
        self.resolution = np.asarray(resolution, dtype=np.float64)
        self.train_rows = np.asarray(train_rows)
        median = np.median(self.resolution[self.train_rows])
        self.source = np.asarray(labelled, dtype=bool) & (self.resolution >= median)
        self.pixel_scale = float(pixel_scale)
        self.probability = float(probability)
        self.allow_shrink = bool(shrink)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def conditions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which of ``rows`` to degrade (mask), and their target PSF FWHM and shrink factor.

        Parameters
        ----------
        rows : numpy.ndarray of int, shape (n,)
            Rows of the training data in the batch.

        Returns
        -------
        chosen : numpy.ndarray of bool, shape (n,)
            Rows to degrade: a source galaxy, a worse-resolved donor, and the coin toss.
        target : numpy.ndarray of float, shape (n,)
            PSF FWHM to reach, in arcsec.
        shrink : numpy.ndarray of float, shape (n,)
            Factor on the galaxy's size, in [MIN_SHRINK, 1].
        """
        donor = self.rng.choice(self.train_rows, size=len(rows))
        r_i, f_i = self.resolution[rows], self.psf[rows]
        r_j, f_j = self.resolution[donor], self.psf[donor]
        chosen = self.source[rows] & (r_j < r_i) & (self.rng.random(len(rows)) < self.probability)
        shrink = np.minimum(1.0, r_j * f_j / (r_i * f_i)) if self.allow_shrink else np.ones(len(rows))
        shrink = np.maximum(shrink, MIN_SHRINK)
        target = np.where(shrink < 1.0, f_j, f_i * r_i / r_j)
        return chosen, target, shrink

    def __call__(self, x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """The normalised batch ``x`` (rows ``rows`` of the training data) with some galaxies degraded."""
        chosen, target, shrink = self.conditions(np.asarray(rows))
        if not chosen.any():
            return x
        index = torch.from_numpy(np.flatnonzero(chosen))
        linear = torch.sinh(x[index].float().cpu())
        sky = np.ones(x.shape[1], dtype=np.float32)
        degraded = degrade(linear, self.psf[rows][chosen], target[chosen], shrink[chosen], self.pixel_scale, sky,
                           self.generator)
        out = x.clone()
        out[index.to(x.device)] = torch.asinh(degraded).to(x.device, x.dtype)
        return out


def degrader_for(data, workflow, train_rows: np.ndarray, seed: int) -> Degrader:
    """The :class:`Degrader` of a training set, from the workflow's ``train`` options.

    ``train.degrade_psf_column`` and ``train.degrade_resolution_column`` (default
    ``PSF_FWHM`` and ``RESOLUTION``) name observables giving each galaxy's PSF FWHM
    (arcsec) and resolution (angular size / PSF FWHM).

    Parameters
    ----------
    data : LabelledCutouts
        The training data (observables, codes).
    workflow : Workflow
        Its ``train`` section: the degradation options and columns.
    train_rows : numpy.ndarray of int
        The rows a batch may draw from (donors and sources).
    seed : int
        Seed of the draws (donors, coin tosses, noise).

    Returns
    -------
    Degrader

    Raises
    ------
    ConfigError
        A named column is not one of the workflow's observables.
    """
    from relabel.errors import ConfigError

    options = workflow.train
    columns = {key: options.get(key, default) for key, default in
               (("degrade_psf_column", "PSF_FWHM"), ("degrade_resolution_column", "RESOLUTION"))}
    for key, column in columns.items():
        if column not in data.observables.columns:
            raise ConfigError(f"--augment degrade needs observable {column!r} (key 'train.{key}'), which is not "
                              f"among the workflow's observables {list(data.observables.columns)}")
    return Degrader(data.observables[columns["degrade_psf_column"]].to_numpy(),
                    data.observables[columns["degrade_resolution_column"]].to_numpy(), data.codes >= 0, train_rows,
                    workflow.cutouts.pixel_scale, seed=seed)
