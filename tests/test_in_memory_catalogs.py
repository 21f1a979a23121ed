"""A catalog in memory (pandas DataFrame or astropy Table) is the same catalog as its file, in every command."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from relabel.bias.table import bias_of_table
from relabel.catalog.reader import catalog_folder, describe_catalog, in_memory
from relabel.config import load_workflow
from relabel.evaluate import evaluate_model
from relabel.model import read_checkpoint
from relabel.train.loop import train_model
from tests.train.test_loop import write_toy_survey


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    write_toy_survey(root, n=800)
    workflow = load_workflow(root / "workflow.yaml")
    table = Table.read(root / "catalog.fits")
    return root, workflow, table


def _as(kind: str, table: Table):
    return table.to_pandas() if kind == "dataframe" else table


@pytest.mark.parametrize("kind", ["dataframe", "table"])
def test_bias_of_an_in_memory_catalog_equals_its_file(toy, kind):
    root, workflow, table = toy
    from_file = bias_of_table(root / "catalog.fits", workflow)
    in_mem = bias_of_table(_as(kind, table), workflow)
    assert in_mem.L == pytest.approx(from_file.L, abs=1e-12) and in_mem.n_objects == from_file.n_objects


def test_train_and_evaluate_take_a_dataframe_as_its_file(toy, tmp_path, monkeypatch):
    root, workflow, table = toy
    frame = table.to_pandas()  # FITS text stays bytes here: TILE must still find its files
    # the workflow's cutout root is relative to its own file; the in-memory catalog has no folder of its own
    monkeypatch.chdir(root)
    common = dict(epochs=1, width=8, progress=False, seed=0)
    from_file = train_model(root / "catalog.fits", workflow, "biased", tmp_path / "file.pt", **common)
    in_mem = train_model(frame, workflow, "biased", tmp_path / "frame.pt", **common)
    state_file, meta_file = read_checkpoint(from_file.path)
    state_mem, meta_mem = read_checkpoint(in_mem.path)
    assert meta_mem.split["n_train"] == meta_file.split["n_train"]
    assert meta_mem.split["catalog"] == "<pandas DataFrame of 800 rows>"
    for key in state_file:
        np.testing.assert_array_equal(state_mem[key].numpy(), state_file[key].numpy())

    ev_file = evaluate_model(root / "catalog.fits", from_file.path, workflow=workflow)
    ev_mem = evaluate_model(frame, from_file.path, workflow=workflow)
    assert ev_mem["n"] == ev_file["n"] and ev_mem["L_model"] == pytest.approx(ev_file["L_model"], abs=1e-12)

    # run_catalog with DataFrame and Table catalogs: tests/run/test_frame.py


def test_how_a_catalog_is_named_and_where_its_paths_resolve(tmp_path, monkeypatch):
    frame = pd.DataFrame({"OBJID": [1, 2, 3]})
    monkeypatch.chdir(tmp_path)
    assert in_memory(frame) and in_memory(Table.from_pandas(frame)) and not in_memory(tmp_path / "c.fits")
    assert describe_catalog(frame) == "<pandas DataFrame of 3 rows>"
    assert describe_catalog(Table.from_pandas(frame)) == "<astropy Table of 3 rows>"
    assert catalog_folder(frame) == tmp_path
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.fits").write_bytes(b"")
    (tmp_path / "link.fits").symlink_to(tmp_path / "sub" / "c.fits")
    assert catalog_folder(tmp_path / "link.fits") == tmp_path / "sub", "a linked catalog finds its real folder"


def test_evaluate_on_too_few_objects_for_the_bins_still_gives_the_accuracies(toy, tmp_path, monkeypatch):
    from relabel.evaluate import format_evaluation

    root, workflow, table = toy
    monkeypatch.chdir(root)
    model = train_model(root / "catalog.fits", workflow, "biased", tmp_path / "m.pt", epochs=1, width=8,
                        progress=False)
    fine = copy.deepcopy(workflow)
    fine.bias.update(log2_bins_int=4, bins_obs=5)  # 16 x 5 bins: ~40 held-out galaxies cannot fill them
    result = evaluate_model(table.to_pandas().iloc[:120], model.path, workflow=fine)
    assert result["L_labels"] is None and "observable bins it needs" in result["L_labels_error"]
    assert 0.0 <= result["accuracy_labels"] <= 1.0 and result["n"] > 0
    assert "L n/a: intrinsic leaf" in format_evaluation(result)
