"""FITS tables read as the standard says, with astropy.io.fits / astropy.table as the oracle."""

import warnings

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from relabel.catalog import open_catalog
from relabel.catalog.fits import plan_columns
from relabel.errors import CatalogError

N = 37
RNG = np.random.default_rng(5)


def _binary_columns():
    """Every BINTABLE TFORM type times each convention: plain, scaled, unsigned offsets, TNULL, NaN, text padding."""
    ints = RNG.integers(-1000, 1000, N)
    null_rows = np.arange(N) % 5 == 2
    nan_rows = np.arange(N) % 7 == 3
    f4 = RNG.normal(size=N).astype(np.float32)
    f4[nan_rows] = np.nan
    f8 = RNG.normal(size=N)
    f8[nan_rows] = np.nan
    text = np.array([("g%d" % i) + " " * (i % 3) if i % 6 else "" for i in range(N)])
    cols = [
        fits.Column(name="LOGIC", format="L", array=np.arange(N) % 3 == 0),
        fits.Column(name="BITS", format="12X", array=RNG.random((N, 12)) < 0.5),
        fits.Column(name="BYTE", format="B", array=(ints % 200 + 20).astype(np.uint8)),
        fits.Column(name="SBYTE", format="B", bzero=-128, array=(ints % 120).astype(np.int8)),
        fits.Column(name="SHORT", format="I", array=ints.astype(np.int16)),
        fits.Column(name="INT", format="J", array=(ints * 100_000).astype(np.int32)),
        fits.Column(name="LONG", format="K", array=ints.astype(np.int64) * 10**15 + 7),
        fits.Column(name="USHORT", format="I", bzero=32768, array=(ints + 60_000).astype(np.uint16)),
        fits.Column(name="UINT", format="J", bzero=2**31, array=(ints + 4_000_000_000).astype(np.uint32)),
        fits.Column(name="ULONG", format="K", bzero=2**63, array=np.uint64(2**64 - 1) - np.abs(ints).astype(np.uint64)),
        fits.Column(name="SNULL", format="I", null=-99, array=np.where(null_rows, -99, ints).astype(np.int16)),
        fits.Column(name="JNULL", format="J", null=-1, array=np.where(null_rows, -1, ints + 5000).astype(np.int32)),
        fits.Column(name="KNULL", format="K", null=-9, array=np.where(null_rows, -9, ints * 10**12).astype(np.int64)),
        fits.Column(name="BNULL", format="B", null=255, array=np.where(null_rows, 255, ints % 200 + 20).astype(np.uint8)),
        fits.Column(name="FLOAT", format="E", array=f4),
        fits.Column(name="DOUBLE", format="D", array=f8),
        fits.Column(name="TEXT", format="10A", array=text),
        fits.Column(name="VEC", format="3E", array=RNG.normal(size=(N, 3)).astype(np.float32)),
        fits.Column(name="VECJ", format="2J", array=RNG.integers(-5, 5, (N, 2)).astype(np.int32)),
        # scaled integers: TSCALn/TZEROn set in the header below (fitsio misreads these)
        fits.Column(name="SCALEDI", format="I", array=ints.astype(np.int16)),
        fits.Column(name="SCALEDJ", format="J", array=(ints * 7).astype(np.int32)),
        fits.Column(name="OFFSETJ", format="J", array=ints.astype(np.int32)),
        fits.Column(name="SCALEDNUL", format="I", array=np.where(null_rows, -32768, ints).astype(np.int16)),
        fits.Column(name="AFTER", format="D", array=np.arange(N) * 0.5),
    ]
    scaling = {"SCALEDI": (1e-3, 0.0), "SCALEDJ": (0.25, 10.0), "OFFSETJ": (1.0, 1000.0),
               "SCALEDNUL": (0.01, 5.0)}
    return cols, scaling


def _write_binary(path):
    cols, scaling = _binary_columns()
    hdu = fits.BinTableHDU.from_columns(cols, name="CATALOG")
    names = hdu.columns.names
    for name, (scale, zero) in scaling.items():
        k = names.index(name) + 1
        hdu.header[f"TSCAL{k}"], hdu.header[f"TZERO{k}"] = scale, zero
    hdu.header[f"TNULL{names.index('SCALEDNUL') + 1}"] = -32768
    hdu.writeto(path, overwrite=True)


def _oracle(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Table.read(path, hdu=1)


def _missing(series: pd.Series) -> np.ndarray:
    return np.array([v is None or (np.ndim(v) == 0 and pd.isna(v)) for v in series], dtype=bool)


def _assert_same_as_astropy(frame: pd.DataFrame, table: Table, rows: slice):
    # SCALEDNUL: astropy compares TNULL with the scaled value; the standard (and relabel) with the stored one
    for name in [c for c in table.colnames if c != "SCALEDNUL"]:
        expected = table[name][rows]
        mask = np.ma.getmaskarray(expected)
        if mask.ndim > 1:
            mask = mask.all(axis=tuple(range(1, mask.ndim)))
        got = frame[name]
        np.testing.assert_array_equal(_missing(got), mask, err_msg=f"mask of {name}")
        keep = ~mask
        want = np.asarray(expected.data.data if hasattr(expected.data, "data") else expected)[keep]
        values = got.to_numpy()[keep]
        if want.dtype.kind == "S":
            want = np.char.rstrip(want.astype(str))
        if want.ndim > 1:
            values = np.stack(values) if len(values) else values
        if want.dtype.kind in "iu":
            assert all(int(a) == int(b) for a, b in zip(values.ravel(), want.ravel())), name  # exact, never via float
        else:
            np.testing.assert_array_equal(values.astype(want.dtype), want, err_msg=name)


def test_every_bintable_type_and_convention_matches_astropy(tmp_path):
    path = tmp_path / "all.fits"
    _write_binary(path)
    cat = open_catalog(path)
    table = _oracle(path)
    assert cat.columns == table.colnames
    _assert_same_as_astropy(cat.read_all(cat.columns), table, slice(None))
    # a row range, and columns read together with the scaled ones (fitsio shifts the neighbours of those)
    part = cat.read(["SHORT", "SCALEDI", "TEXT", "SCALEDJ", "AFTER"], 5, 29)
    _assert_same_as_astropy(part, table[["SHORT", "SCALEDI", "TEXT", "SCALEDJ", "AFTER"]], slice(5, 29))


def test_scaled_64bit_integer_matches_astropy_fits_rec(tmp_path):
    # astropy 8.0's Table.read fails on a K column with TZERO other than 2**63 (uint=True); its FITS_rec with
    # uint=False applies the same formula
    path = tmp_path / "k.fits"
    stored = RNG.integers(-10**6, 10**6, N).astype(np.int64)
    hdu = fits.BinTableHDU.from_columns([fits.Column(name="K", format="K", array=stored),
                                         fits.Column(name="AFTER", format="E", array=np.ones(N, np.float32))])
    hdu.header["TSCAL1"], hdu.header["TZERO1"] = 2.0, -3.0
    hdu.writeto(path)
    with fits.open(path, uint=False) as hdul:
        expected = np.array(hdul[1].data["K"])
    frame = open_catalog(path).read(["K", "AFTER"], 3, 30)
    np.testing.assert_array_equal(frame["K"].to_numpy(), expected[3:30])
    np.testing.assert_array_equal(frame["K"].to_numpy(), stored[3:30] * 2.0 - 3.0)
    assert (frame["AFTER"] == 1).all()


def test_scaled_null_and_logical_columns_take_the_astropy_route(tmp_path):
    path = tmp_path / "all.fits"
    _write_binary(path)
    plans = {p.name: p.route for p in plan_columns(fits.getheader(path, 1), ascii_table=False)}
    assert {n for n, r in plans.items() if r == "astropy"} == {
        "LOGIC", "SNULL", "JNULL", "KNULL", "BNULL", "SCALEDI", "SCALEDJ", "OFFSETJ", "SCALEDNUL"}
    assert plans["USHORT"] == plans["ULONG"] == plans["SBYTE"] == plans["TEXT"] == "fitsio"


def test_types_as_read(tmp_path):
    path = tmp_path / "all.fits"
    _write_binary(path)
    frame = open_catalog(path).read_all(["ULONG", "KNULL", "SNULL", "SCALEDI", "TEXT", "VEC", "FLOAT"])
    assert frame["ULONG"].dtype == np.uint64 and int(frame["ULONG"].iloc[0]) > 2**63
    assert str(frame["KNULL"].dtype) == "Int64" and str(frame["SNULL"].dtype) == "Int16"
    assert frame["SCALEDI"].dtype == np.float64 and frame["FLOAT"].dtype == np.float32
    assert frame["FLOAT"].dtype.byteorder in "=<|"
    assert frame["TEXT"].iloc[1] == "g1" and pd.isna(frame["TEXT"].iloc[0])
    assert frame["VEC"].iloc[0].shape == (3,)


def test_scaled_null_follows_the_stored_integer(tmp_path):
    # FITS 4.0 section 7.3.2: TNULLn is compared with the stored integer, before TSCAL/TZERO
    path = tmp_path / "all.fits"
    _write_binary(path)
    frame = open_catalog(path).read_all(["SCALEDNUL"])
    null_rows = np.arange(N) % 5 == 2
    np.testing.assert_array_equal(frame["SCALEDNUL"].isna().to_numpy(), null_rows)


def _ascii_table(path, with_null=True):
    cols = [
        fits.Column(name="I", format="I6", array=np.array([1, 2, 3, 4, 5])),
        fits.Column(name="F", format="F8.3", array=np.array([1.5, 2.5, 3.5, 4.5, 5.5])),
        fits.Column(name="E", format="E12.4", array=np.array([1e5, -2.5, 3.5, 4.5, 0.0])),
        fits.Column(name="D", format="D20.10", array=np.array([1e-5, 2.5, 3.5, 4.5, 6.0])),
        fits.Column(name="A", format="A8", array=np.array(["ab", "c", "x y", "d", "e"])),
        fits.Column(name="S", format="I6", array=np.array([10, 20, 30, 40, 50])),
    ]
    if with_null:
        cols.append(fits.Column(name="N", format="I6", null="-99", array=np.array([1, -99, 3, 4, 5])))
    hdu = fits.TableHDU.from_columns(cols, name="VIZIER")
    hdu.header["TSCAL6"], hdu.header["TZERO6"] = 0.5, 1.0
    hdu.writeto(path, overwrite=True)
    return fits.getheader(path, 1)


def _blank_field(path, row, column):
    header = fits.getheader(path, 1)
    with fits.open(path) as hdul:
        offset = hdul[1]._data_offset
    k = header["TTYPE%d" % 1] and [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)].index(column) + 1
    width = int(header[f"TFORM{k}"][1:].split(".")[0])
    start = offset + row * header["NAXIS1"] + header[f"TBCOL{k}"] - 1
    raw = bytearray(path.read_bytes())
    raw[start:start + width] = b" " * width
    path.write_bytes(bytes(raw))


def test_ascii_table_values_match_astropy(tmp_path):
    path = tmp_path / "ascii.fits"
    _ascii_table(path, with_null=False)
    cat = open_catalog(path)
    table = _oracle(path)
    frame = cat.read_all(cat.columns)
    for name in ("I", "F", "E", "D", "S"):
        np.testing.assert_allclose(frame[name].astype(float), np.asarray(table[name], dtype=float), rtol=0, atol=0)
    assert list(frame["A"]) == ["ab", "c", "x y", "d", "e"]


def test_ascii_blank_fields_and_tnull_are_missing(tmp_path):
    # astropy reads a blank I field and the TNULL string as 0; the standard says they are undefined
    path = tmp_path / "ascii.fits"
    _ascii_table(path)
    _blank_field(path, 2, "I")
    _blank_field(path, 1, "F")
    _blank_field(path, 3, "S")
    frame = open_catalog(path).read_all(["I", "F", "S", "N", "A"])
    assert list(frame["I"].isna()) == [False, False, True, False, False]
    assert list(frame["F"].isna()) == [False, True, False, False, False]
    assert list(frame["N"].isna()) == [False, True, False, False, False]
    assert frame["S"].tolist()[:3] == [6.0, 11.0, 16.0] and np.isnan(frame["S"].iloc[3])
    assert int(frame["I"].iloc[4]) == 5


def test_case_siblings_refused_naming_both(tmp_path):
    path = tmp_path / "c.fits"
    cols = [fits.Column(name="RA", format="12A", array=np.array(["10:00:00", "11:00:00"])),
            fits.Column(name="ra", format="D", array=np.array([150.0, 165.0])),
            fits.Column(name="Z", format="D", array=np.array([0.1, 0.2]))]
    fits.BinTableHDU.from_columns(cols).writeto(path)
    cat = open_catalog(path)
    with pytest.raises(CatalogError, match=r"columns ra and RA differ only in case"):
        cat.require(["ra", "Z"], what="relabel run")
    with pytest.raises(CatalogError, match=r"columns RA and ra differ only in case"):
        cat.read(["RA"])
    assert cat.read(["Z"])["Z"].tolist() == [0.1, 0.2]
    # Without a sibling, FITS names compare regardless of case (FITS 4.0, 7.2.2); the frame keeps the name asked.
    cat.require(["z"], numeric=["z"])
    assert cat.read(["z"])["z"].tolist() == [0.1, 0.2] and cat.dtype("z") == np.float64
    assert cat.read_rows(["z", "Z"], np.array([1, 0])).to_dict("list") == {"z": [0.2, 0.1], "Z": [0.2, 0.1]}


def test_fits_column_names_match_regardless_of_case_end_to_end(tmp_path):
    from astropy.table import Table

    table = Table({"objid": [1, 2, 3], "p_el": [0.9, 0.1, 0.5], "ra": [150.0, 150.1, 150.2]})
    table["ra"].unit = "deg"
    table.write(tmp_path / "lower.fits")
    cat = open_catalog(tmp_path / "lower.fits")
    frame = cat.read_all(["OBJID", "P_EL", "RA"])
    assert frame.columns.tolist() == ["OBJID", "P_EL", "RA"] and frame["OBJID"].tolist() == [1, 2, 3]
    assert cat.unit("RA") == "deg"
    table.to_pandas().to_parquet(tmp_path / "lower.parquet")  # Parquet names are case-sensitive: a hint instead
    with pytest.raises(CatalogError, match=r"needs column\(s\) OBJID \(the catalog has objid\)"):
        open_catalog(tmp_path / "lower.parquet").require(["OBJID"])


def test_a_truncated_or_unpadded_fits_table_is_refused_naming_the_file(tmp_path):
    import fitsio

    path = tmp_path / "c.fits"
    fitsio.write(str(path), np.array([(i, 0.5) for i in range(200)], [("OBJID", "i8"), ("P", "f8")]))
    raw = path.read_bytes()
    hdu = fitsio.FITS(str(path))[1]
    data_end = hdu.get_offsets()["data_start"] + 16 * 200
    (tmp_path / "cut.fits").write_bytes(raw[:data_end - 100])
    with pytest.raises(CatalogError, match=r"cut.fits: truncated: its table HDU 1 \(200 rows\) ends at byte "
                                           rf"{data_end:,} but the file has {data_end - 100:,} bytes"):
        open_catalog(tmp_path / "cut.fits")
    (tmp_path / "unpadded.fits").write_bytes(raw[:data_end])
    with pytest.raises(CatalogError, match=r"unpadded.fits: its last block is not padded to a multiple of 2880"):
        open_catalog(tmp_path / "unpadded.fits")
    (tmp_path / "unpadded.fits").write_bytes(raw[:data_end] + bytes(len(raw) - data_end))  # as the message says
    assert open_catalog(tmp_path / "unpadded.fits").read_all(["OBJID"])["OBJID"].tolist() == list(range(200))


@pytest.mark.parametrize("name, packing", [("c.fits.gz", "gzip"), ("c.fits.bz2", "bzip2"),
                                           ("gzipped_but_named.fits", "gzip")])
def test_a_catalog_compressed_whole_is_read_by_its_content_not_its_name(tmp_path, name, packing):
    import bz2
    import gzip

    import fitsio

    table = np.array([(i, 0.25 * i) for i in range(300)], [("OBJID", "i8"), ("P", "f8")])
    fitsio.write(str(tmp_path / "plain.fits"), table)
    pack = gzip.compress if packing == "gzip" else bz2.compress
    (tmp_path / name).write_bytes(pack((tmp_path / "plain.fits").read_bytes()))
    cat = open_catalog(tmp_path / name)
    assert cat.nrows == 300  # not refused as truncated: the compressed size says nothing of the table's
    frame = cat.read_all(["OBJID", "P"])
    assert frame["OBJID"].tolist() == list(range(300)) and frame["P"].tolist() == [0.25 * i for i in range(300)]


def test_vector_column_refused_where_a_number_is_needed(tmp_path):
    path = tmp_path / "v.fits"
    fits.BinTableHDU.from_columns([fits.Column(name="MAGS", format="5E", array=np.zeros((3, 5), np.float32))]).writeto(path)
    with pytest.raises(CatalogError, match=r"column MAGS holds vectors \(5 values per row\)"):
        open_catalog(path).require(["MAGS"], numeric=["MAGS"], what="relabel bias")


def test_astropy_table_and_dataframe_in_memory(tmp_path):
    path = tmp_path / "all.fits"
    _write_binary(path)
    table = _oracle(path)
    from_table = open_catalog(table)
    _assert_same_as_astropy(from_table.read_all(from_table.columns), table, slice(None))
    frame = pd.DataFrame({"OBJID": np.array([2**64 - 2, 5], dtype=np.uint64), "P": [0.5, np.nan]})
    cat = open_catalog(frame)
    assert cat.n_rows == 2 and cat.columns == ["OBJID", "P"]
    assert int(cat.read(["OBJID"], 0, 1)["OBJID"].iloc[0]) == 2**64 - 2


def test_scattered_rows_read_alone_in_any_order(tmp_path):
    path = tmp_path / "all.fits"
    _write_binary(path)
    rows = np.array([30, 2, 17, 3, 36, 0])
    frame = open_catalog(path).read_rows(["SNULL", "SCALEDI", "TEXT", "VEC", "LONG"], rows)
    assert frame.index.tolist() == rows.tolist()
    table = _oracle(path)[rows.tolist()]
    _assert_same_as_astropy(frame.reset_index(drop=True), table[["SNULL", "SCALEDI", "TEXT", "VEC", "LONG"]],
                            slice(None))


def test_variable_length_and_complex_columns_read_right_or_are_refused_by_name(tmp_path):
    import pytest
    from astropy.io import fits

    from relabel.catalog import open_catalog
    from relabel.errors import CatalogError

    n = 5
    cols = [fits.Column(name="OBJID", format="K", array=np.arange(n)),
            fits.Column(name="CPLX", format="C", array=np.arange(n) * (1 + 2j)),
            fits.Column(name="VLA", format="PE()",
                        array=np.array([np.arange(i + 1, dtype=np.float32) for i in range(n)], dtype=object)),
            fits.Column(name="QLA", format="QD()",
                        array=np.array([np.arange(i, dtype=np.float64) for i in range(n)], dtype=object))]
    fits.BinTableHDU.from_columns(cols).writeto(tmp_path / "odd.fits")
    cat = open_catalog(tmp_path / "odd.fits")
    # complex values come back as astropy reads them
    assert cat.read(["CPLX"], 0, n)["CPLX"].tolist() == [complex(i, 2 * i) for i in range(n)]
    # variable-length arrays: a fixed-size reader pads them with zeros that look like data; refused, named
    for name, tform in (("VLA", "PE"), ("QLA", "QD")):
        with pytest.raises(CatalogError, match=rf"column {name} is a variable-length array \(TFORM {tform}"):
            cat.read([name], 0, n)
        with pytest.raises(CatalogError, match=rf"column {name} is a variable-length array"):
            cat.require(["OBJID", name], what="relabel run")
    cat.require(["OBJID", "CPLX"])  # the other columns stay usable


def _write_logicals(path):
    """Scalar and vector logical columns with undefined (byte 0) values poked into the stored rows."""
    flags = np.array([True, False, True, False, True])
    pairs = np.array([[True, False], [False, False], [True, True], [False, True], [True, False]])
    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name="ID", format="K", array=np.arange(5)),
        fits.Column(name="FLAG", format="L", array=flags),
        fits.Column(name="PAIR", format="2L", array=pairs),
    ])
    hdu.writeto(path)
    raw = bytearray(path.read_bytes())
    start = 2880 * 2  # primary header, table header: the rows follow (8 + 1 + 2 bytes each)
    raw[start + 2 * 11 + 8] = 0  # FLAG of row 2
    raw[start + 4 * 11 + 10] = 0  # second PAIR element of row 4
    path.write_bytes(bytes(raw))


def test_undefined_logical_values_are_missing_not_false(tmp_path):
    # fitsio and astropy both read an undefined logical as False (FITS 4.0, 7.3.3.1: byte 0 is undefined)
    path = tmp_path / "logical.fits"
    _write_logicals(path)
    frame = open_catalog(path).read(["ID", "FLAG", "PAIR"])
    assert frame["FLAG"].isna().tolist() == [False, False, True, False, False]
    assert frame["FLAG"].dropna().astype(bool).tolist() == [True, False, False, True]
    assert [list(v) for v in frame["PAIR"][:4]] == [[True, False], [False, False], [True, True], [False, True]]
    assert list(frame["PAIR"][4]) == [True, None]
    scattered = open_catalog(path).read_rows(["FLAG"], np.array([2, 0]))
    assert scattered["FLAG"].isna().tolist() == [True, False]


def test_logical_without_undefined_values_stays_plain_bool(tmp_path):
    path = tmp_path / "plain.fits"
    Table({"FLAG": np.array([True, False, True])}).write(path)
    values = open_catalog(path).read(["FLAG"])["FLAG"]
    assert values.dtype == bool and values.tolist() == [True, False, True]


@pytest.mark.parametrize("writer", ["fitsio", "astropy"])
def test_variable_length_text_is_read_as_text(tmp_path, writer):
    # fitsio writes Python strings (e.g. a pandas text column's records) as TFORM 1PA(e)
    import fitsio

    paths = ["cutouts/1.fits  ", "cutouts/22.fits", "", "x.png"]
    path = tmp_path / "vla_text.fits"
    if writer == "fitsio":
        table = np.zeros(4, dtype=[("OBJID", "i8"), ("CUTOUT", "O")])
        table["OBJID"], table["CUTOUT"] = np.arange(4), paths
        fitsio.write(str(path), table)
    else:
        fits.BinTableHDU.from_columns([fits.Column(name="OBJID", format="K", array=np.arange(4)),
                                       fits.Column(name="CUTOUT", format="PA()", array=np.array(paths))
                                       ]).writeto(path)
    assert fits.getheader(path, 1)["TFORM2"].lstrip("0123456789").startswith("PA")
    cat = open_catalog(path)
    cat.require(["OBJID", "CUTOUT"], what="relabel run")
    values = cat.read(["CUTOUT"])["CUTOUT"]
    assert values.isna().tolist() == [False, False, True, False]
    assert values.dropna().tolist() == ["cutouts/1.fits", "cutouts/22.fits", "x.png"]
    assert cat.read_rows(["CUTOUT"], np.array([3, 0]))["CUTOUT"].tolist() == ["x.png", "cutouts/1.fits"]
