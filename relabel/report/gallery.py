"""The report's example gallery: cutouts stratified by class and observing quality, agreements
and disagreements side by side, each stamp cropped to the galaxy it shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from relabel.config import Workflow
from relabel.quartiles import observable_quartiles
from relabel.report.figures import report_figure

#: Half-width of a crop over the galaxy's 2-sigma isophote radius: the faint outskirts and some sky around them.
CROP_MARGIN = 1.5
#: Smallest crop half-width in pixels: a point-like galaxy still shows its PSF and some sky.
MIN_HALF_WIDTH = 8
#: Width in pixels of the stamp's border frame that measures the sky noise (as the normalisation does).
SKY_FRAME = 4


def display_image(image: np.ndarray) -> np.ndarray:
    """One cutout (bands, h, w) as a picture: grey for one band, else a colour composite.

    Two or more bands become a Lupton et al. (2004) arcsinh composite (astropy),
    the bluest band blue, the reddest red, their mean green, all in units of the
    reddest band's sky noise so faint structure shows the same in every cutout.

    Parameters
    ----------
    image : numpy.ndarray, shape (bands, h, w)
        A normalised cutout, bands ordered blue to red.

    Returns
    -------
    numpy.ndarray
        One band: shape (h, w), arcsinh of the flux in sky sigmas (for a grey colour map);
        more: shape (h, w, 3), uint8 RGB.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> display_image(rng.normal(size=(2, 8, 8)).astype("f4")).shape
    (8, 8, 3)
    >>> display_image(rng.normal(size=(1, 8, 8)).astype("f4")).shape
    (8, 8)
    """
    from astropy.visualization import make_lupton_rgb

    from relabel.model.normalisation import estimate_normalisation

    # The sky noise of the reddest band, measured as training measures it (border frame, MAD).
    sigma = max(estimate_normalisation(np.asarray(image)[None])["scale"][-1], 1e-12)
    image = np.nan_to_num(np.asarray(image, dtype=np.float64))
    red, blue = image[-1], image[0]
    if image.shape[0] == 1:
        return np.arcsinh(red / sigma)
    return make_lupton_rgb(red / sigma, 0.5 * (red + blue) / sigma, blue / sigma, minimum=0.0, stretch=5.0, Q=8.0)


def crop_to_galaxy(image: np.ndarray) -> np.ndarray:
    """The central square of ``image`` (bands, h, w) that holds the galaxy.

    The galaxy is the connected region of the reddest band, smoothed over 3x3 pixels, that lies
    above 2 sky sigmas (median absolute deviation of the smoothed stamp) and touches the centre;
    the crop is :data:`CROP_MARGIN` times its largest distance from the centre, at least
    :data:`MIN_HALF_WIDTH` pixels and at most the whole stamp (a galaxy larger than its stamp is
    shown whole, never cut further).

    Parameters
    ----------
    image : numpy.ndarray, shape (bands, h, w)
        A cutout centred on its galaxy, in sky-subtracted flux units.

    Returns
    -------
    numpy.ndarray, shape (bands, s, s)
        The central square, ``s`` at most ``min(h, w)``.

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64] - 31.5
    >>> small = np.exp(-(xx**2 + yy**2) / 8.0)[None] + np.random.default_rng(0).normal(0, 0.01, (1, 64, 64))
    >>> crop_to_galaxy(small).shape[1] < 32
    True
    >>> large = np.exp(-np.hypot(xx, yy) / 20.0)[None] + np.random.default_rng(0).normal(0, 0.01, (1, 64, 64))
    >>> crop_to_galaxy(large).shape[1]  # larger than its stamp: shown whole
    64
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    red = ndimage.uniform_filter(np.nan_to_num(image[-1]), size=3)
    h, w = red.shape
    # A galaxy larger than its stamp fills the border frame with its light (its median well above the
    # frame's noise): show it whole. Otherwise the whole stamp's median would be galaxy light and only
    # the core would pass the isophote below.
    border = np.ones((h, w), dtype=bool)
    border[SKY_FRAME:-SKY_FRAME, SKY_FRAME:-SKY_FRAME] = False
    frame = red[border]
    if np.median(frame) > 2 * (1.4826 * np.median(np.abs(frame - np.median(frame))) or 1e-12):
        return image
    sky = np.median(red)
    sigma = 1.4826 * np.median(np.abs(red - sky)) or 1e-12
    regions, _ = ndimage.label(red - sky > 2 * sigma)
    cy, cx = h // 2, w // 2
    centre = regions[cy - 1:cy + 1, cx - 1:cx + 1]
    ids = centre[centre > 0]
    if not len(ids):
        return image
    yy, xx = np.nonzero(regions == np.bincount(ids).argmax())
    radius = np.sqrt((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2).max()
    half = int(np.clip(np.ceil(CROP_MARGIN * radius), MIN_HALF_WIDTH, min(h, w) // 2))
    return image[:, cy - half:cy + half, cx - half:cx + half]


def pick_examples(rows: pd.DataFrame, wf: Workflow, classes: list[str], seed: int = 0) -> pd.DataFrame:
    """One agreement and one disagreement per (class, quality quartile), when the data have them.

    The class is the true one when known (``true_label``), else the original label; agreement
    means the new label equals it. Picks are random within each cell (seeded), not chosen to
    make a point. Returns the picked rows with columns ``cls``, ``quartile`` and ``agrees``.

    Parameters
    ----------
    rows : pandas.DataFrame
        Predicted output rows, with ``label``, ``label_original`` and the first observable
        (and ``true_label`` when known).
    wf : Workflow
        The run's workflow: its first observable defines the quality quartiles.
    classes : list of str
        The run's classes.
    seed : int
        Seed of the random pick in each cell.

    Returns
    -------
    pandas.DataFrame
        At most ``2 * 4 * len(classes)`` rows of ``rows``, with ``cls``, ``quartile`` (0 worst
        observed .. 3) and ``agrees`` added.
    """
    obs = wf.observables[0]
    ref = "true_label" if "true_label" in rows else "label_original"
    rows = rows[rows[ref].isin(classes)].copy()
    rows["cls"] = rows[ref]
    rows["quartile"] = observable_quartiles(rows[obs.column].to_numpy(np.float64), obs.best)[0] if len(rows) else []
    rows["agrees"] = rows["label"] == rows[ref]
    rng = np.random.default_rng(seed)
    picks = []
    for cls in classes:
        for agrees in (True, False):
            for q in range(4):
                cell = rows[(rows["cls"] == cls) & (rows["agrees"] == agrees) & (rows["quartile"] == q)]
                if len(cell):
                    picks.append(cell.iloc[[int(rng.integers(len(cell)))]])
    return pd.concat(picks) if picks else rows.iloc[:0]


def plot_gallery(frame: pd.DataFrame, wf: Workflow, classes: list[str], predicted: np.ndarray,
                 path: Path) -> str | None:
    """Draw the gallery; return its caption, or None when there are too few rows to show.

    Parameters
    ----------
    frame : pandas.DataFrame
        The run's output rows, with the cutout location columns.
    wf : Workflow
        The run's workflow (where the cutouts are).
    classes : list of str
        The run's classes.
    predicted : numpy.ndarray of bool, shape (len(frame),)
        Rows with a new label; only these are shown.
    path : Path
        PNG file to write.

    Returns
    -------
    str or None
        The caption, or None (nothing written) with fewer than two examples.
    """
    from relabel.cutouts.sources import open_cutout_source

    picks = pick_examples(frame[predicted], wf, classes)
    if len(picks) < 2:
        return None
    obs = wf.observables[0]
    with open_cutout_source(wf) as source:
        cut = source.read(picks)
    line_of = {(c, a): i for i, (c, a) in enumerate((c, a) for c in classes for a in (True, False))}
    with report_figure(path, figsize=(10, 2.9 * len(line_of))) as fig:
        axes = fig.subplots(len(line_of), 4, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        ref = "true" if "true_label" in frame else "original"
        for (_, row), image, ok in zip(picks.iterrows(), cut.images, cut.usable):
            ax = axes[line_of[(row["cls"], bool(row["agrees"]))], int(row["quartile"])]
            shown = crop_to_galaxy(image) if ok else np.zeros_like(image[:, :8, :8])
            ax.imshow(display_image(shown) if ok else shown[0], cmap="gray", origin="lower")
            ax.set_title(f"{obs.column} {row[obs.column]:.2f}, {shown.shape[-1]} px\n{ref} {row['cls']}, "
                         f"new {row['label']}\noriginal {row['label_original']}", fontsize=9,
                         color="black" if row["agrees"] else "tab:red")
        for (cls, agrees), i in line_of.items():
            axes[i, 0].text(-0.15, 0.5, f"{ref} {cls}\n{'agree' if agrees else 'disagree'}",
                            transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=10)
        fig.tight_layout(rect=(0.08, 0, 1, 1))
    return (f"Example cutouts, one per cell where one exists, drawn at random (seed 0), not chosen. Lines: the "
            f"{ref} class, and whether the new label agrees with it (disagreements titled in red). Columns: quartiles "
            f"of {obs.column}, worst observed on the left. Each stamp is cropped to {CROP_MARGIN:g} times the radius "
            f"of its galaxy's 2-sigma isophote (at least {2 * MIN_HALF_WIDTH} px, at most the whole cutout; the width "
            "is in the title), "
            "shown with an arcsinh stretch in units of the sky noise. An empty cell has no such galaxy.")
