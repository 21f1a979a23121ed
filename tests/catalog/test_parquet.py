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
