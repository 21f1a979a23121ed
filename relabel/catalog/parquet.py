"""Parquet catalogs: one file or a dataset folder (many files, hive ``key=value`` partitions), read by row group.

A shard's rows are read from the row groups that hold them, never the whole file:
planning and each worker touch only the columns and row groups they need.
Integer columns come back as pandas nullable integers (``Int64``, ``UInt64``) so
that a null never turns a 19-digit id into a float; text nulls are ``None``;
list columns are one NumPy array per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from relabel.catalog.base import Catalog
from relabel.errors import CatalogError


class ParquetCatalog(Catalog):
    """A Parquet file or a folder of Parquet files (e.g. a relabel output), read by row groups."""

    def __init__(self, path: Path):
        import pyarrow.dataset as ds

        self.path = path
        try:
            partitioning = "hive" if Path(path).is_dir() else None
            self._dataset = ds.dataset(str(path), format="parquet", partitioning=partitioning)
            schema = self._dataset.schema
            self._groups = []  # (fragment, row-group id, rows), in dataset order
            for fragment in self._dataset.get_fragments():
                fragment.ensure_complete_metadata()
                for group in fragment.row_groups:
                    self._groups.append((fragment, group.id, group.num_rows))
        except Exception as exc:  # Arrow raises several types for unreadable files
            raise CatalogError(f"{path}: not a readable Parquet file or dataset ({exc})") from None
        self._offsets = np.concatenate([[0], np.cumsum([g[2] for g in self._groups])]).astype(np.int64)
        self.nrows = int(self._offsets[-1])
        self.columns = [n for n in schema.names if not n.startswith("__index_level")]
        self._schema = schema
        self._units = _astropy_units(schema)
        self._dtypes = {f.name: _element_dtype(f.type) for f in schema if f.name in self.columns}
        self._shapes = {f.name: _list_shape(f.type) for f in schema if f.name in self.columns}

    def read(self, columns: Sequence[str], start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``start:stop`` of ``columns``, from only the row groups holding them (see :meth:`Catalog.read`).

        Parameters
        ----------
        columns : sequence of str
            Parquet field names.
        start, stop : int
            Row range over the dataset's files in path order, 0-based; ``stop`` None reads all that follow.
        """
        import pyarrow as pa

        self.require(columns, what="this read")
        start, stop = self._check_range(start, stop)
        columns = list(dict.fromkeys(columns))
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        parts = []
        for i in range(max(first, 0), len(self._groups)):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            if lo >= stop:
                break
            if hi <= start:
                continue
            fragment, group, _ = self._groups[i]
            table = fragment.subset(row_group_ids=[group]).to_table(columns=columns, schema=self._schema)
            parts.append(table.slice(max(start - lo, 0), min(stop, hi) - max(start, lo)))
        table = pa.concat_tables(parts) if parts else self._schema.empty_table().select(columns)
        frame = arrow_to_pandas(table)
        frame.index = pd.RangeIndex(start, stop)
        return frame


def arrow_to_pandas(table) -> pd.DataFrame:
    """An Arrow table as pandas without going through float: integers nullable, lists as arrays per row.

    Parameters
    ----------
    table : pyarrow.Table
        Columns read from Parquet.

    Returns
    -------
    pandas.DataFrame
        One column per field, in the table's order.
    """
    import pyarrow as pa

    columns = {}
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if pa.types.is_integer(kind):
            columns[name] = column.to_pandas(types_mapper=_nullable_integers().get)
        elif pa.types.is_decimal(kind):  # exact decimals, as dtype() says; float64 where a number is needed
            columns[name] = column.to_pandas(types_mapper=pd.ArrowDtype)
        elif pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
            out = np.empty(len(column), dtype=object)
            for i, row in enumerate(column.to_pylist()):
                out[i] = None if row is None else np.asarray(row)
            columns[name] = out
        else:
            columns[name] = column.to_pandas()
    return pd.DataFrame(columns)


def _nullable_integers() -> dict:
    import pyarrow as pa

    return {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
            pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
            pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype()}


def _element_dtype(kind) -> np.dtype:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(kind):
        return _element_dtype(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pd.ArrowDtype(kind)  # variable length: the Arrow type itself, so output keeps it
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or (
            pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type)):
        return np.dtype(object)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return np.dtype(kind.to_pandas_dtype())
    # Timestamps, dates, decimals, binary, structs, maps, other dictionaries: the Arrow type itself, so
    # a passthrough column is written back exactly as the catalog holds it.
    return pd.ArrowDtype(kind)


def _list_shape(kind) -> tuple:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(kind):
        return (kind.list_size,)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return (0,)
    return ()


def _astropy_units(schema) -> dict[str, str]:
    """Column units from a Parquet schema: astropy's ``table_meta_yaml`` (``Table.write``), or a field's ``unit``."""
    import yaml

    units = {f.name: f.metadata[b"unit"].decode() for f in schema if f.metadata and b"unit" in f.metadata}
    meta = (schema.metadata or {}).get(b"table_meta_yaml")
    if meta:
        try:
            header = yaml.safe_load(meta.decode())
        except yaml.YAMLError:
            return units  # metadata another writer mangled: the data is still readable
        for entry in (header or {}).get("datatype", []) if isinstance(header, dict) else []:
            if isinstance(entry, dict) and entry.get("unit") and entry.get("name"):
                units.setdefault(str(entry["name"]), str(entry["unit"]))
    return units
