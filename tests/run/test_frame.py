"""`relabel.predict_frame` under `dask.dataframe.map_partitions` gives what `relabel run` writes."""

import fitsio
import numpy as np
import pandas as pd
import pytest

import relabel
from relabel.catalog.reader import open_catalog
from relabel.run.clusters import ClusterOptions

NEW = ["p_elliptical", "p_spiral", "label", "label_original", "status"]


def _catalog_with_bad_rows(root):
    """The tiny catalog with rows `relabel run` must flag: a NaN RA, a Dec past the pole, a cutout index past its tile."""
    data = fitsio.read(str(root / "catalog.fits"))
    data["RA"][3] = np.nan
    data["DEC"][7] = 95.0
    data["TILE_INDEX"][38] = 99
    fitsio.write(str(root / "catalog.fits"), data, extname="CATALOG", clobber=True)


def test_map_partitions_equals_relabel_run_on_the_same_rows(tiny_run, tmp_path):
    import dask
    import dask.dataframe as dd

    root, _, _, model = tiny_run
    _catalog_with_bad_rows(root)
    relabel.run_catalog(root / "catalog.fits", model, tmp_path / "out", workflow=root / "workflow.yaml",
                        cluster=ClusterOptions(kind="none"), bias=False, progress=False, shard_size=16)
    ran = pd.read_parquet(tmp_path / "out").set_index("OBJID").sort_index()

    wf = relabel.load_workflow(root / "workflow.yaml")
    cat = open_catalog(root / "catalog.fits")
    rows = cat.read(list(cat.columns))
    ddf = dd.from_pandas(rows, npartitions=3)
    meta = relabel.predict_frame(ddf._meta, model, wf)
    assert list(meta.columns) == [*rows.columns, *NEW] and len(meta) == 0
    with dask.config.set(scheduler="threads"):
        got = ddf.map_partitions(relabel.predict_frame, model, wf, meta=meta).compute()
    got = got.set_index("OBJID").sort_index()
    assert len(got) == 40 and got.index.equals(ran.index)
    assert got["status"].tolist() == ran["status"].tolist()
    assert (got["status"] != "ok").sum() == 3, "the three bad rows get a status, not a crash"
    np.testing.assert_allclose(got[["p_elliptical", "p_spiral"]].to_numpy(), ran[["p_elliptical", "p_spiral"]].to_numpy(),
                               atol=1e-6, equal_nan=True)
    assert got["label"].tolist() == ran["label"].tolist()
    assert got["label_original"].tolist() == ran["label_original"].tolist()


def test_one_partition_keeps_its_index_and_columns(tiny_run):
    root, _, _, model = tiny_run
    rows = open_catalog(root / "catalog.fits").read(["OBJID", "RA", "DEC", "P_EL", "P_CS", "TILE", "TILE_INDEX"], 5, 12)
    rows.index = pd.Index([f"g{i}" for i in range(len(rows))], name="name")
    out = relabel.predict_frame(rows, model, root / "workflow.yaml")
    assert out.index.equals(rows.index)
    pd.testing.assert_frame_equal(out[rows.columns], rows)
    assert out["status"].eq("ok").all() and np.allclose(out[["p_elliptical", "p_spiral"]].sum(axis=1), 1, atol=1e-5)


def test_run_catalog_takes_a_dataframe_or_an_astropy_table(tiny_run, tmp_path):
    from astropy.table import Table

    from relabel.errors import CatalogError

    root, _, _, model = tiny_run
    kw = dict(workflow=root / "workflow.yaml", cluster=ClusterOptions(kind="none"), bias=False, progress=False,
              shard_size=16)
    relabel.run_catalog(root / "catalog.fits", model, tmp_path / "file", **kw)
    expected = pd.read_parquet(tmp_path / "file").sort_values("row").reset_index(drop=True)
    frame = open_catalog(root / "catalog.fits").read(list(open_catalog(root / "catalog.fits").columns))
    for name, table in (("frame", frame), ("table", Table.read(root / "catalog.fits", hdu=1))):
        result = relabel.run_catalog(table, model, tmp_path / name, **kw)
        got = pd.read_parquet(tmp_path / name).sort_values("row").reset_index(drop=True)
        assert result.summary["rows_out"] == 40 and (tmp_path / name / "_catalog.parquet").is_file()
        for col in ["OBJID", "status", "label", "label_original"]:
            assert got[col].tolist() == expected[col].tolist(), (name, col)
        np.testing.assert_allclose(got[["p_elliptical", "p_spiral"]], expected[["p_elliptical", "p_spiral"]], atol=1e-6)
    with pytest.raises(CatalogError, match="RA"):
        relabel.run_catalog(frame.drop(columns="RA"), model, tmp_path / "refused", **kw)
    assert not (tmp_path / "refused").exists(), "a refused in-memory catalog leaves nothing"
