"""`relabel demo` end to end, tiny, through the command line; run twice, it prints the same figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from relabel.cli import main


@pytest.fixture(scope="module")
def two_demos(tmp_path_factory):
    """The same tiny demo run twice, each in its own process with its own string-hash seed (set and dict
    orders of text keys differ between them, as between two real runs): (folder, stdout, stderr) of each."""
    out = []
    for name, hash_seed in (("first", "1"), ("second", "2")):
        folder = tmp_path_factory.mktemp("demo") / name
        done = subprocess.run([sys.executable, "-m", "relabel.cli", "demo", str(folder), "--n", "400", "--epochs",
                               "2", "--dashboard-address", "127.0.0.1:0", "--no-progress"], capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        out.append((folder, done.stdout, done.stderr))
    return out


def test_tiny_demo_runs_end_to_end(two_demos, capsys):
    folder, printed, err = two_demos[0]
    # --no-progress: no bars, but training still reports each epoch, and the lambda path its table
    assert "\r" not in err and "epoch 2/2: loss" in err
    assert "chosen from the path" in printed and "\n  biased   " in printed and "\n  1        " in printed
    assert printed.count("dashboard: http://127.0.0.1:") == 1, "each of the run's lines is printed once"
    assert printed.count("relabel run: 400 rows in") == 1
    assert "relabel demo finished" in printed and "debiased model" in printed
    out = folder / "relabelled"
    assert len(pd.read_parquet(out)) == 400
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_out"] == 400
    page = (folder / "report" / "report.html").read_text()
    assert page.count("<figcaption>") >= 5 and "on the same galaxies" in page and "The lambda path" in page
    for model in ("biased.pt", "debiased.pt"):
        assert (folder / model).is_file()
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".pt" or p.name.endswith(".part")) == [
        "biased.pt", "debiased.pt"], "the path leaves only the chosen model behind"
    # a second demo into the same folder is refused
    assert main(["demo", str(folder), "--n", "400"]) == 2
    assert "not empty" in capsys.readouterr().err


def _figures(text: str, folder) -> str:
    """The printed text with what may differ between two identical runs removed: folders, times, ports, hashes."""
    text = text.replace(str(folder), "DIR")
    text = re.sub(r"finished in [\d.]+ min", "finished in T min", text)
    text = re.sub(r"planned in [\d.]+ s", "planned in T s", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"\| [\d.]+ s$", "| T s", text, flags=re.MULTILINE)
    text = re.sub(r"[\d.]+ s/epoch", "T s/epoch", text)
    return re.sub(r"sha256 [0-9a-f]{12}", "sha256 HASH", text)


def _numbers(value, key: str = ""):
    """Every number and flag of a JSON document, by its key path; times and hashes left out."""
    if isinstance(value, dict):
        return {k2: v2 for k, v in value.items() if "seconds" not in k and "sha256" not in k
                for k2, v2 in _numbers(v, f"{key}.{k}").items()}
    if isinstance(value, list):
        return {k2: v2 for i, v in enumerate(value) for k2, v2 in _numbers(v, f"{key}[{i}]").items()}
    return {key: value} if isinstance(value, (int, float, bool)) else {}


def test_demo_run_twice_prints_the_same_figures(two_demos):
    (first, out1, err1), (second, out2, err2) = two_demos
    assert _figures(out1, first) == _figures(out2, second)
    assert _figures(err1, first) == _figures(err2, second), "the epoch lines' validation figures too"
    numbers = [_numbers(json.loads((f / "report" / "report.json").read_text())) for f in (first, second)]
    assert len(numbers[0]) > 50 and numbers[0] == numbers[1]
    frames = [pd.read_parquet(f / "relabelled").sort_values("OBJID").reset_index(drop=True) for f in (first, second)]
    pd.testing.assert_frame_equal(frames[0], frames[1])
