"""`relabel report`: figures and numbers that show how much labeling bias a run removed.

Reads a run's output folder (only the columns it needs) and writes PNG figures, one
self-contained HTML page embedding them with captions, and ``report.json``: L of the
original and new labels (and the truth), a like-for-like table of the label sets on the
same galaxies, trends of the truth inside intrinsic bins, counts per status and an
example gallery stratified by class and observing quality; and, without truth, how the
model was trained and whether it over-corrects (:mod:`relabel.report.training`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from relabel import status as st
from relabel.bias.table import run_workflow
from relabel.destination import check_output_dir
from relabel.errors import ModelWarning, OutputError
from relabel.optional import require
from relabel.report import figures as fig
from relabel.report.comparison import plot_comparison, read_comparison
from relabel.report.gallery import plot_gallery
from relabel.report.html import write_html
from relabel.report.numbers import bias_numbers, comparison_table, join_truth, read_output, status_counts, truth_trends
from relabel.report.training import training_numbers
from relabel.run.output import RUN_RECORD

__all__ = ["make_report"]


def make_report(out_dir: str | Path, truth: str | Path | None = None, report_dir: str | Path | None = None,
                truth_column: str = "TRUE_CLASS", overwrite: bool = False,
                comparison: str | Path | None = None) -> dict:
    """Write the report of run ``out_dir`` into ``report_dir``; return its numbers.

    Parameters
    ----------
    out_dir : str or Path
        Output folder of ``relabel run``.
    truth : str or Path, optional
        FITS or Parquet table with the catalog's id column and ``truth_column`` (the simulator's truth.parquet).
    report_dir : str or Path, optional
        Where the page, figures and ``report.json`` go (default ``OUT_DIR/_report``).
    overwrite : bool
        Replace the files of an existing non-empty ``report_dir``.
    comparison : str or Path, optional
        JSON of ``relabel evaluate --compare ... --truth T --json``: the page then shows the
        comparison with the field's baselines (:mod:`relabel.report.comparison`), table and figure.

    Returns
    -------
    dict
        What ``report.json`` holds, plus ``html``: the page's path.

    Raises
    ------
    OutputError
        ``out_dir`` is not a run, ``report_dir`` exists (without ``overwrite``) or cannot be written,
        the truth lacks columns or rows.
    CatalogError
        The truth table is missing or neither FITS nor Parquet.
    """
    out_dir = Path(out_dir)
    if not (out_dir / RUN_RECORD).is_file():
        raise OutputError(f"{out_dir} is not a relabel run output (no {RUN_RECORD})")
    require("matplotlib", "report", "relabel report's figures")  # said before anything is read or written
    report_dir = check_output_dir(report_dir or out_dir / "_report", overwrite, "report folder")
    methods = read_comparison(comparison) if comparison is not None else None
    wf, classes = run_workflow(out_dir)
    frame = read_output(out_dir, wf, classes)
    if truth is not None:
        frame = join_truth(frame, Path(truth), wf.catalog.id, truth_column)
    predicted = frame["status"].isin(st.PREDICTED).to_numpy()
    numbers: dict[str, Any] = {
        "out_dir": str(out_dir.resolve()),
        "rows": int(len(frame)),
        "status": status_counts(frame),
        "classes": classes,
        "columns": [*wf.intrinsic, *wf.observable_columns],
        "labeling_bias": bias_numbers(out_dir, wf, classes, frame, predicted),
        "comparison": comparison_table(frame, wf, classes, predicted),
        "truth_trends": truth_trends(frame, wf, classes, predicted),
        "training": training_numbers(out_dir, frame, wf, classes, predicted),
    }
    if numbers["training"]["over_correction"]["warning"]:
        warnings.warn(ModelWarning(f"report of {out_dir}: {numbers['training']['over_correction']['text']}"),
                      stacklevel=2)
    report_dir.mkdir(parents=True, exist_ok=True)
    pages = []
    for obs in wf.observables:
        name = f"fraction_{obs.column.lower()}.png"
        caption = fig.plot_fractions(frame, wf, obs.column, classes, predicted, report_dir / name)
        pages.append((f"{classes[-1]} fraction against {obs.column}", name, caption))
    pages.append(("Labeling bias L", "bias.png", fig.plot_bias(numbers["labeling_bias"], report_dir / "bias.png")))
    pages.append(("Rows per status", "status.png", fig.plot_status(numbers["status"], report_dir / "status.png")))
    if methods is not None:
        numbers["methods"] = methods
        pages.append(("Comparison with the field's baselines", "comparison.png",
                      plot_comparison(methods, report_dir / "comparison.png")))
    gallery = plot_gallery(frame, wf, classes, predicted, report_dir / "examples.png")
    if gallery:
        pages.append(("Example cutouts", "examples.png", gallery))
    numbers["figures"] = {title: str(report_dir / name) for title, name, _ in pages}
    numbers["captions"] = {title: caption for title, _, caption in pages}
    (report_dir / "report.json").write_text(json.dumps(numbers, indent=2) + "\n")
    write_html(report_dir / "report.html", numbers, pages, report_dir)
    numbers["html"] = str(report_dir / "report.html")
    return numbers
