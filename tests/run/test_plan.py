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
