"""Parquet catalogs: row-group reads across file and group boundaries, hive partitions, nulls never via float."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from relabel.catalog import open_catalog


def test_dataset_reads_across_row_groups_and_files(tmp_path):
    ids = np.arange(100, dtype=np.int64) + 10**18 + 1  # 19 digits: float64 would lose the last ones
    mask = np.arange(100) % 11 == 4
    for part in range(4):
        folder = tmp_path / "ds" / f"field={part}"
        folder.mkdir(parents=True)
        sl = slice(part * 25, (part + 1) * 25)
        pq.write_table(pa.table({"OBJID": pa.array(ids[sl], mask=mask[sl]), "X": np.arange(100.0)[sl]}),
                       folder / "p.parquet", row_group_size=7)
    cat = open_catalog(tmp_path / "ds")
    assert cat.nrows == 100 and cat.columns == ["OBJID", "X", "field"]
    assert len(cat._groups) == 16  # 4 files x 4 row groups
    for start, stop in [(0, 100), (5, 9), (20, 31), (49, 50), (60, 60)]:
        frame = cat.read(["OBJID", "X", "field"], start, stop)
        assert frame.index.tolist() == list(range(start, stop))
        assert frame["X"].tolist() == list(np.arange(100.0)[start:stop])
        got = [None if pd.isna(v) else int(v) for v in frame["OBJID"]]
        assert got == [None if m else int(i) for i, m in zip(ids[start:stop], mask[start:stop])]
        assert frame["field"].tolist() == [r // 25 for r in range(start, stop)]
    assert str(cat.read(["OBJID"], 0, 10)["OBJID"].dtype) == "Int64"
    rows = cat.read_rows(["X"], np.array([77, 3, 50]))
    assert rows["X"].tolist() == [77.0, 3.0, 50.0]


def test_decimal_columns_are_numbers_where_relabel_needs_one_and_stay_decimal_in_the_output(tiny_run):
    import decimal

    import pyarrow.dataset as ds
    from astropy.table import Table

    from relabel.bias.table import bias_of_table
    from relabel.config import load_workflow
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    root, _, _, model = tiny_run
    frame = Table.read(root / "catalog.fits").to_pandas()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    exact = pa.decimal128(12, 6)  # as database exports (numeric(12, 6)) give them
    for name in ("P_EL", "P_CS", "REDSHIFT", "RA", "MAG_R"):
        values = pa.array([decimal.Decimal(f"{v:.6f}") for v in frame[name]], type=exact)
        table = table.set_column(table.column_names.index(name), name, values)
        frame[name] = frame[name].round(6)
    pq.write_table(table, root / "decimal.parquet")
    frame.to_parquet(root / "float.parquet")
    options = dict(workflow=root / "workflow.yaml", cluster=ClusterOptions(kind="none"), bias=False, progress=False)
    run_catalog(root / "decimal.parquet", model, root / "out_decimal", **options)
    run_catalog(root / "float.parquet", model, root / "out_float", **options)
    got, want = (pd.read_parquet(root / o).sort_values("row") for o in ("out_decimal", "out_float"))
    assert got["status"].tolist() == want["status"].tolist() and got["label"].tolist() == want["label"].tolist()
    np.testing.assert_array_equal(got["p_spiral"].to_numpy(), want["p_spiral"].to_numpy())
    assert ds.dataset(root / "out_decimal").schema.field("MAG_R").type == exact  # passthrough: exact as read
    workflow = load_workflow(root / "workflow.yaml")
    workflow.bias.update(log2_bins_int=1, bins_obs=2, n_boot=3, n_null=3)  # a 40-row survey
    by_decimal = bias_of_table(root / "decimal.parquet", workflow=workflow)
    by_float = bias_of_table(root / "float.parquet", workflow=workflow)
    assert by_decimal.n_objects == by_float.n_objects > 0 and by_decimal.L == by_float.L


def test_decimal_nulls_and_codes_are_missing_like_any_number():
    import decimal

    from relabel.catalog.missing import missing_mask
    from relabel.model.inputs import input_values

    values = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(
        [decimal.Decimal("0.5"), None, decimal.Decimal("-99.000")], type=pa.decimal128(6, 3))))
    assert missing_mask(values, (-99,)).tolist() == [False, True, True]
    got = input_values(pd.DataFrame({"M": values}), ["M"])
    assert got[0, 0] == 0.5 and np.isnan(got[1, 0]) and got[2, 0] == -99.0
