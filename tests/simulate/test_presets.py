"""Survey presets: the default is the simulator as it was, sdss and deep differ as real surveys do."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits
from astropy.wcs import WCS

from relabel.cli import build_parser, main
from relabel.config import load_workflow
from relabel.cutouts.sources import open_cutout_source
from relabel.errors import ConfigError
from relabel.simulate import PRESETS, get_preset, simulate_galaxies, simulate_survey
from relabel.simulate.drawing import BAND_NOISE, band_ratios
from relabel.simulate.measure import confident_labels, preset_label_bias, spiral_fraction_by_quartile

REFERENCE = Path(__file__).parent / "data" / "default_seed3_n12.npz"
"""Written by the simulator before presets existed (commit 4a4178e): n=12, seed 3, tile_size 5."""
REFERENCE_SEEN = Path(__file__).parent / "data" / "default_seed3_n12_seen.npz"
"""The same survey written when a spiral's arms became seen or not once per galaxy (votes and shapes changed)."""
UNCHANGED_SINCE_PRESETS = ["OBJID", "RA", "DEC", "N_VOTES", "ABS_MAG", "R50_KPC", "COLOR_GR", "REDSHIFT", "PSF_FWHM",
                           "RESOLUTION", "SNR", "MAG_R", "R50_ARCSEC", "TILE", "TILE_INDEX"]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_preset_writes_the_recorded_survey(tmp_path):
    before_presets, reference = np.load(REFERENCE), np.load(REFERENCE_SEEN)
    for preset in (None, "default"):
        paths = simulate_survey(tmp_path / str(preset), n=12, seed=3, tile_size=5, workers=1, progress=False,
                                preset=preset)
        catalog = fitsio.read(paths.catalog)
        assert catalog.dtype == reference["catalog"].dtype
        assert catalog.tobytes() == reference["catalog"].tobytes()
        # The galaxies and their observing conditions are still those drawn before presets;
        # only the votes (and the shapes drawn after them) changed with the per-galaxy arms.
        for column in UNCHANGED_SINCE_PRESETS:
            assert np.array_equal(catalog[column], before_presets["catalog"][column]), column
        assert not np.array_equal(catalog["P_CS"], before_presets["catalog"]["P_CS"])
        first = fitsio.read(paths.root / "tiles/tile_00000.fits")
        third = fitsio.read(paths.root / "tiles/tile_00002.fits")
        cutouts = np.stack([first[0], first[4], third[1]])
        assert cutouts.tobytes() == reference["cutouts"].tobytes()
        # train.catalog_inputs (default intrinsic) and bias.mc_error / max_repetitions were
        # added after both references were written
        written = paths.workflow.read_text()
        added = ("  catalog_inputs: intrinsic\n", "  mc_error: 0.0005\n", "  max_repetitions: 2000\n")
        for line in added:
            assert line in written
            written = written.replace(line, "")
        assert written == str(reference["workflow"])
        # train.lambda's default became automatic (issue 15) after the first reference was written
        assert written == str(before_presets["workflow"]).replace("lambda: 10.0", "lambda: automatic")


@pytest.mark.parametrize("name", ["sdss", "deep"])
def test_presets_are_deterministic_per_seed(tmp_path, name):
    one = simulate_survey(tmp_path / "one", n=8, seed=4, tile_size=4, workers=1, progress=False, preset=name)
    two = simulate_survey(tmp_path / "two", n=8, seed=4, tile_size=4, workers=2, progress=False, preset=name)
    digests = _digests(one.root)
    assert digests == _digests(two.root)
    other = simulate_survey(tmp_path / "other", n=8, seed=5, tile_size=4, workers=1, progress=False, preset=name)
    assert _digests(other.root)["catalog.fits"] != digests["catalog.fits"]


def test_presets_draw_different_galaxies_from_one_seed():
    default, deep = simulate_galaxies(50, seed=0), simulate_galaxies(50, seed=0, preset="deep")
    assert not np.allclose(default["REDSHIFT"], deep["REDSHIFT"])


def _read_first_cutouts(paths, n: int) -> np.ndarray:
    workflow = load_workflow(paths.workflow)
    catalog = fitsio.read(paths.catalog)
    with open_cutout_source(workflow) as source:
        rows = pd.DataFrame({name: catalog[name][:n] for name in source.columns})
        cutouts = source.read(rows)
    assert list(cutouts.status) == ["ok"] * n
    return cutouts.images


def test_sdss_preset_writes_single_band_72_pixel_files_at_sdss_scale(tmp_path):
    paths = simulate_survey(tmp_path / "sdss", n=5, seed=1, workers=1, progress=False, preset="sdss")
    assert paths.layout == "files"
    workflow = yaml.safe_load(paths.workflow.read_text())
    cutouts = workflow["cutouts"]
    assert (cutouts["layout"], cutouts["size"], cutouts["bands"], cutouts["pixel_scale"]) == ("files", 72, ["r"], 0.396)
    catalog = fitsio.read(paths.catalog)
    assert catalog["PSF_FWHM"].min() >= 1.0 and catalog["PSF_FWHM"].max() <= 1.8
    path = paths.root / catalog["CUTOUT"][0].strip()
    image = fitsio.read(path)
    assert image.shape == (72, 72) and image.dtype == np.float32
    header = fits.getheader(path)
    assert header["BANDS"] == "r" and header["PIXSCALE"] == 0.396 and header["PRESET"] == "sdss"
    wcs = WCS(header)
    assert np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600 == pytest.approx(0.396)
    ra, dec = wcs.pixel_to_world_values(35.5, 35.5)
    assert ra == pytest.approx(catalog["RA"][0], abs=1e-9) and dec == pytest.approx(catalog["DEC"][0], abs=1e-9)
    # The project's own reader takes the workflow as written.
    images = _read_first_cutouts(paths, 3)
    assert images.shape == (3, 1, 72, 72)
    assert images[0, 0].tobytes() == image.tobytes()


def test_deep_preset_writes_three_band_tiles_at_a_sharper_scale(tmp_path):
    paths = simulate_survey(tmp_path / "deep", n=4, seed=2, workers=1, progress=False, preset="deep")
    workflow = yaml.safe_load(paths.workflow.read_text())
    cutouts = workflow["cutouts"]
    assert (cutouts["layout"], cutouts["size"], cutouts["bands"], cutouts["pixel_scale"]) == (
        "tiles", 80, ["g", "r", "i"], 0.2)
    assert {"column": "SNR", "best": "high"} in workflow["observables"]
    cube, header = fitsio.read(paths.root / "tiles/tile_00000.fits", header=True)
    assert cube.shape == (4, 3, 80, 80)
    assert header["BANDS"] == "g,r,i" and header["PIXSCALE"] == 0.2
    # Sky noise per pixel: a 4 m telescope's r pixel of 0.2" is quieter in flux
    # than SDSS's 0.396" one; i has the brightest sky of the three bands.
    sdss_r_electrons, sdss_r_sky = BAND_NOISE["r"]
    assert header["SKYSIG_R"] < 0.5 * np.sqrt(sdss_r_sky) / sdss_r_electrons
    assert header["SKYSIG_I"] > header["SKYSIG_R"]
    images = _read_first_cutouts(paths, 4)
    assert images.tobytes() == cube.tobytes()
    # The galaxy is where the catalog says: in r, the mean of the central 16x16 pixels
    # is far above what sky noise alone gives such a mean (SKYSIG_R / 16), for every
    # galaxy, and the border is sky (deep galaxies reach z = 0.6 and can be faint).
    r = cube[:, 1]
    sky_error = header["SKYSIG_R"] / 16
    assert np.all(r[:, 32:48, 32:48].mean(axis=(1, 2)) > 3 * sky_error)
    assert np.all(np.abs(r[:, :8, :8].mean(axis=(1, 2))) < 4 * header["SKYSIG_R"] / 8)


def test_workflow_matches_the_preset_whatever_layout_and_size_are_asked(tmp_path):
    paths = simulate_survey(tmp_path / "deep", n=3, seed=0, layout="files", size=48, workers=1, progress=False,
                            preset="deep")
    cutouts = yaml.safe_load(paths.workflow.read_text())["cutouts"]
    assert (cutouts["layout"], cutouts["size"], cutouts["bands"], cutouts["pixel_scale"]) == (
        "files", 48, ["g", "r", "i"], 0.2)
    assert fitsio.read(paths.root / "cutouts/1.fits").shape == (3, 48, 48)


@pytest.mark.parametrize("name", list(PRESETS))
def test_observing_conditions_stay_in_each_presets_ranges(name):
    preset = get_preset(name)
    table = simulate_galaxies(3000, seed=1, preset=name)
    low, high = preset.psf_fwhm_range
    assert table["PSF_FWHM"].min() >= np.float32(low) and table["PSF_FWHM"].max() <= np.float32(high)
    z_low, z_high = preset.redshift_range
    assert table["REDSHIFT"].min() >= np.float32(z_low) and table["REDSHIFT"].max() <= np.float32(z_high)
    spiral_share = (table["TRUE_CLASS"] == "spiral").mean()
    assert spiral_share == pytest.approx(preset.spiral_fraction, abs=0.03)
    votes = table["N_VOTES"]
    assert votes.min() >= preset.volunteers.votes[0] and votes.max() < preset.volunteers.votes[1]


def test_class_balance_differs_from_60_40_in_the_deep_preset():
    assert get_preset("default").spiral_fraction == 0.6
    deep = simulate_galaxies(3000, seed=2, preset="deep")
    assert (deep["TRUE_CLASS"] == "spiral").mean() == pytest.approx(0.7, abs=0.03)


def test_deep_galaxies_are_fainter_and_sdss_seeing_is_narrower():
    default = simulate_galaxies(3000, seed=3)
    deep = simulate_galaxies(3000, seed=3, preset="deep")
    sdss = simulate_galaxies(3000, seed=3, preset="sdss")
    assert deep["MAG_R"].median() > default["MAG_R"].median() + 1.0
    assert deep["SNR"].median() < 0.7 * default["SNR"].median()
    assert sdss["PSF_FWHM"].std() < default["PSF_FWHM"].std()


def test_sdss_dont_know_share_grows_at_low_snr():
    table = simulate_galaxies(4000, seed=4, preset="sdss")
    faint = spiral_fraction_by_quartile(table, "SNR", "high")
    assert faint["dont_know"].iloc[0] > faint["dont_know"].iloc[3] + 0.05
    # The default preset's volunteers have no such extra share for ellipticals at
    # high S/N: they answer "don't know" about as often in the two best quartiles.
    default = spiral_fraction_by_quartile(simulate_galaxies(4000, seed=4), "SNR", "high")
    assert abs(default["dont_know"].iloc[3] - default["dont_know"].iloc[2]) < 0.03


def test_sdss_volunteer_form_differs_from_the_default():
    sdss, default = get_preset("sdss").volunteers, get_preset("default").volunteers
    x = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    # Both are 1/2 at their half; the Weibull cut is steeper below it and saturates above.
    assert sdss.visibility(np.array([1.0]), 1.0, 2.0)[0] == pytest.approx(0.5)
    assert default.visibility(np.array([1.0]), 1.0, 2.0)[0] == pytest.approx(0.5)
    weibull, logistic = sdss.visibility(x, 1.0, 2.0), default.visibility(x, 1.0, 2.0)
    assert weibull[0] < logistic[0] and weibull[-1] > logistic[-1]


def test_each_preset_labels_are_biased_and_where_the_bias_sits():
    results = {name: preset_label_bias(name, n=2000, seed=0) for name in PRESETS}
    for name, result in results.items():
        # Real bias, well above the noise floor of the same table.
        assert result.null_L + 0.04 < result.L, name
        by_resolution = result.quartiles["RESOLUTION"]
        # True fractions carry no bias at fixed intrinsic properties; the labels
        # lose spirals in the worst-resolved quarter.
        assert by_resolution["labelled"].iloc[0] < by_resolution["true"].iloc[0] - 0.2, name
        assert abs(by_resolution["labelled"].iloc[3] - by_resolution["true"].iloc[3]) < 0.08, name
    assert results["default"].lost_to_resolution > 3 * results["default"].lost_to_snr
    assert results["sdss"].lost_to_resolution > 3 * results["sdss"].lost_to_snr
    assert results["deep"].lost_to_snr > 3 * results["deep"].lost_to_resolution
    by_snr = results["deep"].quartiles["SNR"]
    assert by_snr["labelled"].iloc[0] < by_snr["true"].iloc[0] - 0.4


def test_confident_labels_compare_in_float32():
    table = pd.DataFrame({"P_EL": np.array([0.8, 0.1], "f4"), "P_CS": np.array([0.1, 0.8], "f4")})
    assert confident_labels(table).tolist() == [0, 1]


def test_the_i_band_is_brighter_than_r_and_its_arms_fainter_for_a_spiral():
    row = {"TRUE_CLASS": "spiral", "COLOR_GR": 0.6, "BULGE_FRACTION": 0.2, "ARM_FRACTION": 0.3,
           "KNOT_FRACTION": 0.1}
    smooth, structure = band_ratios(row, get_preset("deep").band_noise["i"].colour_per_gr)
    share = 0.8 * 0.4
    assert (1 - share) * smooth + share * structure == pytest.approx(10 ** (0.4 * 0.5 * 0.6))
    assert structure < smooth
    assert band_ratios(row, 0.0) == (1.0, 1.0)


def test_unknown_preset_and_images_layout_with_another_preset_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'hsc'"):
        simulate_survey(tmp_path / "a", n=2, preset="hsc", progress=False)
    with pytest.raises(ConfigError, match="layout 'images'.*'sdss'"):
        simulate_survey(tmp_path / "b", n=2, preset="sdss", layout="images", progress=False)


def test_cli_simulate_with_a_preset(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["simulate", str(out), "--n", "3", "--preset", "sdss", "--workers", "1", "--no-progress"]) == 0
    assert "workflow:" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "cutouts").iterdir()) == ["1.fits", "2.fits", "3.fits"]
    assert fitsio.read_header(out / "catalog.fits", ext=1)["PRESET"] == "sdss"


def test_cli_offers_every_preset():
    # The parser lists the names itself so that building it does not import GalSim.
    simulate = next(a for a in build_parser()._subparsers._group_actions[0].choices["simulate"]._actions
                    if a.dest == "preset")
    assert list(simulate.choices) == list(PRESETS) and simulate.default == "default"
