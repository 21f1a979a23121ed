"""Integer cutouts with BLANK / BSCALE / BZERO, and tile-compressed images wherever they sit."""

import fitsio
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from relabel import status as st
from relabel.config import CutoutSpec
from relabel.cutouts import FileSource, TileSource
from relabel.cutouts.pixels import image_hdu, read_section

SIZE = 16
SCALE = 1e-4


def _stored(seed, n=1):
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(0, 0.05, (n, 1, SIZE, SIZE)) / SCALE).astype(np.int16)


def _int_hdu(stored, compressed=False, name=None, blank=-32768, zero=0.0):
    hdu = (fits.CompImageHDU(stored, name=name, compression_type="RICE_1") if compressed
           else fits.ImageHDU(stored, name=name) if name else fits.PrimaryHDU(stored))
    hdu.header["BSCALE"], hdu.header["BZERO"] = SCALE, zero
    if blank is not None:
        hdu.header["BLANK"] = blank
    return hdu


@pytest.mark.parametrize("compressed", [False, True])
def test_blank_pixels_get_the_nan_statuses(tmp_path, compressed):
    # shared case blank-int-cutouts: 2 blank columns -> nan_filled; a blank survey edge (41%) -> too_many_nan
    names, expected, want_images = [], [], []
    for i in range(6):
        stored = _stored(i)
        if i < 3:
            stored[..., 10:12] = -32768
        else:
            stored[..., :7] = -32768
        hdu = _int_hdu(stored[0], compressed=compressed)
        hdul = fits.HDUList([fits.PrimaryHDU(), hdu]) if compressed else fits.HDUList([hdu])
        hdul.writeto(tmp_path / f"g{i}.fits")
        names.append(f"g{i}.fits")
        expected.append(st.NAN_FILLED if i < 3 else st.TOO_MANY_NAN)
        physical = stored[0].astype(np.float64) * SCALE
        physical[stored[0] == -32768] = 0.0  # what a NaN-filled cutout holds
        want_images.append(physical.astype(np.float32))
    with FileSource(CutoutSpec(layout="files", root=tmp_path, size=SIZE)) as source:
        got = source.read(pd.DataFrame({"CUTOUT": names}))
    assert list(got.status) == expected
    for i in range(3):
        np.testing.assert_array_equal(got.images[i], want_images[i])
        assert np.abs(got.images[i]).max() < 1  # no -3.2768 reaches the network


def test_blank_pixels_in_an_integer_tile_cube(tmp_path):
    stored = _stored(7, n=5)
    stored[1, :, 3, 3] = -32768
    stored[4, :, :, :8] = -32768
    _int_hdu(stored, zero=1.5).writeto(tmp_path / "t.fits")
    rows = pd.DataFrame({"TILE": ["t.fits"] * 5, "TILE_INDEX": np.arange(5)})
    with TileSource(CutoutSpec(root=tmp_path, size=SIZE)) as source:
        got = source.read(rows)
    assert list(got.status) == [st.OK, st.NAN_FILLED, st.OK, st.OK, st.TOO_MANY_NAN]
    np.testing.assert_array_equal(got.images[0], (stored[0] * SCALE + 1.5).astype(np.float32))
    assert got.images[1][0, 3, 3] == 0


def test_agrees_with_astropy_where_no_blank(tmp_path):
    stored = _stored(3, n=4)
    stored[2, 0, 0, 0] = -32768
    _int_hdu(stored, zero=-2.0).writeto(tmp_path / "t.fits")
    expected = fits.getdata(tmp_path / "t.fits")  # astropy: scaled, BLANK -> NaN
    with fitsio.FITS(str(tmp_path / "t.fits")) as f:
        got = read_section(f[0], 1, 4)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected[1:4]))
    np.testing.assert_allclose(got, expected[1:4], rtol=1e-6)


def test_compressed_image_found_by_position_or_extname(tmp_path):
    stored = _stored(9, n=2)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2), np.float32), name="MASK"),
                  _int_hdu(stored, compressed=True, name="SCI", blank=None)]).writeto(tmp_path / "c.fits")
    with fitsio.FITS(str(tmp_path / "c.fits")) as f:
        assert image_hdu(f).get_extname() == "MASK"  # the first image holding data
        sci = image_hdu(f, "sci")
        assert sci.get_extname() == "SCI"
        np.testing.assert_allclose(read_section(sci, 0, 2), stored * SCALE, rtol=1e-6)
        assert image_hdu(f, "VARIANCE") is None
    fits.HDUList([fits.PrimaryHDU(), _int_hdu(stored, compressed=True, name="SCI")]).writeto(tmp_path / "d.fits")
    with TileSource(CutoutSpec(root=tmp_path, size=SIZE)) as source:
        got = source.read(pd.DataFrame({"TILE": ["d.fits", "d.fits"], "TILE_INDEX": [0, 1]}))
    assert list(got.status) == [st.OK, st.OK]
    np.testing.assert_allclose(got.images, stored * SCALE, rtol=1e-6)
