"""Catalogs: tables on disk (FITS, Parquet) read by row range and column, and their label columns as classes."""

from relabel.catalog.reader import Catalog, FitsCatalog, ParquetCatalog, open_catalog

__all__ = ["Catalog", "FitsCatalog", "ParquetCatalog", "open_catalog"]
