"""Cutout sources: each galaxy's image, read from where the survey keeps it, with a status per row."""

from relabel.cutouts.images import ImageSource
from relabel.cutouts.sources import Cutouts, CutoutSource, FileSource, TileSource, open_cutout_source

__all__ = ["CutoutSource", "Cutouts", "FileSource", "ImageSource", "TileSource", "open_cutout_source"]
