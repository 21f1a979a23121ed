"""Survey presets: the physics of one simulated survey kind, as one frozen dataclass.

A :class:`SurveyPreset` holds everything that differs between real surveys:
bands, pixel scale, seeing, depth (photo-electrons and sky per band), the
redshift range and class balance of the population, the cutout size and
layout, and the volunteer model that turns images into biased labels.
:data:`PRESETS` maps the names ``relabel simulate --preset`` accepts to them;
``docs/simulator.md`` documents each one and its measured labeling bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from relabel.errors import ConfigError

NANOMAGGY_ZERO_POINT = 22.5
"""Images are in nanomaggies, SDSS's calibrated unit: m = 22.5 - 2.5 log10(flux)."""


@dataclass(frozen=True)
class BandNoise:
    """Depth of one band.

    Attributes
    ----------
    electron_zero_point : float
        Magnitude giving one photo-electron in the survey's exposure.
    sky_mag_arcsec2 : float
        Dark-sky surface brightness, mag / arcsec^2.
    colour_per_gr : float
        This band's colour against r, in units of the galaxy's g - r: the band's
        flux is ``10 ** (-0.4 * colour_per_gr * COLOR_GR)`` times the r flux
        (g: 1, r: 0, i: -0.5, as r - i ~ (g - r) / 2 on both sequences).
    """

    electron_zero_point: float
    sky_mag_arcsec2: float
    colour_per_gr: float


@dataclass(frozen=True)
class VolunteerModel:
    """How volunteers vote on a galaxy of given RESOLUTION and SNR.

    Whether a true spiral's arms show in its image is decided once per galaxy,
    not per volunteer: every volunteer looks at the same image. The arms show
    with probability ``s(RESOLUTION; resolution_half, resolution_slope) *
    s(SNR; snr_half, snr_slope)``, where ``s`` is 1/2 at its ``half`` and rises
    with its ``slope``: ``form`` "logistic" is ``1 / (1 + (half / x) ** slope)``
    (heavy tail: some spirals are recognised even when tiny), "weibull" is
    ``1 - 2 ** -((x / half) ** slope)`` (a sharp cut: below ``half`` arms vanish fast).
    Which galaxies they are follows their arm strength (``arm_correlation``).
    Volunteers call a spiral whose arms show "spiral" at rate ``recognition_max``;
    one whose arms do not show they vote on like a smooth galaxy.

    Attributes
    ----------
    form : {"logistic", "weibull"}
    recognition_max : float
        Mean share of spiral votes for a spiral whose arms show.
    resolution_half, resolution_slope, snr_half, snr_slope : float
    vote_concentration : float
        Dirichlet concentration of each galaxy's vote probabilities around the
        mean: some galaxies are simply more ambiguous than others at equal image quality.
    votes : (int, int)
        Votes per galaxy, uniform in ``[low, high)``.
    dont_know_max : float
        Extra "don't know" share given by every volunteer at very low SNR
        (both classes); it falls as ``1 / (1 + (SNR / dont_know_snr) ** 2)``. 0: none.
    dont_know_snr : float
        SNR where that extra share is half its maximum.
    arm_correlation : float
        Correlation (Gaussian copula) between a spiral's arm strength (ARM_FRACTION)
        and how conspicuous its arms are: at equal image quality, strong arms are
        seen more often. 0: which spirals show their arms is chance alone.
    """

    form: str
    recognition_max: float
    resolution_half: float
    resolution_slope: float
    snr_half: float
    snr_slope: float
    vote_concentration: float
    votes: tuple[int, int] = (20, 51)
    dont_know_max: float = 0.0
    dont_know_snr: float = 1.0
    arm_correlation: float = 0.6

    def visibility(self, x: np.ndarray, half: float, slope: float) -> np.ndarray:
        """The rising function ``s(x)`` of this model's ``form``, 1/2 at ``half``.

        Parameters
        ----------
        x : numpy.ndarray
            RESOLUTION or SNR values.
        half, slope : float

        Returns
        -------
        numpy.ndarray
            Values in [0, 1).

        Examples
        --------
        >>> model = PRESETS["sdss"].volunteers
        >>> [round(float(v), 3) for v in model.visibility(np.array([0.5, 1.0, 2.0]), 1.0, 2.0)]
        [0.159, 0.5, 0.938]
        """
        x = np.maximum(np.asarray(x, dtype=float), 1e-6)
        if self.form == "weibull":
            return 1.0 - 2.0 ** (-((x / half) ** slope))
        return 1.0 / (1.0 + (half / x) ** slope)


@dataclass(frozen=True)
class SurveyPreset:
    """The physics of one simulated survey kind.

    Attributes
    ----------
    name : str
    description : str
        One line for ``relabel simulate --help`` and the docs.
    bands : tuple of str
        Bands along axis 1 of every cube, bluest first. "r" must be one: the
        catalog's MAG_R, sizes and SNR are r-band.
    band_noise : dict
        :class:`BandNoise` per band.
    pixel_scale : float
        Arcsec / pixel.
    size : int
        Default cutout side, pixels.
    layout : {"tiles", "files"}
        Default cutout layout.
    psf_fwhm_median : float
        Median seeing FWHM, arcsec; lognormal scatter ``psf_fwhm_sigma`` (in ln),
        clipped to ``psf_fwhm_range``.
    psf_fwhm_sigma : float
    psf_fwhm_range : (float, float)
    redshift_range : (float, float)
        REDSHIFT is uniform in this range.
    spiral_fraction : float
        True share of spirals.
    volunteers : VolunteerModel
    observables : tuple of (str, str)
        The workflow's observables and their best end ("high" or "low").
    """

    name: str
    description: str
    bands: tuple[str, ...]
    band_noise: dict[str, BandNoise] = field(hash=False)
    pixel_scale: float
    size: int
    layout: str
    psf_fwhm_median: float
    psf_fwhm_sigma: float
    psf_fwhm_range: tuple[float, float]
    redshift_range: tuple[float, float]
    spiral_fraction: float
    volunteers: VolunteerModel
    observables: tuple[tuple[str, str], ...] = (("RESOLUTION", "high"), ("REDSHIFT", "low"), ("PSF_FWHM", "low"))

    def electrons(self, band: str) -> tuple[float, float]:
        """Photo-electrons per nanomaggy and sky photo-electrons per pixel in one band.

        Parameters
        ----------
        band : str
            One of :attr:`bands`.

        Returns
        -------
        electrons_per_nmgy, sky_electrons : float

        Examples
        --------
        >>> per_nmgy, sky = PRESETS["default"].electrons("r")
        >>> round(per_nmgy, 1), round(sky, 1)
        (912.0, 647.7)
        """
        noise = self.band_noise[band]
        electrons_per_nmgy = 10.0 ** (0.4 * (noise.electron_zero_point - NANOMAGGY_ZERO_POINT))
        sky_electrons = 10.0 ** (0.4 * (noise.electron_zero_point - noise.sky_mag_arcsec2)) * self.pixel_scale**2
        return electrons_per_nmgy, sky_electrons


SDSS_G = BandNoise(electron_zero_point=30.15, sky_mag_arcsec2=21.9, colour_per_gr=1.0)
"""SDSS g, 53.9 s (aa ~ -24.4, gain ~3.7 e/DN), dark sky at Apache Point."""

SDSS_R = BandNoise(electron_zero_point=29.9, sky_mag_arcsec2=20.86, colour_per_gr=0.0)
"""SDSS r, 53.9 s (aa ~ -24.0 for DN/s, gain ~4.7 e/DN), dark sky at Apache Point."""

DEFAULT = SurveyPreset(
    name="default",
    description="SDSS-depth g+r survey in 64x64 tile cubes, 0.396\"/px, seeing 0.8-2.5\" (the original simulator)",
    bands=("g", "r"),
    band_noise={"g": SDSS_G, "r": SDSS_R},
    pixel_scale=0.396,
    size=64,
    layout="tiles",
    psf_fwhm_median=1.4,
    psf_fwhm_sigma=0.2,
    psf_fwhm_range=(0.8, 2.5),
    redshift_range=(0.02, 0.25),
    spiral_fraction=0.6,
    volunteers=VolunteerModel(form="logistic", recognition_max=0.96, resolution_half=0.8, resolution_slope=3.0,
                              snr_half=12.0, snr_slope=2.0, vote_concentration=40.0),
)

SDSS = SurveyPreset(
    name="sdss",
    description="Galaxy Zoo 1 / SDSS-like: r only, 72x72 per-galaxy FITS files, 0.396\"/px, seeing 1.0-1.8\"",
    bands=("r",),
    band_noise={"r": SDSS_R},
    pixel_scale=0.396,
    size=72,
    layout="files",
    psf_fwhm_median=1.35,
    psf_fwhm_sigma=0.15,
    psf_fwhm_range=(1.0, 1.8),
    redshift_range=(0.02, 0.25),
    spiral_fraction=0.6,
    # Weibull cut: GZ1 volunteers on gri colour JPEGs lose arms quickly below
    # about one seeing disk; with one band there is no blue structure to help.
    volunteers=VolunteerModel(form="weibull", recognition_max=0.95, resolution_half=1.0, resolution_slope=2.0,
                              snr_half=10.0, snr_slope=1.5, vote_concentration=30.0, votes=(15, 61),
                              dont_know_max=0.5, dont_know_snr=40.0),
)

# Sharp sampling of good seeing (DES 0.263"/px, HSC 0.168"/px: 0.2" between) and
# single-epoch DES-like depth (4 m, ~90 s: 1 e- at r ~ 31), dark sky at a good site.
# Galaxies reach z = 0.6, so the faint end sits at S/N ~ 10 while nearly all are
# still resolved: the labels lose spirals to noise, not to the seeing.
DEEP = SurveyPreset(
    name="deep",
    description="HSC/DES-like survey: g, r, i, 0.2\"/px, seeing 0.6-1.0\", galaxies to z = 0.6, 70 % spirals",
    bands=("g", "r", "i"),
    band_noise={"g": BandNoise(30.8, 22.0, 1.0), "r": BandNoise(31.0, 21.2, 0.0),
                "i": BandNoise(30.8, 20.3, -0.5)},
    pixel_scale=0.2,
    size=80,
    layout="tiles",
    psf_fwhm_median=0.75,
    psf_fwhm_sigma=0.12,
    psf_fwhm_range=(0.6, 1.0),
    redshift_range=(0.05, 0.6),
    spiral_fraction=0.7,
    # At sub-arcsecond seeing nearly every galaxy is resolved: what hides arms
    # is noise, so the S/N term is steep and sits at higher S/N.
    volunteers=VolunteerModel(form="logistic", recognition_max=0.96, resolution_half=0.4, resolution_slope=3.0,
                              snr_half=25.0, snr_slope=2.5, vote_concentration=40.0),
    observables=(("RESOLUTION", "high"), ("REDSHIFT", "low"), ("PSF_FWHM", "low"), ("SNR", "high")),
)

PRESETS: dict[str, SurveyPreset] = {preset.name: preset for preset in (DEFAULT, SDSS, DEEP)}
"""Every preset by name, the default first."""


def get_preset(preset: str | SurveyPreset | None) -> SurveyPreset:
    """The preset of a name (or the preset itself; ``None``: the default).

    Parameters
    ----------
    preset : str, SurveyPreset or None

    Returns
    -------
    SurveyPreset

    Raises
    ------
    ConfigError
        An unknown name.

    Examples
    --------
    >>> get_preset("sdss").bands
    ('r',)
    """
    if preset is None:
        return DEFAULT
    if isinstance(preset, SurveyPreset):
        return preset
    if preset not in PRESETS:
        raise ConfigError(f"simulate: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]
