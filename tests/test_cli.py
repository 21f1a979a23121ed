"""The `relabel` command as a new user meets it: wrong input ends in one error line, never a
traceback; outputs are never replaced without --overwrite; every option says what it does."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from relabel.cli import build_parser, main
from relabel.run.clusters import ClusterOptions
from relabel.run.pipeline import run_catalog
from tests.conftest import WORKFLOW_YAML


@pytest.fixture
def tiny_output(tiny_run):
    """The tiny survey, its untrained model, a finished run of it and a truth table."""
    root, data, images, model = tiny_run
    run_catalog(root / "catalog.fits", model, root / "out", workflow=root / "workflow.yaml",
                cluster=ClusterOptions(kind="none"), progress=False, bias=False, echo=lambda line: None)
    truth = pd.DataFrame({"OBJID": data["OBJID"].astype(np.int64),
                          "TRUE_CLASS": np.where(np.arange(len(data)) % 2, "spiral", "elliptical")})
    truth.to_parquet(root / "truth.parquet")
    return root, model


def _bad_inputs(root: Path, model: Path) -> list[tuple[list[str], str]]:
    """(argv, a phrase the one error line must hold) for wrong input to every subcommand."""
    (root / "a_file").write_text("not a folder")
    (root / "full").mkdir()
    (root / "full" / "x").write_text("x")
    nowhere = yaml.safe_load(WORKFLOW_YAML)
    nowhere["cutouts"]["root"] = str(root / "no-such-folder")
    (root / "nowhere.yaml").write_text(yaml.safe_dump(nowhere))
    cat, wf, out = str(root / "catalog.fits"), str(root / "workflow.yaml"), str(root / "out")
    train = ["train", cat, "--config", wf, "--method", "biased", "--epochs", "1", "--no-progress"]
    run = ["run", cat, "--model", str(model), "--config", wf, "--cluster", "none", "--no-progress"]
    return [
        (["simulate", str(root / "a_file"), "--n", "10"], "is a file"),
        (["simulate", str(root / "full"), "--n", "10"], "not empty"),
        (["simulate", str(root / "a_file" / "such" / "dir"), "--n", "10"], "is a file, not a folder"),
        (["bias", str(root / "missing.fits")], "missing.fits does not exist"),
        (["bias", cat], "needs labels"),
        (["bias", cat, "--config", str(root / "missing.yaml")], "missing.yaml"),
        (["bias", cat, "--config", wf, "--thresholds", "0.8", "0.8", "0.8"], "--thresholds"),
        ([*train, "--out", str(model)], "already exists"),
        ([*train, "--out", str(root / "a_file" / "m.pt")], "is a file"),
        ([*train, "--out", str(root / "no" / "such" / "m.pt")], "does not exist"),
        ([*train, "--out", str(root / "full")], "is a folder"),
        (["train", str(root / "missing.fits"), "--config", wf, "--method", "biased", "--out", str(root / "m2.pt")],
         "missing.fits"),
        (["evaluate", cat, "--model", cat, "--config", wf], "is a FITS file, not a checkpoint"),
        (["evaluate", cat, "--model", str(root / "missing.pt"), "--config", wf], "does not exist"),
        (["evaluate", cat, "--model", str(model), "--config", str(root / "nowhere.yaml"), "--all"],
         "no-such-folder"),
        ([*run, "--out", str(root / "a_file")], "is a file"),
        ([*run, "--out", str(root / "run2"), "--model", cat], "is a FITS file, not a checkpoint"),
        (["run", cat, "--model", str(model), "--config", str(root / "nowhere.yaml"), "--cluster", "none",
          "--out", str(root / "run3")], "no-such-folder"),
        ([*run, "--out", out], "not empty"),
        (["report", str(root / "missing-run")], "not a relabel run output"),
        (["report", out, "--truth", cat, "--out", str(root / "rep1")], "lacks column(s) TRUE_CLASS"),
        (["report", out, "--truth", str(root / "missing.parquet"), "--out", str(root / "rep2")], "does not exist"),
        (["report", out, "--out", str(root / "full")], "not empty"),
        (["report", out, "--out", str(root / "a_file")], "is a file"),
        (["demo", str(root / "a_file"), "--n", "10"], "is a file"),
        (["demo", str(root / "full"), "--n", "10"], "not empty"),
    ]


def test_every_subcommand_answers_wrong_input_with_one_error_line(tiny_output, capsys):
    root, model = tiny_output
    model_hash = hashlib.sha256(model.read_bytes()).hexdigest()
    for argv, phrase in _bad_inputs(root, model):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.count("relabel: error:") == 1, (argv, err)
        assert "Traceback" not in err, (argv, err)
        assert phrase in err, (argv, phrase, err)
    # nothing was written by a refused command
    for name in ("run2", "run3", "rep1", "rep2", "m2.pt"):
        assert not (root / name).exists(), name
    assert hashlib.sha256(model.read_bytes()).hexdigest() == model_hash
    assert sorted(p.name for p in (root / "full").iterdir()) == ["x"]


def test_errors_print_one_line_from_a_real_process(tiny_output):
    """The same through the installed entry point: exit status 2, one line, nothing on stdout."""
    root, model = tiny_output
    proc = subprocess.run([sys.executable, "-m", "relabel.cli", "run", str(root / "catalog.fits"), "--model",
                           str(model), "--out", str(root / "catalog.fits"), "--cluster", "none"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"relabel: error: output folder {root / 'catalog.fits'} is a file, "
                                                "not a folder; choose a folder name"]
    assert proc.stdout == ""


def test_train_refuses_to_replace_a_checkpoint_and_keeps_per_epoch_lines(tiny_survey, capsys):
    root, _, _ = tiny_survey
    out = root / "m.pt"
    argv = ["train", str(root / "catalog.fits"), "--config", str(root / "workflow.yaml"), "--method", "biased",
            "--out", str(out), "--epochs", "1", "--width", "4", "--batch-size", "8", "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    # --no-progress hides bars, not the results of each epoch
    assert "epoch 1/1: loss" in err and "\r" not in err
    first = hashlib.sha256(out.read_bytes()).hexdigest()
    assert main(argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == first
    assert main([*argv, "--overwrite", "--seed", "5"]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() != first


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.option_strings and not (action.help and action.help.strip()):
                missing.append(f"{name} {'/'.join(action.option_strings)}")
    assert missing == []
    long_commands = {"simulate", "train", "run", "demo"}
    for name in long_commands:
        assert "--no-progress" in sub.choices[name]._option_string_actions, name


def test_bias_of_a_run_folder_measures_original_and_new_labels(tiny_output, capsys):
    root, _ = tiny_output
    out = root / "out"
    small = ["--log2-bins-int", "1", "--bins-obs", "2", "--n-boot", "3", "--null", "2"]
    assert main(["bias", str(out), *small]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("original labels: L = ")
    assert any(line.startswith("new labels:      L = ") for line in lines)
    assert main(["bias", str(out), *small, "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert set(both) == {"original", "new"}
    # the same numbers as measuring each label set by hand, with the workflow the run recorded
    assert main(["bias", str(out), "--config", str(root / "workflow.yaml"), *small, "--labels", "P_EL", "P_CS",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["L"] == both["original"]["L"]
    assert main(["bias", str(out), "--config", str(root / "workflow.yaml"), *small, "--label-column", "label",
                 "--classes", "elliptical", "spiral", "--json"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert new["L"] == both["new"]["L"] and new["n_objects"] == 40  # every row has a new label


def test_bias_adds_repetitions_for_its_monte_carlo_target_unless_told_not_to(tiny_output, capsys):
    root, _ = tiny_output
    out = root / "out"
    small = ["--log2-bins-int", "1", "--bins-obs", "2", "--n-boot", "3", "--null", "2"]
    assert main(["bias", str(out), *small, "--mc-error", "0", "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)["original"]
    assert (exact["n_boot"], exact["n_null"]) == (3, 2) and exact["mc_error"] > 0.001
    assert main(["bias", str(out), *small, "--mc-error", "0.001", "--json"]) == 0
    aimed = json.loads(capsys.readouterr().out)["original"]
    assert aimed["n_boot"] > 3 and aimed["n_null"] > 2 and aimed["mc_error"] < exact["mc_error"]
    assert main(["bias", str(out), *small, "--mc-error", "0.001"]) == 0
    text = capsys.readouterr().out
    assert f"Monte-Carlo error of the excess {aimed['mc_error']:.4f} ({aimed['n_boot']} bootstrap" in text


def test_summary_task_seconds_are_never_negative(tiny_output):
    root, _ = tiny_output
    summary = json.loads((root / "out" / "_summary.json").read_text())
    seconds = summary["task_seconds"]
    assert seconds["other"] >= 0 and seconds["predict"] >= 0
    assert seconds["predict"] <= seconds["total"] + 1e-6


def _write_big_catalog(root: Path, n: int) -> None:
    from tests.conftest import write_tiles, write_tiny_catalog

    write_tiny_catalog(root / "catalog.fits", n=n)
    write_tiles(root, n=n)
    (root / "workflow.yaml").write_text(WORKFLOW_YAML)


def test_ctrl_c_to_the_process_group_prints_one_line_and_no_worker_traceback(tmp_path):
    """As a terminal does: SIGINT to relabel AND its Dask workers, mid-run."""
    from tests.conftest import write_untrained_checkpoint

    _write_big_catalog(tmp_path, 3200)
    model = write_untrained_checkpoint(tmp_path / "model.pt")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relabel.cli", "run", str(tmp_path / "catalog.fits"), "--model", str(model),
         "--config", str(tmp_path / "workflow.yaml"), "--out", str(tmp_path / "out"), "--cluster", "local",
         "--workers", "2", "--shard-size", "16", "--dashboard-address", "127.0.0.1:0", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        # Wait for the first shard on disk: the cluster is up and working.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((tmp_path / "out").glob("*.parquet")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [line for line in err.splitlines() if line.startswith("relabel:")] == [
        "relabel: interrupted; files already written are complete (rerun with --resume to go on)"]


def test_output_folders_are_made_with_their_missing_parents(tmp_path, capsys):
    # `relabel simulate DIR/base` with DIR not there yet: made, as users (and scripts) expect of an output folder;
    # a checkpoint file's missing folder stays an error (the bad-input walk above).
    target = tmp_path / "new" / "deeper" / "survey"
    assert main(["simulate", str(target), "--n", "12", "--no-progress"]) == 0
    assert (target / "catalog.fits").is_file() and (target / "workflow.yaml").is_file()
