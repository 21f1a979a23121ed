"""Stamps cut on the fly from survey images with a WCS (layout "images")."""

import fitsio
import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS

from conftest import write_images_catalog, write_untrained_checkpoint, write_wcs_image

from relabel import status as st
from relabel.config import CutoutSpec
from relabel.cutouts.images import (ImageSource, assign_images, check_pixel_scales, find_footprints,
                                    pixel_scales, stamp_corners)
from relabel.errors import CatalogError, ConfigError

SCALE = 0.26 / 3600  # degrees / pixel (DECam-like)


def make_wcs(crpix=(256.5, 200.5), crval=(150.0, 2.0), cd=None) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.cd = np.array(cd if cd is not None else [[-SCALE, 0.0], [0.0, SCALE]])
    return wcs


write_image = write_wcs_image


def rotated_cd(angle_deg, sx, sy, skew=0.0):
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return rot @ np.array([[-sx, skew], [0.0, sy]])


def blobs(shape, centres, sigma=1.5):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = np.zeros(shape, dtype=np.float32)
    for x, y in centres:
        image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)).astype(np.float32)
    return image


def rows_at(wcs, xy, image=None):
    ra, dec = wcs.all_pix2world(np.asarray(xy, float)[:, 0], np.asarray(xy, float)[:, 1], 0)
    frame = pd.DataFrame({"RA": ra, "DEC": dec})
    if image is not None:
        frame["IMAGE"] = image
    return frame


def test_rotated_skewed_wcs_centres_each_stamp_on_its_galaxy(tmp_path):
    # A rotated, non-square CD matrix (pixels 0.26 x 0.27 arcsec, 2% skew), as mosaics have.
    wcs = make_wcs(cd=rotated_cd(33.0, SCALE, SCALE * 27 / 26, skew=0.02 * SCALE))
    centres = [(100.3, 80.8), (300.1, 250.2), (420.6, 40.2)]  # no half-pixel ties
    ramp = np.arange(400 * 512, dtype=np.float32).reshape(400, 512) * 1e-6  # every pixel tells where it came from
    data = blobs((400, 512), centres) + ramp
    write_image(tmp_path / "img_r.fits", data, wcs)
    spec = CutoutSpec(layout="images", root=tmp_path, size=24, bands=["r"], image_column="IMAGE")
    with ImageSource(spec) as source:
        got = source.read(rows_at(wcs, centres, "img_r.fits"))
    assert list(got.status) == [st.OK] * 3
    for k, (x, y) in enumerate(centres):
        x0, y0 = int(np.floor(x - 11.5 + 0.5)), int(np.floor(y - 11.5 + 0.5))
        np.testing.assert_array_equal(got.images[k, 0], data[y0:y0 + 24, x0:x0 + 24])
        # The galaxy sits within half a pixel of the stamp's centre; at 0.1 px where it is on the pixel grid.
        stamp = got.images[k, 0] - ramp[y0:y0 + 24, x0:x0 + 24]
        cy, cx = (np.indices(stamp.shape) * stamp).reshape(2, -1).sum(axis=1) / stamp.sum()
        assert abs(cx - (11.5 + x - (x0 + 11.5))) < 0.1 and abs(cy - (11.5 + y - (y0 + 11.5))) < 0.1
    assert np.allclose(pixel_scales(wcs), [0.26, 0.27], rtol=2e-2)


def test_edge_and_outside_rows_are_flagged_with_their_coverage(tmp_path):
    wcs = make_wcs()
    data = np.ones((100, 120), np.float32)
    write_image(tmp_path / "img.fits", data, wcs)
    spec = CutoutSpec(layout="images", root=tmp_path, size=20, bands=["r"], image_column="IMAGE")
    xy = [(60, 50), (4.5, 50), (60, 97), (0, 0), (-3, 50), (130, 50), (119.4, 99.4)]
    with ImageSource(spec) as source:
        got = source.read(rows_at(wcs, xy, "img.fits"))
    assert list(got.status) == [st.OK, st.PARTIAL_EDGE, st.PARTIAL_EDGE, st.PARTIAL_EDGE,
                                st.OUTSIDE_IMAGE, st.OUTSIDE_IMAGE, st.PARTIAL_EDGE]
    # x = 4.5 -> corner at -5: 15 of 20 columns on the image; y = 97 -> corner 87 (rounded): 13 rows.
    np.testing.assert_allclose(got.coverage, [1, 15 / 20, 13 / 20, 11 * 11 / 400, 0, 0, 10 * 10 / 400], atol=1e-6)
    assert got.images[1, 0, :, :5].sum() == 0 and (got.images[1, 0, :, 5:] == 1).all()
    assert (got.images[4:6] == 0).all()
    assert got.usable.tolist() == [True, True, True, True, False, False, True]


def test_compressed_image_gives_the_decompressed_pixels(tmp_path):
    wcs = make_wcs(crpix=(1000, 1000))
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, (1500, 1300)).astype(np.float32)
    write_image(tmp_path / "img.fits.fz", data, wcs, compress="rice", tile_dims=[100, 100])
    full = fitsio.read(str(tmp_path / "img.fits.fz"))
    xy = np.column_stack([rng.uniform(0, 1300, 300), rng.uniform(0, 1500, 300)])
    spec = CutoutSpec(layout="images", root=tmp_path, size=32, bands=["r"], image_column="IMAGE")
    with ImageSource(spec) as source:
        got = source.read(rows_at(wcs, xy, "img.fits.fz"))
        assert source._open["img.fits.fz"][0].memmap is None  # pixels come from section reads
    x0, y0, _ = stamp_corners(wcs, *wcs.all_pix2world(xy[:, 0], xy[:, 1], 0), 32, full.shape)
    padded = np.pad(full, 32)
    for k in range(300):
        expect = padded[y0[k] + 32:y0[k] + 64, x0[k] + 32:x0[k] + 64]
        np.testing.assert_array_equal(got.images[k, 0], expect)


@pytest.mark.parametrize("name, block_pixels, strip_rows", [
    ("img.fits", None, None), ("img.fits", None, 20), ("img.fits.fz", 2**18, None), ("img.fits.fz", 700, None),
    ("img.fits.fz", 8000, None), ("img.fits.fz", 700, 20), ("img.fits.fz", 8000, 50)])
def test_stamps_within_across_and_off_blocks_equal_the_image_slices(tmp_path, monkeypatch, name, block_pixels,
                                                                    strip_rows):
    # Blocks of 3 and 40 rows (a stamp is 16: within one block and across two) and all 300; a memory map is one.
    # Stamps are gathered from strips of rows: the whole image, or strips of 20 and 50 rows.
    from relabel.cutouts import images

    if block_pixels is not None:
        monkeypatch.setattr(images, "BLOCK_PIXELS", block_pixels)
    if strip_rows is not None:
        monkeypatch.setattr(images, "STRIP_BYTES", 4 * 200 * strip_rows)
    wcs = make_wcs(crpix=(100, 150))
    rng = np.random.default_rng(4)
    data = rng.normal(0, 1, (300, 200)).astype(np.float32)
    kwargs = {"compress": "gzip", "qlevel": None} if name.endswith(".fz") else {}
    write_image(tmp_path / name, data, wcs, **kwargs)
    xy = np.column_stack([rng.uniform(-5, 205, 400), rng.uniform(-5, 305, 400)])
    spec = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["r"], image_column="IMAGE")
    with ImageSource(spec) as source:
        got = source.read(rows_at(wcs, xy, name))
        survey = source._open[name][0]
        assert (survey.memmap is None) == name.endswith(".fz")
        if name.endswith(".fz"):  # gzip row tiles: a block is a whole number of rows, ~block_pixels of them
            assert survey.block_rows == max(1, block_pixels // 200)
    x0, y0, inside = stamp_corners(wcs, *wcs.all_pix2world(xy[:, 0], xy[:, 1], 0), 16, data.shape)
    padded = np.pad(data, 16)
    assert inside.sum() > 300 and (~inside).sum() > 5
    for k in np.flatnonzero(inside):
        np.testing.assert_array_equal(got.images[k, 0], padded[y0[k] + 16:y0[k] + 32, x0[k] + 16:x0[k] + 32])
    assert (got.images[~inside] == 0).all()


def test_a_rewritten_image_is_read_with_its_new_header(tmp_path):
    # Headers are cached per process; a file written again (new WCS) must not be cut with the old one.
    import os

    data = blobs((100, 100), [(30.0, 40.0)])
    write_image(tmp_path / "img.fits", data, make_wcs(crpix=(50.5, 50.5)))
    spec = CutoutSpec(layout="images", root=tmp_path, size=8, bands=["r"], image_column="IMAGE")
    where = rows_at(make_wcs(crpix=(50.5, 50.5)), [(30.0, 40.0)], "img.fits")
    with ImageSource(spec) as source:
        assert source.read(where).images[0, 0, 3:5, 3:5].min() > 0.5
    write_image(tmp_path / "img.fits", data, make_wcs(crpix=(70.5, 50.5)))  # same size: the sky moved 20 px
    os.utime(tmp_path / "img.fits", ns=(1_000_000_000, 1_000_000_000))
    with ImageSource(spec) as source:
        assert source.read(where).images[0, 0].max() < 1e-3  # now 20 px from the galaxy


def test_bands_in_separate_files_are_aligned_by_each_files_wcs(tmp_path):
    wcs_r = make_wcs(crpix=(200.5, 150.5))
    centres = [(50.0, 60.0), (150.2, 100.7), (10.0, 140.0)]
    r = blobs((200, 240), centres)
    # The g image is offset by (+7, -4) pixels and 1.5x brighter: its WCS says so.
    g = np.zeros_like(r)
    g[:, 7:] = 1.5 * r[:, :-7]
    g = np.roll(g, -4, axis=0)
    wcs_g = make_wcs(crpix=(207.5, 146.5))
    write_image(tmp_path / "f_r.fits", r, wcs_r)
    write_image(tmp_path / "f_g.fits", g, wcs_g)
    spec = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["g", "r"], image_column="IMAGE")
    with ImageSource(spec) as source:
        got = source.read(rows_at(wcs_r, centres[:2], "f_{band}.fits"))
    assert list(got.status) == [st.OK, st.OK]
    np.testing.assert_allclose(got.images[:, 0], 1.5 * got.images[:, 1], rtol=1e-6)
    assert got.images[:, 1, 7:9, 7:9].min() > 0.5  # the galaxy is in the middle of both bands
    # Without {band} in the path a several-band workflow cannot find its files.
    with ImageSource(spec) as source:
        assert list(source.read(rows_at(wcs_r, centres[:1], "f_r.fits")).status) == [st.WRONG_BANDS]


def test_footprints_find_each_rows_image(tmp_path):
    (tmp_path / "img").mkdir()
    left, right = make_wcs(crpix=(50.5, 50.5), crval=(150.0, 2.0)), make_wcs(crpix=(-40.5, 50.5), crval=(150.0, 2.0))
    for name, wcs in (("a", left), ("b", right)):
        for band in ("g", "r"):
            write_image(tmp_path / "img" / f"{name}_{band}.fits", np.zeros((100, 100), np.float32), wcs)
    spec = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["g", "r"], image_pattern="img/*_{band}.fits*")
    footprints = find_footprints(spec)
    assert [f.image for f in footprints] == ["img/a_{band}.fits", "img/b_{band}.fits"]
    # image b starts 91 pixels right of a's origin, so they overlap on a's columns 91..99.
    ra, dec = left.all_pix2world(np.array([10.0, 95.0, 98.0, 150.0, 500.0]), np.array([50.0] * 5), 0)
    got = assign_images(footprints, ra, np.array([50.0 * 0 + d for d in dec]))
    assert got.tolist() == ["img/a_{band}.fits", "img/a_{band}.fits", "img/b_{band}.fits", "img/b_{band}.fits", ""]
    (tmp_path / "img" / "a_r.fits").unlink()
    with pytest.raises(ConfigError, match="image img/a_{band}.fits has no r-band file img/a_r.fits"):
        find_footprints(spec)


def test_pixel_scale_far_from_the_models_is_refused_naming_both(tmp_path):
    write_image(tmp_path / "img.fits", np.zeros((10, 10), np.float32), make_wcs())
    spec = CutoutSpec(layout="images", root=tmp_path, size=8, bands=["r"], image_column="IMAGE")
    check_pixel_scales(["img.fits"], spec, 0.262, "checkpoint m.pt")  # within 2%
    with pytest.raises(ConfigError, match=r"img.fits has pixels of 0.2600 x 0.2600 arcsec where checkpoint m.pt "
                                          r"was trained on 0.3960"):
        check_pixel_scales(["img.fits"], spec, 0.396, "checkpoint m.pt")


def _image_run(tmp_path, model_scale=None):
    """A 16x16-stamp model run over one survey image: 12 galaxies, one on the edge, one off the image."""
    rng = np.random.default_rng(5)
    wcs = make_wcs(crpix=(64.5, 48.5), cd=rotated_cd(10.0, 0.396 / 3600, 0.396 / 3600))
    data = rng.normal(0, 1, (96, 128)).astype(np.float32)
    write_image(tmp_path / "field_r.fits.fz", data, wcs, compress="gzip", qlevel=None)
    xy = np.column_stack([rng.uniform(10, 118, 12), rng.uniform(10, 86, 12)])
    xy[10], xy[11] = (2.2, 40.3), (200.0, 40.0)
    table = rows_at(wcs, xy, "field_{band}.fits.fz")
    table["OBJID"] = np.arange(12) + 1
    wf = write_images_catalog(tmp_path, table, lambda n: rng.uniform(0, 1, n).astype(np.float32))
    trained = dict(wf, cutouts=dict(wf["cutouts"], pixel_scale=model_scale or 0.396))
    model = write_untrained_checkpoint(tmp_path / "model.pt", workflow=trained)
    return data, wcs, xy, model


def test_images_layout_end_to_end_through_run(tmp_path):
    from relabel.model import load_checkpoint, predict_proba, preprocess
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    data, wcs, xy, model = _image_run(tmp_path)
    run_catalog(tmp_path / "catalog.parquet", model, tmp_path / "out", workflow=tmp_path / "images.yaml",
                cluster=ClusterOptions(kind="none"), shard_size=5, bias=False, progress=False)
    df = pd.read_parquet(tmp_path / "out").sort_values("row")
    assert df["status"].tolist() == [st.OK] * 10 + [st.PARTIAL_EDGE, st.OUTSIDE_IMAGE]
    assert df["coverage"].tolist()[9:] == [1.0, pytest.approx(10.5 / 16, abs=1 / 16), 0.0]
    padded = np.pad(data, 16)
    x0 = np.floor(xy[:11, 0] - 7.5 + 0.5).astype(int) + 16
    y0 = np.floor(xy[:11, 1] - 7.5 + 0.5).astype(int) + 16
    stamps = np.stack([padded[y:y + 16, x:x + 16] for x, y in zip(x0, y0)])[:, None]
    net, meta = load_checkpoint(model)
    expect = predict_proba(net, preprocess(stamps, meta))
    np.testing.assert_allclose(df[["p_elliptical", "p_spiral"]].to_numpy()[:11], expect, atol=1e-5)
    assert df[["p_elliptical", "p_spiral"]].iloc[11].isna().all()


def test_run_refuses_images_at_another_pixel_scale_before_writing(tmp_path):
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    _, _, _, model = _image_run(tmp_path, model_scale=0.262)
    with pytest.raises(ConfigError, match=r"field_r.fits.fz has pixels of 0.3960 x 0.3960 arcsec where "
                                          r"checkpoint .*model.pt was trained on 0.2620"):
        run_catalog(tmp_path / "catalog.parquet", model, tmp_path / "out", workflow=tmp_path / "images.yaml",
                    cluster=ClusterOptions(kind="none"), bias=False, progress=False)
    assert not (tmp_path / "out").exists()


def test_footprint_mode_plans_one_image_per_shard_and_cuts_without_a_column(tmp_path):
    import yaml

    from conftest import WORKFLOW_YAML
    from relabel.catalog.reader import open_catalog
    from relabel.config import Workflow
    from relabel.run.plan import plan_shards

    (tmp_path / "img").mkdir()
    left, right = make_wcs(crpix=(50.5, 50.5)), make_wcs(crpix=(-49.5, 50.5))  # b starts where a ends
    for name, wcs, value in (("a", left, 1.0), ("b", right, 2.0)):
        write_image(tmp_path / "img" / f"{name}_r.fits", np.full((100, 100), value, np.float32), wcs)
    x = np.array([10.0, 150.0, 20.0, 500.0, 120.0, 30.0])
    ra, dec = left.all_pix2world(x, np.full(6, 50.0), 0)
    pd.DataFrame({"RA": ra, "DEC": dec}).to_parquet(tmp_path / "cat.parquet")
    raw = yaml.safe_load(WORKFLOW_YAML)
    raw["cutouts"] = {"layout": "images", "image_pattern": "img/*_{band}.fits", "size": 8, "bands": ["r"]}
    wf = Workflow.from_dict(raw, base_dir=tmp_path)
    shards = plan_shards(open_catalog(tmp_path / "cat.parquet"), wf, shard_size=2)
    # Rows grouped by image (in catalog order), at most 2 a shard; the row on no image gets a shard of its own.
    assert sorted((s.image, s.row_numbers().tolist()) for s in shards) == [
        ("", [3]), ("img/a_{band}.fits", [0, 2]), ("img/a_{band}.fits", [5]), ("img/b_{band}.fits", [1, 4])]
    with ImageSource(wf.cutouts, ra="RA", dec="DEC") as source:  # no image given: found by footprint
        cut = source.read(pd.DataFrame({"RA": ra, "DEC": dec}))
    assert list(cut.status) == [st.OK, st.OK, st.OK, st.OUTSIDE_IMAGE, st.OK, st.OK]
    assert cut.images[:, 0, 4, 4].tolist() == [1.0, 2.0, 1.0, 0.0, 2.0, 1.0]


def test_run_checks_the_pixel_scale_of_every_image_of_a_packed_shard(tmp_path):
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    good, bad = make_wcs(cd=[[-0.396 / 3600, 0], [0, 0.396 / 3600]]), make_wcs()  # bad: 0.26 arcsec pixels
    write_image(tmp_path / "a_r.fits", np.zeros((50, 50), np.float32), good)
    write_image(tmp_path / "b_r.fits", np.zeros((50, 50), np.float32), bad)
    table = pd.concat([rows_at(good, [(20, 20), (30, 30)], "a_{band}.fits"), rows_at(bad, [(25, 25)], "b_{band}.fits")])
    table["OBJID"] = np.arange(3) + 1
    raw = write_images_catalog(tmp_path, table, lambda n: np.full(n, 0.5, np.float32))
    model = write_untrained_checkpoint(tmp_path / "model.pt", workflow=raw)
    with pytest.raises(ConfigError, match=r"b_r.fits has pixels of 0.2600 x 0.2600 arcsec"):
        run_catalog(tmp_path / "catalog.parquet", model, tmp_path / "out", workflow=tmp_path / "images.yaml",
                    cluster=ClusterOptions(kind="none"), shard_size=100, bias=False, progress=False)
    assert not (tmp_path / "out").exists()


def _coordinates_in(convention: str, table: pd.DataFrame, root) -> tuple[str, dict]:
    """The catalog of ``table`` with its RA/Dec in ``convention``: (file name, workflow catalog keys)."""
    from astropy.coordinates import Angle
    from astropy.table import Table

    ra, dec = table["RA"].to_numpy(), table["DEC"].to_numpy()
    if convention == "radians, unit in astropy's Parquet metadata":
        t = Table.from_pandas(table)
        t["RA"], t["DEC"] = np.radians(ra), np.radians(dec)
        t["RA"].unit = t["DEC"].unit = "rad"
        t.write(root / "c.parquet")
        return "c.parquet", {}
    if convention == "hours and arcsec, FITS TUNIT":
        data = table.copy()
        data["RA"], data["DEC"] = ra / 15, dec * 3600
        units = ["h" if c == "RA" else "arcsec" if c == "DEC" else "" for c in data.columns]
        fitsio.write(str(root / "c.fits"), data.to_records(index=False), units=units)
        return "c.fits", {}
    if convention == "sexagesimal text":
        data = table.copy()
        data["RA"] = Angle(ra, unit="deg").to_string(unit="hourangle", sep=":", precision=4)
        data["DEC"] = Angle(dec, unit="deg").to_string(sep=" ", precision=3, alwayssign=True)
        data.to_parquet(root / "c.parquet")
        return "c.parquet", {}
    data = table.copy()  # "hours, unit named by the workflow"
    data["RA"] = ra / 15
    data.to_parquet(root / "c.parquet")
    return "c.parquet", {"ra_unit": "hourangle"}


@pytest.mark.parametrize("convention", ["radians, unit in astropy's Parquet metadata", "hours and arcsec, FITS TUNIT",
                                        "sexagesimal text", "hours, unit named by the workflow"])
def test_coordinates_in_any_unit_or_notation_cut_the_same_stamps(tmp_path, convention):
    import yaml

    import json

    from relabel.run.clusters import ClusterOptions
    from relabel.run.output import RUN_RECORD
    from relabel.run.pipeline import run_catalog

    _, _, _, model = _image_run(tmp_path)
    options = dict(cluster=ClusterOptions(kind="none"), shard_size=5, bias=False, progress=False)
    run_catalog(tmp_path / "catalog.parquet", model, tmp_path / "ref", workflow=tmp_path / "images.yaml", **options)
    reference = pd.read_parquet(tmp_path / "ref").sort_values("row")
    name, keys = _coordinates_in(convention, pd.read_parquet(tmp_path / "catalog.parquet"), tmp_path)
    raw = yaml.safe_load((tmp_path / "images.yaml").read_text())
    raw["catalog"].update(keys)
    (tmp_path / "units.yaml").write_text(yaml.safe_dump(raw))
    run_catalog(tmp_path / name, model, tmp_path / "out", workflow=tmp_path / "units.yaml", **options)
    out = pd.read_parquet(tmp_path / "out").sort_values("row")
    assert out["status"].tolist() == reference["status"].tolist() == [st.OK] * 10 + [st.PARTIAL_EDGE,
                                                                                      st.OUTSIDE_IMAGE]
    np.testing.assert_allclose(out[["p_elliptical", "p_spiral"]].to_numpy(),
                               reference[["p_elliptical", "p_spiral"]].to_numpy(), atol=1e-6)
    from relabel.catalog.reader import open_catalog

    as_read = open_catalog(tmp_path / name).read_all(["RA"])["RA"]
    assert out["RA"].tolist() == as_read.tolist()  # the output keeps the catalog's own values
    # The record keeps the units found, so whatever re-reads the output (the report's stamps) reads it the same way.
    recorded = json.loads((tmp_path / "out" / RUN_RECORD).read_text())["workflow"]["catalog"]
    expected = {"radians, unit in astropy's Parquet metadata": ("rad", "rad"), "hours and arcsec, FITS TUNIT":
                ("h", "arcsec"), "sexagesimal text": (None, None), "hours, unit named by the workflow": ("hourangle",
                                                                                                       None)}
    assert (recorded.get("ra_unit"), recorded.get("dec_unit")) == expected[convention]


def test_coordinates_on_no_image_at_all_are_refused_with_their_range_before_writing(tmp_path):
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    _, _, _, model = _image_run(tmp_path)
    table = pd.read_parquet(tmp_path / "catalog.parquet")
    table["RA"], table["DEC"] = np.radians(table["RA"]), np.radians(table["DEC"])  # radians, and nothing says so
    table.to_parquet(tmp_path / "radians.parquet")
    with pytest.raises(CatalogError, match=r"no row lies on its image \(column IMAGE; 12 rows .*\)\. Its coordinates "
                                           r"as read \(RA in deg, DEC in deg\): RA 2\.6\d* to 2\.6\d*.* the images' "
                                           r"centres: RA 150 to 150"):
        run_catalog(tmp_path / "radians.parquet", model, tmp_path / "out", workflow=tmp_path / "images.yaml",
                    cluster=ClusterOptions(kind="none"), bias=False, progress=False)
    assert not (tmp_path / "out").exists()


def test_training_reads_the_same_stamps_from_coordinates_in_radians(tmp_path):
    from relabel.config import load_workflow
    from relabel.train import load_labelled_cutouts

    _image_run(tmp_path)
    workflow = load_workflow(tmp_path / "images.yaml")
    table = pd.read_parquet(tmp_path / "catalog.parquet")
    name, _ = _coordinates_in("radians, unit in astropy's Parquet metadata", table, tmp_path)
    reference = load_labelled_cutouts(tmp_path / "catalog.parquet", workflow, 0, 0.25, progress=False)
    radians = load_labelled_cutouts(tmp_path / name, workflow, 0, 0.25, progress=False)
    assert len(radians) == len(reference) > 0
    np.testing.assert_array_equal(radians.images, reference.images)


def _frame_wcs(kind: str) -> WCS:
    """A TAN image WCS near (RA 150, Dec 2) whose world axes are not plain ICRS RA/Dec in the usual order."""
    from astropy.coordinates import SkyCoord

    wcs = WCS(naxis=2)
    centre = SkyCoord(150.0, 2.0, unit="deg", frame="icrs")
    if kind == "galactic":
        wcs.wcs.ctype, lon_lat = ["GLON-TAN", "GLAT-TAN"], centre.galactic
        wcs.wcs.crval = [lon_lat.l.deg, lon_lat.b.deg]
    elif kind == "fk4 B1950":
        wcs.wcs.ctype, wcs.wcs.radesys, wcs.wcs.equinox = ["RA---TAN", "DEC--TAN"], "FK4", 1950.0
        lon_lat = centre.transform_to("fk4")
        wcs.wcs.crval = [lon_lat.ra.deg, lon_lat.dec.deg]
    else:  # "declination first": axis 1 is latitude
        wcs.wcs.ctype, wcs.wcs.crval = ["DEC--TAN", "RA---TAN"], [2.0, 150.0]
    wcs.wcs.crpix = [256.5, 200.5]
    wcs.wcs.cd = np.array([[-SCALE, 0.0], [0.0, SCALE]]) if kind != "declination first" else np.array(
        [[0.0, SCALE], [-SCALE, 0.0]])
    return wcs


@pytest.mark.parametrize("kind", ["galactic", "fk4 B1950", "declination first"])
def test_images_in_other_sky_frames_or_axis_orders_cut_stamps_on_their_galaxies(tmp_path, kind):
    from astropy.wcs.utils import pixel_to_skycoord

    wcs = _frame_wcs(kind)
    centres = [(100.3, 80.8), (300.1, 250.2), (420.6, 40.2)]
    ramp = np.arange(400 * 512, dtype=np.float32).reshape(400, 512) * 1e-6
    data = blobs((400, 512), centres) + ramp
    header = [{"name": c.keyword, "value": c.value} for c in wcs.to_header().cards if c.keyword]
    fitsio.write(str(tmp_path / "img_r.fits"), data, header=header, clobber=True)
    sky = pixel_to_skycoord(*np.array(centres).T, wcs, origin=0).icrs  # the catalog's ICRS positions
    rows = pd.DataFrame({"RA": sky.ra.deg, "DEC": sky.dec.deg, "IMAGE": "img_r.fits"})
    spec = CutoutSpec(layout="images", root=tmp_path, size=24, bands=["r"], image_column="IMAGE")
    with ImageSource(spec) as source:
        got = source.read(rows)
    assert list(got.status) == [st.OK] * 3
    for k, (x, y) in enumerate(centres):
        x0, y0 = int(np.floor(x - 11.5 + 0.5)), int(np.floor(y - 11.5 + 0.5))
        np.testing.assert_array_equal(got.images[k, 0], data[y0:y0 + 24, x0:x0 + 24])
    pattern = CutoutSpec(layout="images", root=tmp_path, size=24, bands=["r"], image_pattern="img_{band}.fits")
    assert assign_images(find_footprints(pattern), sky.ra.deg, sky.dec.deg).tolist() == ["img_{band}.fits"] * 3


def _write_ccd_file(path, ccds):
    """A multi-extension file as CCD-level survey products are: an empty primary HDU, then one image per CCD."""
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        fits.write(None)
        for name, data, wcs in ccds:
            header = [{"name": c.keyword, "value": c.value} for c in wcs.to_header().cards if c.keyword]
            fits.write(data, header=header, extname=name)


def test_a_file_of_several_ccds_gives_each_its_own_image(tmp_path):
    from relabel.cutouts.images import image_extensions, split_hdu

    left, right = make_wcs(crpix=(50.5, 50.5)), make_wcs(crpix=(-59.5, 50.5))  # S2 starts 10 pixels after S1 ends
    s1 = blobs((100, 100), [(20.2, 30.7)]) + 1.0
    s2 = blobs((100, 100), [(70.4, 60.1)]) + 2.0
    _write_ccd_file(tmp_path / "exp_r.fits", [("S1", s1, left), ("S2", s2, right)])
    with fitsio.FITS(str(tmp_path / "exp_r.fits")) as fits:
        assert image_extensions(fits) == ["S1", "S2"]
    assert split_hdu(tmp_path / "exp_r.fits[S2]") == (tmp_path / "exp_r.fits", "S2")
    rows = pd.concat([rows_at(left, [(20.2, 30.7)]), rows_at(right, [(70.4, 60.1)]),
                      rows_at(left, [(105.0, 50.0)])])  # the last one falls in the gap between the CCDs
    # Found by footprint: one image per CCD, named file[EXTNAME].
    by_footprint = CutoutSpec(layout="images", root=tmp_path, size=8, bands=["r"], image_pattern="exp_{band}.fits")
    assert assign_images(find_footprints(by_footprint), rows["RA"].to_numpy(), rows["DEC"].to_numpy()).tolist() == [
        "exp_{band}.fits[S1]", "exp_{band}.fits[S2]", ""]
    with ImageSource(by_footprint) as source:
        cut = source.read(rows.reset_index(drop=True))
    assert list(cut.status) == [st.OK, st.OK, st.OUTSIDE_IMAGE]
    np.testing.assert_array_equal(cut.images[0, 0], s1[27:35, 17:25])  # corner floor(x - 3.5 + 0.5)
    np.testing.assert_array_equal(cut.images[1, 0], s2[57:65, 67:75])
    # Named in the image column, by EXTNAME or by HDU number (the primary is 0); a CCD the file lacks is a status.
    named = rows.iloc[:2].assign(IMAGE=["exp_{band}.fits[s1]", "exp_{band}.fits[2]"])
    named = pd.concat([named, rows.iloc[:1].assign(IMAGE="exp_{band}.fits[S9]")]).reset_index(drop=True)
    by_column = CutoutSpec(layout="images", root=tmp_path, size=8, bands=["r"], image_column="IMAGE")
    with ImageSource(by_column) as source:
        cut2 = source.read(named)
    assert list(cut2.status) == [st.OK, st.OK, st.EMPTY_HDU]
    np.testing.assert_array_equal(cut2.images[:2], cut.images[:2])


def test_a_run_over_ccd_files_plans_and_cuts_each_ccd(tmp_path):
    import yaml

    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    scale = [[-0.396 / 3600, 0.0], [0.0, 0.396 / 3600]]
    left, right = make_wcs(crpix=(50.5, 50.5), cd=scale), make_wcs(crpix=(-59.5, 50.5), cd=scale)
    rng = np.random.default_rng(2)
    _write_ccd_file(tmp_path / "exp_r.fits", [("S1", rng.normal(size=(100, 100)).astype(np.float32), left),
                                              ("S2", rng.normal(size=(100, 100)).astype(np.float32), right)])
    table = pd.concat([rows_at(left, [(20.2, 30.7), (80.0, 20.0)]), rows_at(right, [(70.4, 60.1)])])
    table["OBJID"] = np.arange(3) + 1
    raw = write_images_catalog(tmp_path, table.reset_index(drop=True),
                               lambda n: np.full(n, 0.5, np.float32), size=8)
    raw["cutouts"] = {"layout": "images", "root": ".", "image_pattern": "exp_{band}.fits", "size": 8,
                      "bands": ["r"], "pixel_scale": 0.396}
    (tmp_path / "images.yaml").write_text(yaml.safe_dump(raw))
    model = write_untrained_checkpoint(tmp_path / "model.pt", size=8, workflow=raw)
    run_catalog(tmp_path / "catalog.parquet", model, tmp_path / "out", workflow=tmp_path / "images.yaml",
                cluster=ClusterOptions(kind="none"), shard_size=2, bias=False, progress=False)
    out = pd.read_parquet(tmp_path / "out").sort_values("row")
    assert out["status"].tolist() == [st.OK] * 3 and out["p_spiral"].notna().all()


def _write_survey_image(path, kind: str, physical: np.ndarray, wcs: WCS, blank_at: tuple) -> None:
    """One survey image as pipelines write it: ``kind`` names the axes and the pixel storage."""
    header = [{"name": c.keyword, "value": c.value} for c in wcs.to_header().cards if c.keyword]
    data = physical
    if kind.startswith("int16"):
        data = np.round((physical - 5.0) / 1e-3).astype(np.int16)
        data[blank_at] = -32768
        header += [{"name": "BSCALE", "value": 1e-3}, {"name": "BZERO", "value": 5.0},
                   {"name": "BLANK", "value": -32768}]
    extra = {"float, NAXIS3 = 1": 1, "float, NAXIS4 = NAXIS3 = 1": 2, "int16 BLANK, NAXIS3 = 1, compressed": 1}
    for axis in range(3, 3 + extra.get(kind, 0)):  # a frequency, then a Stokes axis, as radio images carry
        ctype, crval = ("FREQ", 1.4e9) if axis == 3 else ("STOKES", 1.0)
        header += [{"name": f"CTYPE{axis}", "value": ctype}, {"name": f"CRVAL{axis}", "value": crval},
                   {"name": f"CRPIX{axis}", "value": 1.0}, {"name": f"CDELT{axis}", "value": 1.0}]
        data = data[np.newaxis]
    fitsio.write(str(path), data, header=header, clobber=True,
                 compress="RICE" if kind.endswith("compressed") else None)


@pytest.mark.parametrize("kind", ["float", "float, NAXIS3 = 1", "float, NAXIS4 = NAXIS3 = 1", "int16 BLANK",
                                  "int16 BLANK, NAXIS3 = 1, compressed"])
def test_images_with_length_one_axes_or_blank_pixels_cut_their_physical_values(tmp_path, kind):
    wcs = make_wcs(crpix=(35.5, 30.5), cd=[[-0.396 / 3600, 0.0], [0.0, 0.396 / 3600]])
    centres = [(31.2, 30.4), (10.3, 12.1)]
    physical = (blobs((60, 70), centres) + np.arange(60 * 70).reshape(60, 70) * 1e-3 + 5.0).astype(np.float32)
    blank_at = (slice(20, 40), slice(30, 33))  # 3 of the first stamp's 16 columns: 19 % of its pixels
    _write_survey_image(tmp_path / "img_r.fits", kind, physical, wcs, blank_at)
    spec = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["r"], image_pattern="img_{band}.fits")
    rows = rows_at(wcs, centres)
    assert assign_images(find_footprints(spec), rows["RA"], rows["DEC"]).tolist() == ["img_{band}.fits"] * 2
    with ImageSource(spec) as source:
        got = source.read(rows.assign(IMAGE="img_{band}.fits"))
    blanked = kind.startswith("int16")
    assert list(got.status) == ([st.NAN_FILLED] if blanked else [st.OK]) + [st.OK]
    expected = physical.copy()
    if blanked:
        expected = (np.round((physical - 5.0) / 1e-3) * 1e-3 + 5.0).astype(np.float32)
        expected[blank_at] = 0.0  # undefined pixels are NaN, then the background a NaN-filled cutout holds
    for k, (x, y) in enumerate(centres):
        x0, y0 = int(np.floor(x - 7.5 + 0.5)), int(np.floor(y - 7.5 + 0.5))
        np.testing.assert_allclose(got.images[k, 0], expected[y0:y0 + 16, x0:x0 + 16], rtol=1e-6, atol=1e-6)
    assert got.images.min() >= 0  # no BLANK x BSCALE + BZERO (-27.8) reaches the network


def test_a_cube_of_several_planes_is_not_taken_for_one_image(tmp_path):
    from astropy.io import fits

    wcs = make_wcs(crpix=(35.5, 30.5))
    header = wcs.to_header()
    header["CTYPE3"], header["CRVAL3"], header["CRPIX3"], header["CDELT3"] = "FREQ", 1.4e9, 1.0, 1e6
    fits.PrimaryHDU(np.ones((2, 60, 70), np.float32), header).writeto(tmp_path / "cube_r.fits")
    pattern = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["r"], image_pattern="cube_{band}.fits")
    with pytest.raises(ConfigError, match="cube_r.fits has no 2-D image with a celestial WCS"):
        find_footprints(pattern)
    column = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["r"], image_column="IMAGE")
    with ImageSource(column) as source:
        got = source.read(rows_at(wcs, [(30.0, 30.0)], "cube_{band}.fits"))
    assert list(got.status) == [st.WRONG_SHAPE]


@pytest.mark.parametrize("packing", ["gzip", "bzip2"])
def test_a_whole_file_compressed_image_gives_the_same_stamps_as_the_plain_file(tmp_path, packing):
    import bz2
    import gzip

    wcs = make_wcs(crpix=(35.5, 30.5))
    centres = [(31.2, 30.4), (10.3, 12.1), (68.0, 5.0)]
    data = blobs((60, 70), centres) + np.arange(60 * 70, dtype=np.float32).reshape(60, 70) * 1e-3
    write_image(tmp_path / "img_r.fits", data, wcs)
    opener, suffix = (gzip.open, ".gz") if packing == "gzip" else (bz2.open, ".bz2")
    with opener(tmp_path / f"packed_r.fits{suffix}", "wb") as out:
        out.write((tmp_path / "img_r.fits").read_bytes())
    spec = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["r"], image_column="IMAGE")
    rows = rows_at(wcs, centres)
    with ImageSource(spec) as source:
        plain = source.read(rows.assign(IMAGE="img_{band}.fits"))
        packed = source.read(rows.assign(IMAGE=f"packed_{{band}}.fits{suffix}"))
        assert source._open[f"packed_r.fits{suffix}"][0].memmap is None  # cfitsio inflates it
    assert list(packed.status) == list(plain.status) == [st.OK, st.OK, st.PARTIAL_EDGE]
    np.testing.assert_array_equal(packed.images, plain.images)
    by_pattern = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["r"],
                            image_pattern=f"packed_{{band}}.fits{suffix}")
    assert assign_images(find_footprints(by_pattern), rows["RA"], rows["DEC"]).tolist() == [
        f"packed_{{band}}.fits{suffix}"] * 3


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_a_truncated_image_is_a_status_not_a_crash(tmp_path, dtype):
    wcs = make_wcs(crpix=(35.5, 30.5))
    write_image(tmp_path / "img_r.fits", np.ones((60, 70), dtype), wcs)
    whole = (tmp_path / "img_r.fits").read_bytes()
    (tmp_path / "cut_r.fits").write_bytes(whole[:len(whole) // 2])  # a transfer that stopped halfway
    spec = CutoutSpec(layout="images", root=tmp_path, size=16, bands=["r"], image_column="IMAGE")
    with ImageSource(spec) as source:
        got = source.read(rows_at(wcs, [(20.0, 10.0), (30.0, 50.0)], "cut_{band}.fits"))
    assert list(got.status) == [st.CORRUPT_FILE] * 2
