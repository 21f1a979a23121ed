"""`relabel simulate --layout images`: galaxies drawn into survey images, cut back by WCS."""

import fitsio
import numpy as np
import pandas as pd
import pytest

from relabel import status as st
from relabel.catalog.reader import open_catalog
from relabel.config import load_workflow
from relabel.cutouts.images import header_wcs
from relabel.cutouts.sources import open_cutout_source
from relabel.run.plan import plan_shards
from relabel.simulate.drawing import BAND_NOISE, draw_cutout, galaxy_rng
from relabel.simulate.survey import simulate_galaxies, simulate_survey

SIZE, IMAGE = 32, 256


@pytest.fixture(scope="module")
def image_survey(tmp_path_factory):
    from relabel.simulate.images import simulate_image_survey

    root = tmp_path_factory.mktemp("image-survey")
    paths = simulate_image_survey(root, n=60, seed=3, size=SIZE, image_size=IMAGE, workers=1, progress=False)
    catalog = fitsio.read(str(paths.catalog))
    truth = pd.read_parquet(paths.truth)
    return paths, catalog, truth


def test_images_are_written_per_band_some_compressed(image_survey):
    paths, catalog, _ = image_survey
    names = sorted(p.name for p in (paths.root / "images").iterdir())
    assert names == ["field_000_g.fits", "field_000_r.fits", "field_001_g.fits.fz", "field_001_r.fits.fz"]
    with fitsio.FITS(str(paths.root / "images" / "field_001_r.fits.fz")) as fits:
        assert fits[1].is_compressed() and fits[1].get_dims() == [IMAGE, IMAGE]
    assert load_workflow(paths.workflow).cutouts.layout == "images"
    assert set(np.char.strip(catalog["IMAGE"].astype(str))) == {"images/field_000_{band}.fits",
                                                                 "images/field_001_{band}.fits.fz"}


def test_stamps_cut_back_equal_each_galaxy_drawn_alone(image_survey):
    paths, catalog, _ = image_survey
    wf = load_workflow(paths.workflow)
    rows = pd.DataFrame({"RA": catalog["RA"], "DEC": catalog["DEC"],
                         "IMAGE": np.char.strip(catalog["IMAGE"].astype(str))})
    with open_cutout_source(wf) as source:
        got = source.read(rows)
    galaxies = simulate_galaxies(60, 3)  # the survey's galaxies; drawing never looks at RA/Dec
    assert (galaxies["OBJID"].to_numpy() == catalog["OBJID"]).all()
    sky = np.sqrt(BAND_NOISE["r"][1]) / BAND_NOISE["r"][0]
    edge = 0
    for k in range(len(rows)):
        alone = draw_cutout(galaxies.iloc[k], galaxy_rng(3, k), SIZE)
        on = got.images[k] != 0  # padding off the image is 0
        if got.status[k] == st.PARTIAL_EDGE:
            edge += 1
            # A quarter stamp hangs off the r image, a bit more off the g image (3 px, 2 px off the r grid).
            assert 0.5 < got.coverage[k] <= 0.75 and on.mean() == pytest.approx(got.coverage[k], abs=0.1)
        else:
            assert got.status[k] == st.OK and on.all()
        if rows["IMAGE"][k].endswith(".fz"):
            # Quantised at sky / 16 (fpack's q = 16): equal to a fraction of the noise.
            np.testing.assert_allclose(got.images[k][on], alone[on], atol=sky / 4)
        else:
            np.testing.assert_array_equal(got.images[k][on], alone[on])
    assert edge > 0  # galaxies near the edges are in the sample


@pytest.mark.parametrize("band", ["g", "r"])
def test_each_galaxy_sits_at_its_stamps_centre_in_both_bands(image_survey, band):
    paths, catalog, _ = image_survey
    with fitsio.FITS(str(paths.root / "images" / f"field_000_{band}.fits")) as fits:
        wcs = header_wcs(fits[0])
    on = np.char.strip(catalog["IMAGE"].astype(str)) == "images/field_000_{band}.fits"
    x, y = wcs.all_world2pix(catalog["RA"][on], catalog["DEC"][on], 0)
    half = (SIZE - 1) / 2
    # The stamp starts at the nearest pixel to x - half; the galaxy is then at its centre to 0.1 px.
    assert np.abs(x - half - np.round(x - half)).max() < 0.1
    assert np.abs(y - half - np.round(y - half)).max() < 0.1


def test_shards_hold_one_image_each(image_survey):
    paths, catalog, _ = image_survey
    wf = load_workflow(paths.workflow)
    shards = plan_shards(open_catalog(paths.catalog), wf, shard_size=20)
    images = np.char.strip(catalog["IMAGE"].astype(str))
    assert sum(s.n_rows for s in shards) == len(catalog)
    for shard in shards:
        assert set(images[shard.row_numbers()]) == {shard.image}


def test_simulate_survey_dispatches_the_images_layout(tmp_path):
    paths = simulate_survey(tmp_path, n=3, seed=1, layout="images", size=32, workers=1, progress=False)
    assert paths.layout == "images"
    with fitsio.FITS(str(tmp_path / "images" / "field_000_r.fits")) as fits:
        assert fits[0].get_dims() == [2048, 2048]
