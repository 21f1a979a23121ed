"""Galaxy ids of any type through train, evaluate and run; text padding; null and repeated ids refused."""

import json

import fitsio
import numpy as np
import pandas as pd
import pytest

from relabel.catalog.ids import check_ids
from relabel.cli import main
from relabel.errors import CatalogError
from relabel.train.split import id_bits, validation_mask

from conftest import WORKFLOW_YAML, write_tiles, write_tiny_catalog

N = 192


def _old_integer_split(ids, seed, fraction):
    """The split as relabel 0.1 computed it for integer ids (checkpoints record it): must not change."""
    ids = np.asarray(ids).astype(np.int64).view(np.uint64)
    seed_mix = np.full(ids.shape, (int(seed) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (ids ^ seed_mix) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53) < fraction


def test_integer_split_unchanged_for_every_integer_type():
    ids = np.random.default_rng(0).integers(-2**62, 2**62, 5000)
    want = _old_integer_split(ids, 3, 0.25)
    np.testing.assert_array_equal(validation_mask(ids, 3, 0.25), want)
    np.testing.assert_array_equal(validation_mask(pd.array(ids, dtype="Int64"), 3, 0.25), want)
    big = np.array([2**64 - 1, 2**63 + 5, 12], dtype=np.uint64)  # uint64 near 2**64: never through float
    assert len(set(id_bits(big).tolist())) == 3 and id_bits(big)[0] == np.uint64(2**64 - 1)
    with pytest.raises(CatalogError, match="floating-point"):
        id_bits(np.array([1.0, 2.0]))


def test_text_split_is_a_hash_of_the_value():
    names = np.array([f"J{i:09.5f}+00.00000" for i in range(4000)], dtype=object)
    mask = validation_mask(names, 0, 0.25)
    assert 0.22 < mask.mean() < 0.28
    padded = np.array([n + "   " for n in names], dtype=object)  # FITS blank padding is not part of the id
    np.testing.assert_array_equal(validation_mask(padded, 0, 0.25), mask)
    np.testing.assert_array_equal(validation_mask(names[::-1], 0, 0.25), mask[::-1])


@pytest.mark.parametrize("ids, message", [
    (pd.Series([5, 6, 5, 7, 6]), r"repeats 2 id\(s\) on 4 rows \(rows 0, 1, 2, 4; e.g. 5 on rows 0, 2\)"),
    (pd.Series(["a", "b ", "b", "c"], dtype=object), r"repeats 1 id\(s\) on 2 rows \(rows 1, 2"),
    (pd.Series(pd.array([1, None, 3], dtype="UInt64")), r"1 null value\(s\) \(rows 1\)"),
    (pd.Series(["J1", "", None], dtype=object), r"2 null value\(s\) \(rows 1, 2\)"),
    (pd.Series([1.0, 2.0]), "floating-point"),
])
def test_null_and_repeated_ids_name_their_rows(ids, message):
    with pytest.raises(CatalogError, match=message):
        check_ids(ids, "cat.fits", "OBJID")


def _text_id_survey(root):
    """The tiny survey with OBJID as a 24-character blank-padded IAU-style name and TILE blank-padded too."""
    data = write_tiny_catalog(root / "catalog.fits", n=N)
    write_tiles(root, n=N)
    names = [f"J{ra:09.5f}{dec:+09.5f}" for ra, dec in zip(data["RA"], data["DEC"])]
    dtype = [(n, "S24" if n == "OBJID" else data.dtype[n]) for n in data.dtype.names]
    text = np.zeros(N, dtype=dtype)
    for name in data.dtype.names:
        text[name] = data[name]
    text["OBJID"] = [n.ljust(24).encode() for n in names]  # cfitsio / IDL writers pad with blanks, not NULs
    text["TILE"] = [t.decode().ljust(32).encode() for t in data["TILE"]]
    fitsio.write(str(root / "catalog.fits"), text, extname="CATALOG", clobber=True)
    (root / "workflow.yaml").write_text(WORKFLOW_YAML.replace("log2_bins_int", "log2_bins_int")
                                        + "bias: {log2_bins_int: 1, bins_obs: 2, n_boot: 2, n_null: 1}\n")
    assert fitsio.read(str(root / "catalog.fits"), columns=["TILE"], rows=[0])["TILE"][0].endswith(" ")
    return names


def test_text_ids_through_train_evaluate_and_run(tmp_path, capsys):
    # shared cases string-ids and string-padding: text ids and blank-padded paths work in every command
    names = _text_id_survey(tmp_path)
    cat, wf, model = tmp_path / "catalog.fits", tmp_path / "workflow.yaml", tmp_path / "m.pt"
    assert main(["train", str(cat), "--config", str(wf), "--method", "biased", "--epochs", "1", "--width", "4",
                 "--out", str(model), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(cat), "--model", str(model), "--config", str(wf), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    held_out = int(validation_mask(np.array(names, dtype=object), 0, 0.25).sum())
    assert report["rows"] == "held-out" and report["n"] + sum(report["dropped"].values()) == held_out
    assert main(["run", str(cat), "--model", str(model), "--config", str(wf), "--out", str(tmp_path / "out"),
                 "--cluster", "none", "--no-progress"]) == 0
    out = pd.read_parquet(tmp_path / "out").sort_values("row")
    assert out["OBJID"].tolist() == names  # stripped of padding
    assert (out["status"] == "ok").all()
    assert out["TILE"].iloc[0] == "tiles/tile_00000.fits"


def test_repeated_text_ids_refused_before_the_run_writes(tmp_path):
    from conftest import write_untrained_checkpoint

    _text_id_survey(tmp_path)
    data = fitsio.read(str(tmp_path / "catalog.fits"))
    data["OBJID"][9] = data["OBJID"][3]
    data["OBJID"][11] = b" " * 24
    fitsio.write(str(tmp_path / "catalog.fits"), data, extname="CATALOG", clobber=True)
    model = write_untrained_checkpoint(tmp_path / "m.pt")
    assert main(["run", str(tmp_path / "catalog.fits"), "--model", str(model), "--config",
                 str(tmp_path / "workflow.yaml"), "--out", str(tmp_path / "out"), "--cluster", "none"]) != 0
    assert not (tmp_path / "out").exists()
    with pytest.raises(CatalogError, match=r"null value\(s\) \(rows 11\)"):
        from relabel.train.data import read_table
        from relabel.config import load_workflow

        read_table(tmp_path / "catalog.fits", load_workflow(tmp_path / "workflow.yaml"))


# --- matching another table (a truth table) by id, whatever type each table stores it in ---------------------

def test_ids_match_across_integer_text_bytes_and_padding():
    from relabel.catalog.ids import match_by_id

    big = np.uint64(2**64 - 1)
    catalog = pd.Series(["7", "NGC 1300  ", str(big), "42"], index=[10, 11, 12, 13])
    table_ids = pd.Series([b"NGC 1300", 42, big, np.int16(7)], dtype=object)
    values = pd.Series(["spiral", "elliptical", "spiral", "elliptical"])
    found = match_by_id(catalog, table_ids, values, "truth.parquet", "OBJID")
    assert found.index.tolist() == [10, 11, 12, 13]
    assert found.tolist() == ["elliptical", "spiral", "spiral", "elliptical"]
    nullable = pd.array([42, 7], dtype="UInt64")
    assert match_by_id(pd.Series(nullable), pd.Series(["7 ", "42"]), pd.Series(["a", "b"]), "t", "ID").tolist() \
        == ["b", "a"]


def test_unmatched_and_repeated_ids_are_named():
    from relabel.catalog.ids import match_by_id

    with pytest.raises(CatalogError, match=r"t.fits has no row for 1 of the 3 galaxies \(e.g. OBJID 9\)$"):
        match_by_id(pd.Series([1, 2, 9]), pd.Series([1, 2]), pd.Series(["a", "b"]), "t.fits", "OBJID")
    with pytest.raises(CatalogError, match=r"no id matches at all: the ids are int64 here and (object|str) there "
                                           r"\(e.g. 1 and 'J0001'\)"):
        match_by_id(pd.Series([1, 2]), pd.Series(["J0001", "J0002"]), pd.Series(["a", "b"]), "t.fits", "OBJID")
    with pytest.raises(CatalogError, match=r"repeats 1 id\(s\) \(e.g. '5'\)"):
        match_by_id(pd.Series([5]), pd.Series([5, "5 "], dtype=object), pd.Series(["a", "b"]), "t.fits", "OBJID")


def test_report_and_evaluate_match_a_truth_table_with_text_ids_to_integer_ids(tmp_path):
    from relabel.evaluate import _truth_classes
    from relabel.report.numbers import join_truth

    truth = pd.DataFrame({"OBJID": ["3", "1", "2"], "TRUE_CLASS": ["spiral ", "elliptical", "spiral"]})
    truth.to_parquet(tmp_path / "truth.parquet")
    frame = pd.DataFrame({"OBJID": np.array([1, 2, 3], dtype=np.int64)})
    joined = join_truth(frame, tmp_path / "truth.parquet", "OBJID", "TRUE_CLASS")
    assert joined["true_label"].tolist() == ["elliptical", "spiral", "spiral"]
    assert _truth_classes(tmp_path / "truth.parquet", frame["OBJID"], "OBJID").tolist() == \
        ["elliptical", "spiral", "spiral"]
