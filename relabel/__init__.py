"""relabel: measure and remove the labeling bias of galaxy morphology catalogs."""

__version__ = "0.1.0"
