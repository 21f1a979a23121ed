"""`relabel demo` end to end, tiny, through the command line."""

import json

import pandas as pd

from relabel.cli import main


def test_tiny_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--n", "500", "--epochs", "1", "--dashboard-address", "127.0.0.1:0",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # --no-progress: no bars, but training still reports each epoch
    assert "\r" not in captured.err and "epoch 1/1: loss" in captured.err
    assert printed.count("dashboard: http://127.0.0.1:") == 1, "each of the run's lines is printed once"
    assert printed.count("relabel run: 500 rows in") == 1
    assert "relabel demo finished" in printed and "debiased model" in printed
    out = tmp_path / "demo" / "relabelled"
    assert len(pd.read_parquet(out)) == 500
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_out"] == 500
    page = (tmp_path / "demo" / "report" / "report.html").read_text()
    assert page.count("<figcaption>") >= 5 and "on the same galaxies" in page
    for model in ("biased.pt", "debiased.pt"):
        assert (tmp_path / "demo" / model).is_file()
    # a second demo into the same folder is refused
    assert main(["demo", str(tmp_path / "demo"), "--n", "500"]) == 2
    assert "not empty" in capsys.readouterr().err
