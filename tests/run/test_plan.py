import fitsio
import numpy as np

from relabel.catalog import open_catalog
from relabel.config import load_workflow
from relabel.run.plan import plan_shards


def _rows(shards):
    return np.concatenate([s.row_numbers() for s in shards])


def test_sorted_tiles_give_row_ranges_cut_at_tile_edges(tiny_survey):
    root, data, _ = tiny_survey
    wf = load_workflow(root / "workflow.yaml")
    shards = plan_shards(open_catalog(root / "catalog.fits"), wf, shard_size=20)
    # tiles of 16, 16 and 8 rows: no shard cuts a tile, none exceeds 20 rows
    assert [(s.start, s.stop) for s in shards] == [(0, 16), (16, 32), (32, 40)]
    assert all(s.rows is None for s in shards)
    np.testing.assert_array_equal(_rows(shards), np.arange(40))


def test_large_tiles_are_split_and_small_ones_packed(tiny_survey):
    root, _, _ = tiny_survey
    wf = load_workflow(root / "workflow.yaml")
    cat = open_catalog(root / "catalog.fits")
    assert [(s.start, s.stop) for s in plan_shards(cat, wf, 6)] == [
        (0, 6), (6, 12), (12, 16), (16, 22), (22, 28), (28, 32), (32, 38), (38, 40)]
    assert [(s.start, s.stop) for s in plan_shards(cat, wf, 100)] == [(0, 40)]
    assert [s.name for s in plan_shards(cat, wf, 100)] == ["part-000000"]


def test_unsorted_tiles_are_grouped_into_row_lists(tmp_path, tiny_survey):
    root, data, _ = tiny_survey
    rng = np.random.default_rng(3)
    shuffled = data[rng.permutation(len(data))]
    fitsio.write(str(root / "shuffled.fits"), shuffled, extname="CATALOG", clobber=True)
    wf = load_workflow(root / "workflow.yaml")
    cat = open_catalog(root / "shuffled.fits")
    shards = plan_shards(cat, wf, 20)
    rows = _rows(shards)
    assert sorted(rows.tolist()) == list(range(40))  # every row exactly once
    tiles = cat.read(["TILE"])["TILE"].to_numpy()
    for s in shards:
        assert s.rows is not None
    # each tile's rows sit in one shard: a worker opens each tile once
    owner = {}
    for s in shards:
        for t in set(tiles[list(s.rows)]):
            assert owner.setdefault(t, s.id) == s.id


def test_files_layout_uses_plain_ranges(tiny_survey):
    root, _, _ = tiny_survey
    wf = load_workflow(root / "workflow.yaml")
    wf.cutouts.layout = "files"
    shards = plan_shards(open_catalog(root / "catalog.fits"), wf, 15)
    assert [(s.start, s.stop) for s in shards] == [(0, 15), (15, 30), (30, 40)]


def test_empty_catalog_has_no_shards(tmp_path, tiny_survey):
    root, data, _ = tiny_survey
    fitsio.write(str(root / "empty.fits"), data[:0], extname="CATALOG", clobber=True)
    assert plan_shards(open_catalog(root / "empty.fits"), load_workflow(root / "workflow.yaml"), 10) == []


# --------------------------------------------------------------------------- layout "images": rows by pixel row

SCALE = 0.396 / 3600  # degrees / pixel


def _tan_wcs(angle_deg=0.0, crpix=(100.5, 100.5)):
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = list(crpix)
    a = np.radians(angle_deg)
    wcs.wcs.cd = np.array([[-np.cos(a), np.sin(a)], [np.sin(a), np.cos(a)]]) * SCALE
    return wcs


def _write_image(path, shape, wcs):
    from conftest import write_wcs_image

    write_wcs_image(path, np.zeros(shape, np.float32), wcs)


def _images_workflow(tmp_path, cutouts):
    import yaml

    from conftest import WORKFLOW_YAML
    from relabel.config import Workflow

    raw = yaml.safe_load(WORKFLOW_YAML)
    raw["cutouts"] = {"layout": "images", "size": 8, "bands": ["r"], **cutouts}
    return Workflow.from_dict(raw, base_dir=tmp_path)


def test_an_images_rows_are_ordered_by_dec_and_cut_into_strips(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(11)
    n = 40
    image = rng.choice(["a_{band}.fits", "b_{band}.fits"], n)
    dec = 2.0 + rng.uniform(-0.01, 0.01, n)
    pd.DataFrame({"RA": rng.uniform(150, 150.01, n), "DEC": dec, "IMAGE": image}).to_parquet(tmp_path / "c.parquet")
    wf = _images_workflow(tmp_path, {"image_column": "IMAGE"})
    shards = plan_shards(open_catalog(tmp_path / "c.parquet"), wf, shard_size=6)
    assert sorted(_rows(shards).tolist()) == list(range(n))  # every catalog row exactly once
    for name in ("a_{band}.fits", "b_{band}.fits"):
        mine = [s for s in shards if s.image == name]
        rows = np.concatenate([s.row_numbers() for s in mine])
        assert set(rows.tolist()) == set(np.flatnonzero(image == name).tolist())
        # in Dec order across the image's shards (Dec follows y on a north-up image): each shard is a strip
        np.testing.assert_array_equal(dec[rows], np.sort(dec[image == name]))
        assert all(len(s.row_numbers()) <= 6 for s in mine)


def test_footprint_mode_orders_rows_by_pixel_row_of_a_rotated_image(tmp_path):
    import pandas as pd

    # Turned 90 degrees: pixel rows run along RA, so Dec order would be column order.
    wcs = _tan_wcs(angle_deg=90.0)
    _write_image(tmp_path / "f_r.fits", (200, 200), wcs)
    rng = np.random.default_rng(12)
    x, y = rng.uniform(5, 195, 30), rng.uniform(5, 195, 30)
    ra, dec = wcs.all_pix2world(x, y, 0)
    pd.DataFrame({"RA": ra, "DEC": dec}).to_parquet(tmp_path / "c.parquet")
    wf = _images_workflow(tmp_path, {"image_pattern": "*_{band}.fits"})
    shards = plan_shards(open_catalog(tmp_path / "c.parquet"), wf, shard_size=7)
    rows = _rows(shards)
    assert {s.image for s in shards} == {"f_{band}.fits"}
    np.testing.assert_array_equal(rows, np.argsort(y))  # by pixel row
    assert not np.array_equal(rows, np.argsort(dec)) and not np.array_equal(rows, np.argsort(-dec))


def test_reordered_image_rows_keep_their_statuses_pixels_and_catalog_rows(tmp_path):
    """A shuffled catalog over a compressed image, planned into y-ordered strips of 4 rows: every output row
    is its catalog row (id, position), with the status, coverage and probabilities of that row's own stamp."""
    import pandas as pd

    from conftest import write_images_catalog, write_untrained_checkpoint, write_wcs_image
    from relabel.cutouts.images import ImageSource
    from relabel.model import load_checkpoint, predict_proba, preprocess
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    rng = np.random.default_rng(13)
    wcs = _tan_wcs(angle_deg=20.0, crpix=(60.5, 40.5))
    data = rng.normal(0, 1, (80, 120)).astype(np.float32)
    write_wcs_image(tmp_path / "f_r.fits.fz", data, wcs, compress="gzip", qlevel=None)
    xy = np.column_stack([rng.uniform(10, 110, 14), rng.uniform(10, 70, 14)])
    xy[[3, 7]] = (2.0, 30.0), (60.0, 78.6)  # stamps hanging off the left and top edges
    xy[[5, 11]] = (300.0, 30.0), (60.0, -40.0)  # off the image
    ra, dec = wcs.all_pix2world(xy[:, 0], xy[:, 1], 0)
    table = pd.DataFrame({"RA": ra, "DEC": dec, "IMAGE": "f_{band}.fits.fz", "OBJID": np.arange(14) * 7 + 1000})
    raw = write_images_catalog(tmp_path, table, lambda n: rng.uniform(0, 1, n).astype(np.float32))
    model = write_untrained_checkpoint(tmp_path / "model.pt", workflow=raw)

    shards = plan_shards(open_catalog(tmp_path / "catalog.parquet"), load_workflow(tmp_path / "images.yaml"), 4)
    assert any(s.rows is not None and list(s.rows) != sorted(s.rows) for s in shards)  # really reordered
    run_catalog(tmp_path / "catalog.parquet", model, tmp_path / "out", workflow=tmp_path / "images.yaml",
                cluster=ClusterOptions(kind="none"), shard_size=4, bias=False, progress=False)
    out = pd.read_parquet(tmp_path / "out").set_index("row").sort_index()
    assert out.index.tolist() == list(range(14))
    np.testing.assert_array_equal(out["OBJID"].to_numpy(), table["OBJID"].to_numpy())
    np.testing.assert_array_equal(out["RA"].to_numpy(), ra)

    # What the rows give read in catalog order, in one piece, with no planning at all.
    wf = load_workflow(tmp_path / "images.yaml")
    with ImageSource(wf.cutouts, ra="RA", dec="DEC") as source:
        alone = source.read(table)
    assert out["status"].tolist() == list(alone.status)
    assert sorted(set(alone.status)) == ["ok", "outside_image", "partial_edge"]
    np.testing.assert_array_equal(out["coverage"].to_numpy(), alone.coverage)
    net, meta = load_checkpoint(model)
    usable = alone.usable
    expect = predict_proba(net, preprocess(alone.images[usable], meta))
    np.testing.assert_allclose(out[["p_elliptical", "p_spiral"]].to_numpy()[usable], expect, atol=1e-5)
    assert out.loc[~usable, "p_spiral"].isna().all()


def test_small_images_are_packed_whole_into_shards_and_large_ones_cut_into_strips(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(14)
    sizes = {"a": 3, "b": 3, "c": 2, "d": 11, "e": 3}  # d: more rows than a shard
    image = np.array([f"{k}_{{band}}.fits" for k, m in sizes.items() for _ in range(m)], dtype=object)
    image = image[rng.permutation(len(image))]
    dec = 2.0 + rng.uniform(-0.01, 0.01, len(image))
    pd.DataFrame({"RA": 150.0, "DEC": dec, "IMAGE": image.astype(str)}).to_parquet(tmp_path / "c.parquet")
    wf = _images_workflow(tmp_path, {"image_column": "IMAGE"})
    shards = plan_shards(open_catalog(tmp_path / "c.parquet"), wf, shard_size=8)
    assert sorted(_rows(shards).tolist()) == list(range(len(image)))
    owners: dict[str, set] = {}
    for s in shards:
        assert s.n_rows <= 8
        rows, images = s.row_numbers(), s.row_images()
        np.testing.assert_array_equal(images, image[rows])  # each row's image, as the source will be told
        for name in s.image_names:
            owners.setdefault(name, set()).add(s.id)
            mine = rows[images == name]
            np.testing.assert_array_equal(dec[mine], np.sort(dec[mine]))  # pixel-row (Dec) order within an image
        assert (s.image is None) == (s.images is not None and len(s.images) > 1)
    # Every small image sits whole in one shard; the large one is cut into strips of at most 8.
    assert all(len(owners[f"{k}_{{band}}.fits"]) == 1 for k in "abce")
    assert len(owners["d_{band}.fits"]) == 2
    assert any(s.images is not None for s in shards)  # small images really were packed
    assert len(shards) == 4  # a+b (6), c (2, then d's strips) ... packed like tiles: no shard of one small image


def test_packed_shards_in_footprint_mode_give_each_row_its_own_image(tmp_path):
    """Three small images side by side, no image column: packed into shards of several images, each row is cut
    from the image whose footprint holds it (as a read with no plan finds it), rows off every image flagged."""
    import pandas as pd
    import yaml

    from conftest import WORKFLOW_YAML, write_untrained_checkpoint
    from relabel.cutouts.images import ImageSource
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    rng = np.random.default_rng(15)
    (tmp_path / "img").mkdir()
    wcss = []
    for k in range(3):
        wcs = _tan_wcs(angle_deg=15.0 * k, crpix=(30.5 - 70 * k, 30.5))
        fitsio.write(str(tmp_path / "img" / f"f{k}_r.fits"), rng.normal(k, 1, (60, 60)).astype(np.float32),
                     header=[{"name": c.keyword, "value": c.value} for c in wcs.to_header().cards
                             if c.keyword and c.keyword not in ("DATEREF", "MJDREF")], clobber=True)
        wcss.append(wcs)
    ra, dec = [], []
    for k, wcs in enumerate(wcss):
        r, d = wcs.all_pix2world(rng.uniform(12, 48, 5), rng.uniform(12, 48, 5), 0)
        ra += list(r)
        dec += list(d)
    r, d = wcss[0].all_pix2world([30.0], [400.0], 0)  # on no image
    ra, dec = np.array(ra + list(r)), np.array(dec + list(d))
    order = rng.permutation(len(ra))
    table = pd.DataFrame({"RA": ra[order], "DEC": dec[order], "OBJID": np.arange(16) + 1})
    for col in ("P_EL", "P_CS", "ABS_MAG", "R50_KPC", "RESOLUTION", "REDSHIFT", "MAG_R"):
        table[col] = rng.uniform(0, 1, 16).astype(np.float32)
    table.to_parquet(tmp_path / "catalog.parquet")
    raw = yaml.safe_load(WORKFLOW_YAML)
    raw["cutouts"] = {"layout": "images", "root": ".", "image_pattern": "img/*_{band}.fits", "size": 16,
                      "bands": ["r"], "pixel_scale": 0.396}
    (tmp_path / "images.yaml").write_text(yaml.safe_dump(raw))
    model = write_untrained_checkpoint(tmp_path / "model.pt", workflow=raw)
    wf = load_workflow(tmp_path / "images.yaml")
    shards = plan_shards(open_catalog(tmp_path / "catalog.parquet"), wf, 11)
    assert [s.image_names for s in shards] == [["", "img/f0_{band}.fits", "img/f1_{band}.fits"], ["img/f2_{band}.fits"]]

    run_catalog(tmp_path / "catalog.parquet", model, tmp_path / "out", workflow=tmp_path / "images.yaml",
                cluster=ClusterOptions(kind="none"), shard_size=11, bias=False, progress=False)
    out = pd.read_parquet(tmp_path / "out").set_index("row").sort_index()
    np.testing.assert_array_equal(out["OBJID"].to_numpy(), table["OBJID"].to_numpy())
    with ImageSource(wf.cutouts, ra="RA", dec="DEC") as source:  # no plan: images found by footprint per row
        alone = source.read(table)
    assert out["status"].tolist() == list(alone.status)
    assert (alone.status == "outside_image").sum() == 1 and (alone.status == "ok").sum() == 15
    # Each image's sky level is its number: the right image was cut for every row.
    assert out.loc[alone.usable, "status"].eq("ok").all()
    levels = np.round(alone.images[alone.usable].mean(axis=(1, 2, 3)))
    np.testing.assert_array_equal(levels, (order[order < 15] // 5).astype(float))
