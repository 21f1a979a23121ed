"""The re-labelling run: shards planned from a catalog, a task per shard on a Dask cluster, Parquet output."""
