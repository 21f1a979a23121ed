import fitsio
import numpy as np
import pandas as pd

from relabel import status as st
from relabel.config import CutoutSpec
from relabel.cutouts import FileSource, TileSource


def _tile_rows(tiles, indices):
    return pd.DataFrame({"TILE": tiles, "TILE_INDEX": indices})


def test_tiles_read_the_right_images_in_row_order(tiny_survey):
    root, _, images = tiny_survey
    spec = CutoutSpec(root=root, size=16)
    rows = _tile_rows(["tiles/tile_00001.fits", "tiles/tile_00000.fits", "tiles/tile_00001.fits", "tiles/tile_00002.fits"],
                      [3, 15, 0, 7])
    with TileSource(spec) as source:
        got = source.read(rows)
    assert list(got.status) == [st.OK] * 4
    for j, global_index in enumerate([19, 15, 16, 39]):
        np.testing.assert_array_equal(got.images[j], images[global_index])


def test_sparse_indices_read_one_by_one(tmp_path):
    cube = np.arange(200 * 4, dtype="f4").reshape(200, 1, 2, 2)
    fitsio.write(str(tmp_path / "t.fits"), cube)
    with TileSource(CutoutSpec(root=tmp_path, size=2)) as source:
        got = source.read(_tile_rows(["t.fits"] * 2, [199, 0]))
    np.testing.assert_array_equal(got.images, cube[[199, 0]])


def test_tile_faults_are_row_statuses(tiny_survey):
    root, _, _ = tiny_survey
    (root / "tiles" / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 50)
    fitsio.write(str(root / "tiles" / "big.fits"), np.zeros((2, 1, 32, 32), "f4"))
    fitsio.write(str(root / "tiles" / "bands.fits"), np.zeros((2, 3, 16, 16), "f4"))
    nan = np.zeros((4, 1, 16, 16), "f4")
    nan[0] = np.nan
    nan[1, 0, :8] = np.nan            # half the pixels
    nan[2, 0, 0, :3] = np.inf          # 3 pixels: filled with background
    fitsio.write(str(root / "tiles" / "nan.fits"), nan)
    rows = _tile_rows(
        ["tiles/none.fits", "tiles/broken.fits", "tiles/big.fits", "tiles/bands.fits", "tiles/tile_00000.fits",
         "tiles/nan.fits", "tiles/nan.fits", "tiles/nan.fits", "tiles/nan.fits", "tiles/tile_00000.fits"],
        [0, 0, 0, 0, 16, 0, 1, 2, 3, -1],
    )
    with TileSource(CutoutSpec(root=root, size=16)) as source:
        got = source.read(rows)
    assert list(got.status) == [
        st.MISSING_FILE, st.CORRUPT_FILE, st.WRONG_SHAPE, st.WRONG_BANDS, st.BAD_INDEX,
        st.ALL_NAN, st.TOO_MANY_NAN, st.NAN_FILLED, st.OK, st.BAD_INDEX,
    ]
    assert np.all(np.isfinite(got.images))
    assert got.images[7, 0, 0, :3].tolist() == [0, 0, 0]
    assert list(got.usable) == [False] * 7 + [True, True, False]


def test_per_object_files_and_their_faults(tmp_path):
    good = np.random.default_rng(1).normal(size=(16, 16)).astype("f4")
    fitsio.write(str(tmp_path / "a.fits"), good)
    fitsio.write(str(tmp_path / "b.fits"), good[None].repeat(3, axis=0))  # 3 bands
    fitsio.write(str(tmp_path / "c.fits"), good[:8])
    from astropy.io import fits

    fits.PrimaryHDU().writeto(tmp_path / "empty.fits")
    (tmp_path / "trunc.fits").write_bytes((tmp_path / "a.fits").read_bytes()[:3000])
    rows = pd.DataFrame({"CUTOUT": ["a.fits", "b.fits", "c.fits", "empty.fits", "trunc.fits", "missing.fits"]})
    got = FileSource(CutoutSpec(layout="files", root=tmp_path, size=16)).read(rows)
    assert list(got.status) == [st.OK, st.WRONG_BANDS, st.WRONG_SHAPE, st.EMPTY_HDU, st.CORRUPT_FILE, st.MISSING_FILE]
    np.testing.assert_array_equal(got.images[0, 0], good)
