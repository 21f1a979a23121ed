"""`relabel run` on catalogs with missing vote fractions, nulls, vector columns and case-sibling names."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml
from astropy.io import fits

from relabel.cli import main

from conftest import WORKFLOW_YAML, write_tiles, write_tiny_catalog, write_untrained_checkpoint


def _survey(root, passthrough=("MAG_R",), extra_columns=(), override=None, n=40):
    data = write_tiny_catalog(root / "catalog.fits", n=n)
    write_tiles(root, n=n)
    cols = []
    for name in data.dtype.names:
        if override and name in override:
            cols.append(override[name])
            continue
        dt = data.dtype[name]
        fmt = {"i8": "K", "f8": "D", "f4": "E", "i4": "J"}.get(dt.str[1:], f"{dt.itemsize}A")
        cols.append(fits.Column(name=name, format=fmt, array=data[name]))
    fits.BinTableHDU.from_columns(cols + list(extra_columns), name="CATALOG").writeto(root / "catalog.fits",
                                                                                     overwrite=True)
    wf = yaml.safe_load(WORKFLOW_YAML)
    wf["catalog"]["passthrough"] = list(passthrough)
    (root / "workflow.yaml").write_text(yaml.safe_dump(wf))
    return data, write_untrained_checkpoint(root / "model.pt")


def _run(root, model, *extra):
    return main(["run", str(root / "catalog.fits"), "--model", str(model), "--config", str(root / "workflow.yaml"),
                 "--out", str(root / "out"), "--cluster", "none", "--no-progress", "--shard-size", "16", *extra])


def test_nan_vote_fractions_still_predicted_with_null_original_label(tmp_path):
    # shared case nan-vote-fractions: the images are fine, only the catalog's label is unknown
    data = write_tiny_catalog(tmp_path / "x.fits")
    p_el, p_cs = data["P_EL"].astype(np.float32), data["P_CS"].astype(np.float32)
    p_el[[5, 20, 33]] = p_cs[[5, 20, 33]] = np.nan
    _, model = _survey(tmp_path, override={"P_EL": fits.Column(name="P_EL", format="E", array=p_el),
                                           "P_CS": fits.Column(name="P_CS", format="E", array=p_cs)})
    assert _run(tmp_path, model) == 0
    out = pd.read_parquet(tmp_path / "out").sort_values("row").reset_index(drop=True)
    assert (out["status"] == "ok").all() and out["label"].notna().all()
    assert out.index[out["label_original"].isna()].tolist() == [5, 20, 33]
    assert out["P_EL"].isna().sum() == 3
    summary = pd.read_json(tmp_path / "out" / "_summary.json", typ="series")
    assert summary["rows_label_missing"] == 3


def test_tnull_passthrough_written_as_null_and_ints_kept(tmp_path):
    n_exp = np.arange(40, dtype=np.int16) % 7
    n_exp[[3, 4]] = -99
    big = np.uint64(2**64 - 1) - np.arange(40, dtype=np.uint64)
    _, model = _survey(tmp_path, passthrough=("MAG_R", "N_EXP", "BIG"), extra_columns=[
        fits.Column(name="N_EXP", format="I", null=-99, array=n_exp),
        fits.Column(name="BIG", format="K", bzero=2**63, array=big)])
    assert _run(tmp_path, model) == 0
    table = pq.read_table(tmp_path / "out").sort_by("row")
    assert str(table.schema.field("N_EXP").type) == "int16" and table.column("N_EXP").null_count == 2
    assert table.column("N_EXP").to_pylist()[:6] == [0, 1, 2, None, None, 5]
    assert str(table.schema.field("BIG").type) == "uint64" and table.column("BIG").to_pylist()[0] == 2**64 - 1


def test_undefined_logical_passthrough_written_as_null(tmp_path):
    # a FITS logical's undefined value (stored byte 0) is neither True nor False
    flags = np.arange(40) % 3 == 0
    _, model = _survey(tmp_path, passthrough=("MAG_R", "STAR"), extra_columns=[
        fits.Column(name="STAR", format="L", array=flags)])
    path = tmp_path / "catalog.fits"
    with fits.open(path) as hdul:
        width, where = hdul[1].header["NAXIS1"], hdul[1].columns.names.index("STAR")
        offset = sum(hdul[1].columns[i].dtype.itemsize for i in range(where))
        start = hdul[1].fileinfo()["datLoc"]
    raw = bytearray(path.read_bytes())
    for row in (6, 7):
        raw[start + row * width + offset] = 0
    path.write_bytes(bytes(raw))
    assert _run(tmp_path, model) == 0
    table = pq.read_table(tmp_path / "out").sort_by("row")
    assert str(table.schema.field("STAR").type) == "bool"
    expected = [None if i in (6, 7) else bool(flags[i]) for i in range(40)]
    assert table.column("STAR").to_pylist() == expected
    assert set(table.column("status").to_pylist()) == {"ok"}


def test_vector_passthrough_becomes_a_list_column(tmp_path):
    # shared case vector-passthrough: a 5E column of magnitudes carried to the output
    mags = np.arange(200, dtype=np.float32).reshape(40, 5)
    _, model = _survey(tmp_path, passthrough=("MAG_R", "MODELMAG"),
                       extra_columns=[fits.Column(name="MODELMAG", format="5E", array=mags)])
    assert _run(tmp_path, model) == 0
    table = pq.read_table(tmp_path / "out").sort_by("row")
    kind = table.schema.field("MODELMAG").type
    assert kind.num_fields == 1 and str(kind.value_type) == "float" and str(kind).startswith("list<")
    np.testing.assert_array_equal(np.array(table.column("MODELMAG").to_pylist(), dtype=np.float32), mags)
    assert set(table.column("status").to_pylist()) == {"ok"}


def test_case_sibling_columns_refused_before_anything_is_written(tmp_path, capsys):
    # shared case case-duplicate-columns: text RA/DEC beside float ra/dec
    data = write_tiny_catalog(tmp_path / "x.fits")
    _, model = _survey(tmp_path, extra_columns=[fits.Column(name="ra", format="D", array=data["RA"]),
                                                fits.Column(name="dec", format="D", array=data["DEC"])])
    wf = yaml.safe_load((tmp_path / "workflow.yaml").read_text())
    wf["catalog"]["ra"], wf["catalog"]["dec"] = "ra", "dec"
    (tmp_path / "workflow.yaml").write_text(yaml.safe_dump(wf))
    assert _run(tmp_path, model) != 0
    err = capsys.readouterr().err
    assert "columns ra and RA differ only in case" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_parquet_dataset_run_keeps_nulls_ids_and_lists(tmp_path):
    # a 3-file Parquet catalog: uint64 ids near 2**64, a null passthrough value, a variable-length list column
    import pyarrow as pa

    data, model = _survey(tmp_path, passthrough=("MAG_R", "NOTE", "BANDS_SEEN"))
    frame = pd.DataFrame({n: data[n].astype(data.dtype[n].newbyteorder("=")) if data.dtype[n].kind != "S"
                          else data[n].astype(str) for n in data.dtype.names})
    ids = pa.array(np.uint64(2**64 - 1) - np.arange(40, dtype=np.uint64))
    note = pa.array([None if i % 9 == 4 else f"n{i}" for i in range(40)])
    seen = pa.array([list(range(i % 3)) for i in range(40)], type=pa.list_(pa.int16()))
    table = pa.Table.from_pandas(frame, preserve_index=False).set_column(0, "OBJID", ids)
    table = table.append_column("NOTE", note).append_column("BANDS_SEEN", seen)
    (tmp_path / "cat").mkdir()
    for part in range(3):
        pq.write_table(table.slice(part * 14, 14), tmp_path / "cat" / f"p{part}.parquet", row_group_size=5)
    assert main(["run", str(tmp_path / "cat"), "--model", str(model), "--config", str(tmp_path / "workflow.yaml"),
                 "--out", str(tmp_path / "out"), "--cluster", "none", "--no-progress", "--shard-size", "16"]) == 0
    out = pq.read_table(tmp_path / "out").sort_by("row")
    assert out.column("OBJID").to_pylist() == ids.to_pylist()
    assert out.column("NOTE").to_pylist() == note.to_pylist()
    assert out.column("BANDS_SEEN").to_pylist() == seen.to_pylist()
    assert set(out.column("status").to_pylist()) == {"ok"}


def test_parquet_passthrough_of_every_arrow_type_written_back_as_it_was(tmp_path):
    # time stamps, dates, decimals, bytes, structs, nullable booleans and dictionary-encoded text, as
    # catalogs exported from databases hold them; the cutout paths dictionary-encoded, the ids large_string
    import datetime
    import decimal

    import pyarrow as pa

    extra = {
        "WHEN": pa.array([datetime.datetime(2021, 3, 1, i % 24, tzinfo=datetime.timezone.utc) for i in range(40)],
                         type=pa.timestamp("ms", tz="UTC")),
        "NIGHT": pa.array([datetime.date(2021, 3, 1 + i % 28) for i in range(40)], type=pa.date32()),
        "ZP": pa.array([None if i == 3 else decimal.Decimal(f"{25 + i / 100:.2f}") for i in range(40)],
                       type=pa.decimal128(6, 2)),
        "RAW": pa.array([bytes([i, 0, 255]) for i in range(40)], type=pa.binary()),
        "SHAPE": pa.array([{"a": float(i), "b": f"s{i}"} for i in range(40)]),
        "STAR": pa.array([None if i % 7 == 0 else i % 2 == 0 for i in range(40)], type=pa.bool_()),
        "SURVEY": pa.array(["des", "hsc"] * 20).dictionary_encode(),
    }
    data, model = _survey(tmp_path, passthrough=("MAG_R", *extra))
    frame = pd.DataFrame({n: data[n].astype(data.dtype[n].newbyteorder("=")) if data.dtype[n].kind != "S"
                          else data[n].astype(str) for n in data.dtype.names})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(0, "OBJID", pa.array([f"J{i:04d}" for i in range(40)], type=pa.large_string()))
    where = table.schema.get_field_index("TILE")
    table = table.set_column(where, "TILE", table.column("TILE").combine_chunks().dictionary_encode())
    for name, values in extra.items():
        table = table.append_column(name, values)
    pq.write_table(table, tmp_path / "catalog.parquet", row_group_size=16)
    assert main(["run", str(tmp_path / "catalog.parquet"), "--model", str(model), "--config",
                 str(tmp_path / "workflow.yaml"), "--out", str(tmp_path / "out"), "--cluster", "none",
                 "--no-progress", "--shard-size", "16"]) == 0
    out = pq.read_table(tmp_path / "out").sort_by("row")
    assert set(out.column("status").to_pylist()) == {"ok"}
    assert out.column("OBJID").to_pylist() == [f"J{i:04d}" for i in range(40)]
    for name, values in extra.items():
        if name == "SURVEY":  # dictionary-encoded text is written as plain text, same values
            assert out.column(name).to_pylist() == values.to_pylist()
            continue
        assert out.schema.field(name).type == values.type, name
        assert out.column(name).to_pylist() == values.to_pylist(), name


def test_declared_codes_predicted_and_written_as_null(tmp_path):
    # shared case sentinel-values, run part: REDSHIFT -9999 and FLAG 99 declared missing; rows still predicted
    data = write_tiny_catalog(tmp_path / "x.fits")
    z = data["REDSHIFT"].astype(np.float32)
    z[[1, 2, 30]] = -9999
    flag = (np.arange(40) % 5).astype(np.int32)
    flag[[7, 30]] = 99
    _, model = _survey(tmp_path, passthrough=("MAG_R", "FLAG"),
                       override={"REDSHIFT": fits.Column(name="REDSHIFT", format="E", array=z)},
                       extra_columns=[fits.Column(name="FLAG", format="J", array=flag)])
    wf = yaml.safe_load((tmp_path / "workflow.yaml").read_text())
    wf["catalog"]["missing"] = {"REDSHIFT": [-9999], "FLAG": [99]}
    (tmp_path / "workflow.yaml").write_text(yaml.safe_dump(wf))
    assert _run(tmp_path, model) == 0
    table = pq.read_table(tmp_path / "out").sort_by("row")
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert [i for i, v in enumerate(table.column("REDSHIFT").to_pylist()) if v is None or v != v] == [1, 2, 30]
    assert str(table.schema.field("FLAG").type) == "int32"
    assert [i for i, v in enumerate(table.column("FLAG").to_pylist()) if v is None] == [7, 30]
    summary = pd.read_json(tmp_path / "out" / "_summary.json", typ="series")
    assert summary["null_values"]["FLAG"] == 2 and summary["rows_label_missing"] == 0


def test_variable_length_and_complex_passthrough_refused_before_anything_is_written(tmp_path, capsys):
    vla = np.array([np.arange(i % 3 + 1, dtype=np.float32) for i in range(40)], dtype=object)
    for name, column, phrase in (
            ("SPECTRUM", fits.Column(name="SPECTRUM", format="PE()", array=vla), "is a variable-length array"),
            ("PHASE", fits.Column(name="PHASE", format="C", array=np.arange(40) * 1j), "hold complex numbers")):
        root = tmp_path / name
        root.mkdir()
        _, model = _survey(root, passthrough=("MAG_R", name), extra_columns=[column])
        assert _run(root, model) == 2
        err = capsys.readouterr().err
        assert err.count("relabel: error:") == 1 and name in err and phrase in err, err
        assert not (root / "out").exists()
