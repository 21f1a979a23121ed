import numpy as np
import pandas as pd
import pytest
import fitsio

from relabel.catalog import open_catalog
from relabel.errors import CatalogError

from conftest import write_tiny_catalog


def test_fits_row_range_native_byte_order(tmp_path):
    data = write_tiny_catalog(tmp_path / "c.fits", n=40)
    cat = open_catalog(tmp_path / "c.fits")
    assert cat.nrows == 40 and "P_CS" in cat.columns
    df = cat.read(["OBJID", "P_CS", "TILE"], 10, 25)
    assert list(df.index) == list(range(10, 25))
    np.testing.assert_array_equal(df["OBJID"].to_numpy(), data["OBJID"][10:25])
    # bit-identical float32 values, converted to native order so Arrow accepts them
    assert df["P_CS"].dtype == np.float32
    assert df["P_CS"].to_numpy().tobytes() == data["P_CS"][10:25].astype("<f4").tobytes()
    assert df["TILE"].iloc[0] == "tiles/tile_00000.fits"
    pa_table = __import__("pyarrow").Table.from_pandas(df)  # would raise on big-endian buffers
    assert pa_table.num_rows == 15


def test_read_all_is_chunked_and_complete(tmp_path):
    data = write_tiny_catalog(tmp_path / "c.fits", n=40)
    cat = open_catalog(tmp_path / "c.fits")
    df = cat.read_all(["OBJID"], chunk_rows=7)
    np.testing.assert_array_equal(df["OBJID"].to_numpy(), data["OBJID"])
    assert sum(len(c) for c in cat.iter_chunks(["OBJID"], 7)) == 40


def test_hdu_by_name_and_number(tmp_path):
    write_tiny_catalog(tmp_path / "c.fits")
    assert open_catalog(tmp_path / "c.fits", hdu="CATALOG").nrows == 40
    assert open_catalog(tmp_path / "c.fits", hdu=1).nrows == 40
    with pytest.raises(CatalogError, match=r"no HDU 3 \(the file has 2\)"):
        open_catalog(tmp_path / "c.fits", hdu=3)
    with pytest.raises(CatalogError, match="HDU 0 is not a table"):
        open_catalog(tmp_path / "c.fits", hdu=0)
    with pytest.raises(CatalogError, match="no HDU named 'GALAXIES'"):
        open_catalog(tmp_path / "c.fits", hdu="GALAXIES")


def test_missing_column_lists_missing_and_available(tmp_path):
    write_tiny_catalog(tmp_path / "c.fits")
    cat = open_catalog(tmp_path / "c.fits")
    with pytest.raises(CatalogError) as err:
        cat.require(["OBJID", "P_SP", "Z"], what="workflow x.yaml")
    msg = str(err.value)
    assert "P_SP, Z" in msg and "available: OBJID, RA" in msg and "c.fits" in msg


def test_non_numeric_column_is_named(tmp_path):
    write_tiny_catalog(tmp_path / "c.fits")
    cat = open_catalog(tmp_path / "c.fits")
    with pytest.raises(CatalogError, match="column TILE must be numeric"):
        cat.require(["TILE"], numeric=["TILE"])


def test_not_fits_missing_and_image_only(tmp_path):
    (tmp_path / "x.fits").write_text("hello, not a FITS file")
    with pytest.raises(CatalogError, match="not a FITS file"):
        open_catalog(tmp_path / "x.fits")
    with pytest.raises(CatalogError, match="does not exist"):
        open_catalog(tmp_path / "none.fits")
    fitsio.write(str(tmp_path / "img.fits"), np.zeros((4, 4), "f4"))
    with pytest.raises(CatalogError, match="holds no table HDU"):
        open_catalog(tmp_path / "img.fits")


def test_empty_table_reads_zero_rows(tmp_path):
    write_tiny_catalog(tmp_path / "c.fits", n=0)
    cat = open_catalog(tmp_path / "c.fits")
    assert cat.nrows == 0
    df = cat.read(["OBJID", "P_CS"])
    assert len(df) == 0 and df["P_CS"].dtype == np.float32


def test_out_of_range_rows(tmp_path):
    write_tiny_catalog(tmp_path / "c.fits", n=5)
    with pytest.raises(CatalogError, match="row range 3:9 is outside the table's 5 rows"):
        open_catalog(tmp_path / "c.fits").read(["OBJID"], 3, 9)


def test_parquet_file_and_dataset_ranges(tmp_path):
    df = pd.DataFrame({"OBJID": np.arange(30), "P_CS": np.linspace(0, 1, 30).astype("f4")})
    df.to_parquet(tmp_path / "one.parquet")
    folder = tmp_path / "ds"
    folder.mkdir()
    for i in range(3):
        df.iloc[i * 10 : (i + 1) * 10].to_parquet(folder / f"part-{i}.parquet")
    (folder / "_summary.json").write_text("{}")  # relabel output folders hold such files
    for path in (tmp_path / "one.parquet", folder):
        cat = open_catalog(path)
        assert cat.nrows == 30 and cat.columns == ["OBJID", "P_CS"]
        got = cat.read(["P_CS", "OBJID"], 8, 23)
        np.testing.assert_array_equal(got["OBJID"].to_numpy(), np.arange(8, 23))
        assert got["P_CS"].dtype == np.float32


def test_corrupt_parquet(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(CatalogError, match="not a readable Parquet"):
        open_catalog(tmp_path / "bad.parquet")


@pytest.mark.parametrize("name", ["catalog", "catalog.parq", "catalog.PARQUET", "catalog.pqt"])
def test_parquet_is_known_by_its_content_whatever_its_name(tmp_path, name):
    import pandas as pd

    pd.DataFrame({"OBJID": [3, 4], "P_CS": [0.5, 0.25]}).to_parquet(tmp_path / name)
    assert open_catalog(tmp_path / name).read_all(["OBJID", "P_CS"]).to_dict("list") == {"OBJID": [3, 4],
                                                                                        "P_CS": [0.5, 0.25]}
    (tmp_path / "notes").write_text("PAR1 is how a Parquet file starts, and ends, but this one does not")
    with pytest.raises(CatalogError, match=r"notes: not a FITS file .* and not Parquet \(no PAR1 magic\)"):
        open_catalog(tmp_path / "notes")
