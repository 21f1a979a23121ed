"""Catalogs: tables on disk (FITS, Parquet) or in memory read by row range and column; missing values; ids; labels."""

from relabel.catalog.reader import Catalog, FitsCatalog, FrameCatalog, ParquetCatalog, open_catalog

__all__ = ["Catalog", "FitsCatalog", "FrameCatalog", "ParquetCatalog", "open_catalog"]
