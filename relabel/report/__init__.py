"""The report of a run: figures, numbers and one HTML page."""

from relabel.report.page import make_report

__all__ = ["make_report"]
