"""The GalSim survey simulator: files on disk, physics, biased labels, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits
from astropy.wcs import WCS

from relabel.errors import ConfigError, OutputError
from relabel.simulate import distances, get_preset, simulate_galaxies, simulate_survey
from relabel.simulate.drawing import BAND_NOISE, BANDS

N = 600
SEED = 11
TILE_SIZE = 250

CATALOG_DTYPES = {
    "OBJID": "i8", "RA": "f8", "DEC": "f8",
    "P_EL": "f4", "P_CS": "f4", "P_DK": "f4", "N_VOTES": "i2",
    "ABS_MAG": "f4", "R50_KPC": "f4", "COLOR_GR": "f4",
    "REDSHIFT": "f4", "PSF_FWHM": "f4", "RESOLUTION": "f4", "SNR": "f4",
    "MAG_R": "f4", "R50_ARCSEC": "f4",
}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("simulate") / "survey"
    return simulate_survey(out, N, seed=SEED, tile_size=TILE_SIZE, workers=2, progress=False)


@pytest.fixture(scope="module")
def catalog(survey):
    return fitsio.read(survey.catalog, ext="CATALOG")


@pytest.fixture(scope="module")
def truth(survey):
    return pd.read_parquet(survey.truth)


def _kind(dtype) -> str:
    return f"{dtype.kind}{dtype.itemsize}"


def _file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_catalog_has_the_documented_columns_and_dtypes(survey, catalog):
    with fitsio.FITS(survey.catalog) as f:
        assert f[1].get_extname() == "CATALOG"
    expected = dict(CATALOG_DTYPES, TILE_INDEX="i4")
    names = catalog.dtype.names
    assert set(names) == set(expected) | {"TILE"}
    for name, kind in expected.items():
        assert _kind(catalog.dtype[name]) == kind, name
    assert catalog.dtype["TILE"].kind in "SU"
    assert len(catalog) == N
    assert np.array_equal(catalog["OBJID"], np.arange(1, N + 1))
    for name in CATALOG_DTYPES:
        assert np.all(np.isfinite(catalog[name])), name
    votes = np.stack([catalog["P_EL"], catalog["P_CS"], catalog["P_DK"]], axis=1)
    assert votes.min() >= 0 and votes.max() <= 1
    np.testing.assert_allclose(votes.sum(axis=1), 1.0, atol=1e-6)
    assert catalog["N_VOTES"].min() >= 20 and catalog["N_VOTES"].max() <= 50


def test_catalog_physics_is_consistent(catalog):
    np.testing.assert_allclose(catalog["RESOLUTION"], catalog["R50_ARCSEC"] / catalog["PSF_FWHM"], rtol=1e-5)
    mu, d_a = distances(catalog["REDSHIFT"].astype(float))
    np.testing.assert_allclose(catalog["MAG_R"] - catalog["ABS_MAG"], mu, atol=1e-3)
    arcsec_per_kpc = 206264.806 / (d_a * 1e3)
    np.testing.assert_allclose(catalog["R50_ARCSEC"], catalog["R50_KPC"] * arcsec_per_kpc, rtol=1e-4)
    assert catalog["PSF_FWHM"].min() >= 0.8 and catalog["PSF_FWHM"].max() <= 2.5
    assert catalog["REDSHIFT"].min() >= 0.02 and catalog["REDSHIFT"].max() <= 0.25
    # "Clearly detected": nearly every galaxy well above the noise.
    assert np.mean(catalog["SNR"] > 15) > 0.97


def test_truth_stays_out_of_the_catalog(catalog, truth):
    assert "TRUE_CLASS" not in catalog.dtype.names
    assert not {"P_RECOGNISE", "SERSIC_N", "N_ARMS"} & set(catalog.dtype.names)
    assert list(truth["OBJID"]) == list(catalog["OBJID"])
    assert set(truth["TRUE_CLASS"]) == {"spiral", "elliptical"}
    assert 0.53 < np.mean(truth["TRUE_CLASS"] == "spiral") < 0.67
    assert truth["P_RECOGNISE"].between(0, 1).all()
    ellipticals = truth["TRUE_CLASS"] == "elliptical"
    assert truth.loc[ellipticals, "SERSIC_N"].between(3.5, 5.0).all()
    assert (truth.loc[~ellipticals, "N_ARMS"] >= 2).all()
    # Intrinsic properties depend on the class the way the docs say.
    spiral = ~ellipticals.to_numpy()
    assert catalog["ABS_MAG"][~spiral].mean() < catalog["ABS_MAG"][spiral].mean() - 0.3
    assert catalog["COLOR_GR"][~spiral].mean() > catalog["COLOR_GR"][spiral].mean() + 0.1


def test_tiles_read_back_with_the_right_shape_and_sane_pixels(survey, catalog):
    tiles = sorted({t.strip() for t in catalog["TILE"]})
    assert tiles == [f"tiles/tile_{k:05d}.fits" for k in range(3)]
    cubes = []
    for name in tiles:
        cube, header = fitsio.read(survey.root / name, header=True)
        assert cube.dtype == np.float32
        assert cube.shape[1:] == (2, 64, 64)
        assert cube.shape[0] == TILE_SIZE or name == tiles[-1]
        assert header["BANDS"] == "g,r" and header["PIXSCALE"] == pytest.approx(0.396)
        assert "DATE" not in header
        assert np.all(np.isfinite(cube))
        cubes.append(cube)
    cube = np.concatenate(cubes)
    assert cube.shape == (N, 2, 64, 64)
    assert BANDS == ("g", "r")
    rows = np.array([tiles.index(t.strip()) * TILE_SIZE for t in catalog["TILE"]]) + catalog["TILE_INDEX"]
    assert np.array_equal(rows, np.arange(N))

    # Sky-limited corners carry the documented noise; compact galaxies hold
    # their catalog flux (nanomaggies, zero point 22.5) inside the stamp.
    compact = catalog["R50_ARCSEC"] < 1.5
    for b, band in enumerate(BANDS):
        corners = cube[:, b, :8, :8].reshape(N, -1)
        electrons_per_nmgy, sky_electrons = BAND_NOISE[band]
        assert np.median(corners[compact].std(axis=1)) == pytest.approx(
            np.sqrt(sky_electrons) / electrons_per_nmgy, rel=0.1)
        # The centre is the brightest region: galaxies are drawn on the stamp centre.
        centre = cube[:, b, 28:36, 28:36].mean(axis=(1, 2))
        assert np.all(centre > corners.mean(axis=1))
    flux = 10 ** (-0.4 * (catalog["MAG_R"] - 22.5))
    bright = compact & (flux > 30)
    assert bright.sum() > 50
    r_flux = cube[bright, 1].sum(axis=(1, 2))
    assert np.median(r_flux / flux[bright]) == pytest.approx(1.0, abs=0.03)
    # The g image carries the catalog colour: g - r from the stamp sums.
    g_minus_r = -2.5 * np.log10(cube[bright, 0].sum(axis=(1, 2)) / r_flux)
    assert np.median(g_minus_r - catalog["COLOR_GR"][bright]) == pytest.approx(0.0, abs=0.03)
    assert np.corrcoef(g_minus_r, catalog["COLOR_GR"][bright])[0, 1] > 0.8  # 0.88 measured: stamp noise


def _median_leaves(columns: list[np.ndarray]) -> np.ndarray:
    leaf = np.zeros(len(columns[0]), dtype=int)
    for values in columns:
        split = leaf * 2
        for k in np.unique(leaf):
            inside = leaf == k
            split[inside & (values >= np.median(values[inside]))] += 1
        leaf = split
    return leaf


def test_labelled_spiral_fraction_falls_at_low_resolution_but_true_fraction_does_not(catalog, truth):
    # Intrinsic bins: median splits on ABS_MAG, R50_KPC, COLOR_GR and R50_KPC
    # again; size gets the extra split because within a bin RESOLUTION tracks
    # size, which differs between the classes at fixed luminosity.
    leaf = _median_leaves([catalog["ABS_MAG"], catalog["R50_KPC"], catalog["COLOR_GR"], catalog["R50_KPC"]])
    true_spiral = (truth["TRUE_CLASS"] == "spiral").to_numpy()
    labelled_spiral = catalog["P_CS"] >= np.float32(0.8)
    d_true, d_labelled, weights = [], [], []
    for k in np.unique(leaf):
        members = np.flatnonzero(leaf == k)
        resolution = catalog["RESOLUTION"][members]
        low_cut, high_cut = np.quantile(resolution, [1 / 3, 2 / 3])
        low, high = members[resolution <= low_cut], members[resolution >= high_cut]
        d_true.append(true_spiral[high].mean() - true_spiral[low].mean())
        d_labelled.append(labelled_spiral[high].mean() - labelled_spiral[low].mean())
        weights.append(len(members))
    d_true = np.average(d_true, weights=weights)
    d_labelled = np.average(d_labelled, weights=weights)
    # Over 200 seeds at this size: d_true = 0.016 +- 0.028, d_labelled = 0.25 +- 0.04
    # (at most 0.076 and at least 0.13). An unbiased labeller would give
    # d_labelled ~ d_true and fail the second check.
    assert abs(d_true) < 0.10
    assert d_labelled > 0.15
    # At high resolution most spirals are labelled spiral; at low resolution few
    # are (200 seeds: 0.97 +- 0.02 and 0.34 +- 0.06).
    res = catalog["RESOLUTION"]
    sharp, blurred = true_spiral & (res > np.quantile(res, 0.75)), true_spiral & (res < np.quantile(res, 0.25))
    assert labelled_spiral[sharp].mean() > 0.8
    assert labelled_spiral[blurred].mean() < 0.55
    # What decides it is whether the galaxy's arms show: the image is the same for every volunteer.
    seen = truth["ARMS_SEEN"].to_numpy()
    assert labelled_spiral[true_spiral & ~seen].mean() < 0.02
    assert labelled_spiral[seen].mean() > 0.85
    ellipticals = ~true_spiral
    assert (catalog["P_EL"][ellipticals] >= np.float32(0.8)).mean() > 0.85


def test_same_seed_gives_identical_files_whatever_the_workers(tmp_path):
    one = simulate_survey(tmp_path / "one", 90, seed=5, tile_size=30, workers=1, progress=False)
    two = simulate_survey(tmp_path / "two", 90, seed=5, tile_size=30, workers=2, progress=False)
    digests = _file_digests(one.root)
    assert len(digests) == 6  # catalog, truth, workflow, three tiles
    assert digests == _file_digests(two.root)

    # Tile boundaries do not change a galaxy's pixels either.
    whole = simulate_survey(tmp_path / "whole", 90, seed=5, tile_size=90, workers=1, progress=False)
    cubes = np.concatenate([fitsio.read(one.root / f"tiles/tile_{k:05d}.fits") for k in range(3)])
    assert cubes.tobytes() == fitsio.read(whole.root / "tiles/tile_00000.fits").tobytes()
    a, b = fitsio.read(one.catalog), fitsio.read(whole.catalog)
    for name in CATALOG_DTYPES:
        assert a[name].tobytes() == b[name].tobytes(), name

    other = simulate_survey(tmp_path / "other", 90, seed=6, tile_size=30, workers=1, progress=False)
    assert _file_digests(other.root)["catalog.fits"] != digests["catalog.fits"]
    assert _file_digests(other.root)["tiles/tile_00000.fits"] != digests["tiles/tile_00000.fits"]


def test_files_layout_writes_one_readable_file_per_galaxy_with_a_wcs(tmp_path):
    files = simulate_survey(tmp_path / "files", 12, seed=3, layout="files", workers=1, progress=False)
    tiles = simulate_survey(tmp_path / "tiles", 12, seed=3, workers=1, progress=False)
    catalog = fitsio.read(files.catalog, ext="CATALOG")
    assert "CUTOUT" in catalog.dtype.names and "TILE" not in catalog.dtype.names
    cube = fitsio.read(tiles.root / "tiles/tile_00000.fits")
    for k, row in enumerate(catalog):
        path = files.root / row["CUTOUT"].strip()
        assert path.parent == files.cutout_dir and path.name == f"{row['OBJID']}.fits"
        image = fitsio.read(path)
        assert image.dtype == np.float32 and image.shape == (2, 64, 64)
        assert np.all(np.isfinite(image))
        # Same per-galaxy random stream as in the tiles layout.
        assert image.tobytes() == cube[k].tobytes()
        header = fits.getheader(path)
        assert header["OBJID"] == row["OBJID"] and header["BANDS"] == "g,r"
        # The celestial WCS covers the two image axes; the third is the band.
        assert header["WCSAXES"] == 2
        wcs = WCS(header).celestial
        assert wcs.wcs.ctype[0] == "RA---TAN" and wcs.wcs.ctype[1] == "DEC--TAN"
        ra, dec = wcs.pixel_to_world_values(31.5, 31.5)  # 0-based centre of a 64-pixel stamp
        assert ra == pytest.approx(row["RA"], abs=1e-9) and dec == pytest.approx(row["DEC"], abs=1e-9)
        scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
        assert scale == pytest.approx(0.396)
    workflow = yaml.safe_load(files.workflow.read_text())
    assert workflow["cutouts"]["layout"] == "files"
    assert workflow["cutouts"]["path_column"] == "CUTOUT"


def test_workflow_file_follows_the_conventions(survey):
    workflow = yaml.safe_load(survey.workflow.read_text())
    assert workflow["catalog"] == {"path": "catalog.fits", "hdu": 1, "id": "OBJID", "ra": "RA", "dec": "DEC",
                                   "passthrough": ["MAG_R"]}
    assert workflow["labels"]["probabilities"] == [
        {"column": "P_EL", "class": "elliptical", "threshold": 0.8},
        {"column": "P_CS", "class": "spiral", "threshold": 0.8},
    ]
    assert workflow["intrinsic"] == ["ABS_MAG", "R50_KPC", "COLOR_GR"]
    assert workflow["observables"] == [
        {"column": "RESOLUTION", "best": "high"},
        {"column": "REDSHIFT", "best": "low"},
        {"column": "PSF_FWHM", "best": "low"},
    ]
    cutouts = workflow["cutouts"]
    assert cutouts["layout"] == "tiles" and cutouts["root"] == "."
    assert (cutouts["tile_column"], cutouts["index_column"]) == ("TILE", "TILE_INDEX")
    assert (cutouts["size"], cutouts["bands"], cutouts["pixel_scale"]) == (64, ["g", "r"], 0.396)

    from relabel.config import load_workflow

    loaded = load_workflow(survey.workflow)
    assert loaded.catalog.path == survey.catalog
    assert [p.name for p in loaded.labels.probabilities] == ["elliptical", "spiral"]


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="busy"):
        simulate_survey(out, 5, workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    (out / "tiles").mkdir()
    (out / "tiles" / "tile_00007.fits").write_bytes(b"stale")
    paths = simulate_survey(out, 5, size=48, workers=1, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in paths.cutout_dir.iterdir()) == ["tile_00000.fits"]
    assert fitsio.read(paths.cutout_dir / "tile_00000.fits").shape == (5, 2, 48, 48)

    with pytest.raises(OutputError, match="busy"):
        simulate_survey(out, 5, workers=1, progress=False)


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"layout": "cubes"}, {"tile_size": 0}, {"size": 4}, {"workers": 0}])
def test_bad_arguments_are_config_errors(tmp_path, kwargs):
    args = {"n": 5, "workers": 1, "progress": False} | kwargs
    with pytest.raises(ConfigError):
        simulate_survey(tmp_path / "bad", **args)
    assert not (tmp_path / "bad").exists()


def test_catalog_columns_do_not_depend_on_the_drawing(catalog):
    # The catalog is a pure function of (n, seed): what the images need comes
    # from it, never the other way round.
    again = simulate_galaxies(N, SEED)
    for name in CATALOG_DTYPES:
        assert np.array_equal(again[name].to_numpy(), catalog[name].astype(catalog.dtype[name].newbyteorder("="))), name


def test_whether_a_spirals_arms_show_is_one_draw_per_galaxy():
    table = simulate_galaxies(20_000, seed=7)
    spiral = (table["TRUE_CLASS"] == "spiral").to_numpy()
    seen = table["ARMS_SEEN"].to_numpy()
    assert not seen[~spiral].any()
    # The share that shows, per bin of arm visibility, is that probability.
    p = table["P_RECOGNISE"].to_numpy()
    edges = np.quantile(p[spiral], np.linspace(0, 1, 6))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 4)
    for k in range(5):
        members = spiral & (which == k)
        error = np.sqrt(p[members].mean() * (1 - p[members].mean()) / members.sum())
        assert abs(seen[members].mean() - p[members].mean()) < 4 * error + 1e-3, k
    # A spiral whose arms do not show gets the votes of a smooth galaxy: its spiral share
    # is as low as an elliptical's, so no rescaling of vote fractions can find it.
    spiral_share = table["P_CS"].to_numpy()
    hidden = spiral & ~seen
    assert np.median(spiral_share[hidden]) < 0.06 and np.median(spiral_share[~spiral]) < 0.06
    assert np.median(spiral_share[seen]) > 0.85
    # Strong arms show more often at equal image quality; without the copula, arm strength does not matter.
    middle = spiral & (p > 0.3) & (p < 0.7)
    arm = table["ARM_FRACTION"].to_numpy()
    assert np.corrcoef(seen[middle], arm[middle])[0, 1] > 0.2
    preset = get_preset("default")
    chance = dataclasses.replace(preset, volunteers=dataclasses.replace(preset.volunteers, arm_correlation=0.0))
    table = simulate_galaxies(20_000, seed=7, preset=chance)
    seen, arm = table["ARMS_SEEN"].to_numpy(), table["ARM_FRACTION"].to_numpy()
    assert abs(np.corrcoef(seen[middle], arm[middle])[0, 1]) < 0.06
