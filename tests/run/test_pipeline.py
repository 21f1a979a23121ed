"""`relabel run` end to end on real files: in-process, and on a LocalCluster bound to 127.0.0.1."""

import json
import re

import fitsio
import numpy as np
import pandas as pd
import pytest
import yaml

from relabel import status as st
from relabel.cli import main
from relabel.run.clusters import ClusterOptions
from relabel.errors import CatalogError, CheckpointError, OutputError
from relabel.model import load_checkpoint, predict_proba, preprocess
from relabel.run.pipeline import run_catalog

from conftest import WORKFLOW_YAML, write_untrained_checkpoint

NONE = ClusterOptions(kind="none")


def _run(root, model, out, **kw):
    kw.setdefault("cluster", NONE)
    kw.setdefault("bias", False)
    kw.setdefault("progress", False)
    return run_catalog(root / "catalog.fits", model, out, workflow=root / "workflow.yaml", **kw)


def _direct_predictions(model, images):
    net, meta = load_checkpoint(model)
    return predict_proba(net, preprocess(images, meta)).astype(np.float32)


def test_local_cluster_end_to_end_tiles(tiny_run):
    root, data, images, model = tiny_run
    out = root / "out"
    result = _run(root, model, out, shard_size=10, batch_size=8,
                  cluster=ClusterOptions(kind="local", workers=2, dashboard_address="127.0.0.1:0"))
    assert result.dashboard.startswith("http://127.0.0.1:")
    df = pd.read_parquet(out).sort_values("row").reset_index(drop=True)
    # every catalog row exactly once, in the right place
    assert df["row"].tolist() == list(range(40))
    np.testing.assert_array_equal(df["OBJID"].to_numpy(), data["OBJID"])
    # original label columns bit-identical to the catalog's
    for col in ("P_EL", "P_CS"):
        assert df[col].to_numpy().tobytes() == data[col].astype("<f4").tobytes()
    # predictions equal calling the model directly on the same cutouts
    direct = _direct_predictions(model, images)
    np.testing.assert_allclose(df[["p_elliptical", "p_spiral"]].to_numpy(), direct, rtol=0, atol=1e-6)
    assert (df["label"] == np.where(direct[:, 1] > direct[:, 0], "spiral", "elliptical")).all()
    expected_original = np.where(data["P_CS"] >= np.float32(0.8), "spiral",
                                 np.where(data["P_EL"] >= np.float32(0.8), "elliptical", "uncertain"))
    assert (df["label_original"].to_numpy() == expected_original).all()
    assert set(df["status"]) == {"ok"}
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_out"] == 40 and summary["status"] == {"ok": 40}
    assert len(summary["workers"]) >= 1
    # dask reads the dataset too, with the same dtypes
    import dask.dataframe as dd

    ddf = dd.read_parquet(out)
    assert ddf["p_spiral"].dtype == np.float32 and len(ddf.compute()) == 40


def test_files_layout_end_to_end(tiny_run):
    root, data, images, model = tiny_run
    (root / "cutouts").mkdir()
    for i, objid in enumerate(data["OBJID"]):
        fitsio.write(str(root / "cutouts" / f"{objid}.fits"), images[i, 0])
    table = pd.DataFrame({c: data[c].astype(data[c].dtype.newbyteorder("=")) for c in data.dtype.names if c not in ("TILE", "TILE_INDEX")})
    table["CUTOUT"] = [f"cutouts/{o}.fits" for o in data["OBJID"]]
    table.to_parquet(root / "catalog.parquet")
    wf = yaml.safe_load(WORKFLOW_YAML)
    wf["cutouts"] = {"layout": "files", "root": ".", "path_column": "CUTOUT", "size": 16, "bands": ["r"]}
    (root / "files.yaml").write_text(yaml.safe_dump(wf))
    run_catalog(root / "catalog.parquet", model, root / "out", workflow=root / "files.yaml", cluster=NONE,
                shard_size=16, bias=False, progress=False)
    df = pd.read_parquet(root / "out").sort_values("row")
    np.testing.assert_allclose(df[["p_elliptical", "p_spiral"]].to_numpy(), _direct_predictions(model, images), atol=1e-6)


def test_per_row_faults_become_statuses(tiny_run):
    root, data, images, model = tiny_run
    bad = data.copy()
    bad["TILE"][0] = b"tiles/missing.fits"
    bad["TILE_INDEX"][1] = 99
    bad["RA"][2] = np.nan
    bad["DEC"][3] = 95.0
    bad["RA"][4] = -10.0  # the (-180, 180] convention: a position, predicted
    bad["RA"][34] = 400.0  # no RA convention reaches this
    fitsio.write(str(root / "catalog.fits"), bad, extname="CATALOG", clobber=True)
    cube = fitsio.read(str(root / "tiles" / "tile_00002.fits"))
    cube[0] = np.nan
    cube[1, 0, :2] = np.nan
    fitsio.write(str(root / "tiles" / "tile_00002.fits"), cube, clobber=True)
    _run(root, model, root / "out", shard_size=16)
    df = pd.read_parquet(root / "out").set_index("row").sort_index()
    expected = {0: st.MISSING_FILE, 1: st.BAD_INDEX, 2: st.BAD_COORDINATES, 3: st.BAD_COORDINATES,
                32: st.ALL_NAN, 33: st.NAN_FILLED, 34: st.BAD_COORDINATES}
    for row, value in expected.items():
        assert df.loc[row, "status"] == value, row
    others = df.drop(index=list(expected))
    assert (others["status"] == "ok").all() and len(others) == 33 and 4 in others.index
    no_pred = df.loc[[0, 1, 2, 3, 32]]
    assert no_pred["p_spiral"].isna().all() and no_pred["label"].isna().all()
    assert df.loc[33, "p_spiral"] == df.loc[33, "p_spiral"]  # predicted despite 2 NaN rows of pixels
    # the rest of the shard (rows 4..15 share a shard with the faulty rows) is predicted as usual
    direct = _direct_predictions(model, images[4:16])
    np.testing.assert_allclose(df.loc[4:15, ["p_elliptical", "p_spiral"]].to_numpy(), direct, atol=1e-6)
    summary = json.loads((root / "out" / "_summary.json").read_text())
    assert summary["status"] == {"ok": 33, st.MISSING_FILE: 1, st.BAD_INDEX: 1, st.BAD_COORDINATES: 3,
                                 st.ALL_NAN: 1, st.NAN_FILLED: 1}


def test_refuses_to_overwrite_and_resumes_only_missing_shards(tiny_run):
    root, _, _, model = tiny_run
    out = root / "out"
    _run(root, model, out, shard_size=10)
    first = pd.read_parquet(out).sort_values("row").reset_index(drop=True)
    with pytest.raises(OutputError, match="not empty"):
        _run(root, model, out, shard_size=10)
    # an interrupted run: two shard files never written, one temporary left behind
    (out / "part-000001.parquet").unlink()
    (out / "part-000003.parquet").unlink()
    (out / ".part-000003.parquet.tmp-deadbeef").write_bytes(b"half")
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    result = _run(root, model, out, shard_size=10, resume=True)
    assert sorted(r["shard"] for r in result.shard_results) == ["part-000001", "part-000003"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-00000[024].parquet")} == kept
    assert not list(out.glob(".*tmp*"))
    again = pd.read_parquet(out).sort_values("row").reset_index(drop=True)
    pd.testing.assert_frame_equal(again, first)
    assert result.summary["rows_out"] == 40
    # a resume with another plan or model is refused
    with pytest.raises(OutputError, match="shard_size"):
        _run(root, model, out, shard_size=7, resume=True)
    other = write_untrained_checkpoint(root / "other.pt", seed=1)
    with pytest.raises(OutputError, match="model_hash"):
        _run(root, other, out, shard_size=10, resume=True)
    # overwrite replaces it
    _run(root, other, out, shard_size=10, overwrite=True)
    assert len(pd.read_parquet(out)) == 40


def test_one_row_and_zero_rows(tiny_run):
    root, data, _, model = tiny_run
    fitsio.write(str(root / "catalog.fits"), data[:1], extname="CATALOG", clobber=True)
    _run(root, model, root / "one")
    assert len(pd.read_parquet(root / "one")) == 1
    fitsio.write(str(root / "catalog.fits"), data[:0], extname="CATALOG", clobber=True)
    result = _run(root, model, root / "zero")
    empty = pd.read_parquet(root / "zero")
    assert len(empty) == 0 and "p_spiral" in empty.columns and empty["p_spiral"].dtype == np.float32
    assert result.summary["rows_out"] == 0


def test_catalog_faults_fail_before_any_work(tiny_run):
    root, data, _, model = tiny_run
    bad = data.copy()
    bad["P_CS"][5] = 1.5
    fitsio.write(str(root / "catalog.fits"), bad, extname="CATALOG", clobber=True)
    with pytest.raises(CatalogError, match=r"P_CS holds 1 value\(s\) outside \[0, 1\] \(first at rows \[5\]\)"):
        _run(root, model, root / "out")
    assert not (root / "out").exists()
    bad = data.copy()
    bad["OBJID"][7] = bad["OBJID"][8]
    fitsio.write(str(root / "catalog.fits"), bad, extname="CATALOG", clobber=True)
    with pytest.raises(CatalogError, match="repeats 1 id"):
        _run(root, model, root / "out")


def test_checkpoint_for_another_cutout_size_is_refused(tiny_run):
    root, _, _, _ = tiny_run
    model = write_untrained_checkpoint(root / "m32.pt", size=32)
    with pytest.raises(CheckpointError, match="cutout size 16 where the model was trained on 32"):
        _run(root, model, root / "out")


@pytest.mark.parametrize("stated, refused", [(0.2, True), (0.8, True), (0.399, False), (None, False)])
def test_stamps_at_another_stated_pixel_scale_are_refused_before_writing(tiny_run, stated, refused):
    root, _, _, _ = tiny_run
    raw = yaml.safe_load((root / "workflow.yaml").read_text())
    trained = 0.396  # the model records the scale it was trained at, as relabel train writes it
    model = write_untrained_checkpoint(root / "model_0396.pt", workflow={
        **raw, "cutouts": {**raw["cutouts"], "pixel_scale": trained}})
    raw["cutouts"].pop("pixel_scale", None)
    if stated is not None:
        raw["cutouts"]["pixel_scale"] = stated
    (root / "scaled.yaml").write_text(yaml.safe_dump(raw))
    run = dict(workflow=root / "scaled.yaml", cluster=NONE, bias=False, progress=False)
    if refused:
        with pytest.raises(CheckpointError, match=rf"states cutouts.pixel_scale {stated:.4f} arcsec where checkpoint "
                                              rf".* was trained on {trained:.4f} \(tolerance 2.0%"):
            run_catalog(root / "catalog.fits", model, root / "out", **run)
        assert not (root / "out").exists()
    else:  # within the tolerance, or not stated (stamps carry no scale relabel could check)
        run_catalog(root / "catalog.fits", model, root / "out", **run)
        assert len(pd.read_parquet(root / "out")) == 40


@pytest.mark.parametrize("factor, offset, said", [
    (1000.0, 0.0, r"band r: sky noise 99\d\.\d where the model was trained on 1 \(1e\+03x\)"),  # other units
    (0.1, 0.0, r"band r: sky noise 0\.0999\d where the model was trained on 1 \(0\.1x\)"),   # far deeper
    (1.0, 40.0, r"band r: sky level \+40\.0 training noise units"),                         # sky not subtracted
    (1.2, 0.5, None),                                                                     # close enough: silent
])
def test_stamps_whose_sky_is_not_the_trainings_are_warned_about(tiny_run, factor, offset, said):
    import warnings as w

    from relabel.errors import DataWarning

    root, _, images, model = tiny_run  # the model was trained on sky noise 1 around 0
    for t in range(0, len(images), 16):
        fitsio.write(str(root / "tiles" / f"tile_{t // 16:05d}.fits"), images[t:t + 16] * factor + offset,
                     clobber=True)
    echoed = []
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        _run(root, model, root / "out", echo=echoed.append)
    texts = [str(c.message) for c in caught if issubclass(c.category, DataWarning)]
    if said is None:
        assert texts == [] and not any("stamps of this catalog" in e for e in echoed)
    else:
        assert len(texts) == 1 and re.search(said, texts[0]) and "stamps of this catalog" in texts[0]
        assert any(re.search(said, e) for e in echoed)
    assert len(pd.read_parquet(root / "out")) == 40  # a warning: the run goes on


def test_a_collapsed_model_runs_with_a_warning(tiny_run):
    root, _, _, _ = tiny_run
    said = []
    collapsed = write_untrained_checkpoint(root / "collapsed.pt", metrics={"collapse_guard_passed": False})
    _run(root, collapsed, root / "out", echo=said.append)
    assert any(line.startswith("warning: ") and "collapse guard" in line for line in said)
    said.clear()
    healthy = write_untrained_checkpoint(root / "healthy.pt", metrics={"collapse_guard_passed": True})
    _run(root, healthy, root / "out2", echo=said.append)
    assert not any("collapse guard" in line for line in said)


def test_a_model_whose_training_had_not_settled_runs_with_a_warning(tiny_run):
    root, _, _, _ = tiny_run
    said = []
    unsettled = write_untrained_checkpoint(root / "unsettled.pt", metrics={"settled": False}, method="debiased")
    _run(root, unsettled, root / "out_unsettled", echo=said.append)
    assert any(line.startswith("warning: ") and "had not settled" in line for line in said)
    said.clear()
    # the check watches the de-biasing penalty: a biased model's settlement is recorded, not warned about
    biased = write_untrained_checkpoint(root / "biased.pt", metrics={"settled": False}, method="biased")
    _run(root, biased, root / "out_biased", echo=said.append)
    assert not any("had not settled" in line for line in said)
    settled = write_untrained_checkpoint(root / "settled.pt", metrics={"settled": True}, method="debiased")
    _run(root, settled, root / "out_settled", echo=said.append)
    assert not any("had not settled" in line for line in said)


def test_cli_run_and_error_message(tiny_run, capsys):
    root, _, _, model = tiny_run
    args = ["run", str(root / "catalog.fits"), "--model", str(model), "--out", str(root / "out"),
            "--config", str(root / "workflow.yaml"), "--cluster", "none", "--no-bias", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "output: " in printed and str(root / "out") in printed
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("relabel: error: output folder") and "Traceback" not in err


def test_a_catalog_whose_table_is_not_the_first_extension_is_found_unless_the_workflow_names_one(tiny_run):
    from astropy.io import fits
    from astropy.table import Table

    root, _, _, model = tiny_run
    table = Table.read(root / "catalog.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((8, 8), np.float32), name="PREVIEW"),
                  fits.table_to_hdu(table)]).writeto(root / "catalog.fits", overwrite=True)
    raw = yaml.safe_load((root / "workflow.yaml").read_text())
    raw["catalog"].pop("hdu")  # not stated: the first table HDU
    (root / "first_table.yaml").write_text(yaml.safe_dump(raw))
    run_catalog(root / "catalog.fits", model, root / "out", workflow=root / "first_table.yaml", cluster=NONE,
                bias=False, progress=False)
    assert len(pd.read_parquet(root / "out")) == 40
    with pytest.raises(CatalogError, match=r"HDU 1 is not a table \(IMAGE_HDU\); HDUs: .*1 \(PREVIEW, IMAGE_HDU\); "
                                           r"2 \(CATALOG, BINARY_TBL\)"):
        _run(root, model, root / "out_stated")  # workflow.yaml states hdu: 1
    assert not (root / "out_stated").exists()


def test_evaluate_checks_the_pixel_scale_and_the_sky_as_a_run_does(tiny_run):
    import warnings as w

    from relabel.errors import DataWarning
    from relabel.evaluate import evaluate_model

    root, data, images, _ = tiny_run
    raw = yaml.safe_load((root / "workflow.yaml").read_text())
    model = write_untrained_checkpoint(root / "model_0396.pt", workflow={
        **raw, "cutouts": {**raw["cutouts"], "pixel_scale": 0.396}})
    for t in range(0, len(images), 16):  # the survey's images in other units
        fitsio.write(str(root / "tiles" / f"tile_{t // 16:05d}.fits"), images[t:t + 16] * 1000, clobber=True)
    raw["bias"] = {"log2_bins_int": 1, "bins_obs": 2, "n_boot": 3, "n_null": 3}
    (root / "evaluate.yaml").write_text(yaml.safe_dump(raw))
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        evaluate_model(root / "catalog.fits", model, workflow=root / "evaluate.yaml", all_rows=True, device="cpu")
    assert any(issubclass(c.category, DataWarning) and "sky noise" in str(c.message) for c in caught)
    raw["cutouts"]["pixel_scale"] = 0.2
    (root / "evaluate.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(CheckpointError, match=r"states cutouts.pixel_scale 0.2000 arcsec where checkpoint"):
        evaluate_model(root / "catalog.fits", model, workflow=root / "evaluate.yaml", all_rows=True, device="cpu")
