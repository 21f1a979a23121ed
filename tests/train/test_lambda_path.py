"""lambda chosen from the data: an over-correcting lambda is rejected, a useful one kept, the table recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relabel.config import load_workflow
from relabel.model import load_checkpoint
from relabel.train.data import load_labelled_cutouts
from relabel.train.lambda_path import best_observed, select_lambda
from tests.train.test_loop import write_toy_survey


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lambda_toy")
    write_toy_survey(root)
    return root


def test_best_observed_objects_are_the_good_half_of_every_observable(toy):
    wf = load_workflow(toy / "workflow.yaml")
    data = load_labelled_cutouts(toy / "catalog.fits", wf, 0, 0.3, None, progress=False)
    rows = np.flatnonzero(data.is_val)
    mask = best_observed(data, rows, wf, 1, 2)
    res = data.observables["RESOLUTION"].to_numpy()[rows]
    # One observable (RESOLUTION, best high), 2 bins per leaf: the upper half of each of the 2 leaves.
    assert abs(mask.sum() - len(rows) / 2) <= 2
    assert res[mask].min() > np.median(res) - 0.1 and res[~mask].max() < np.median(res) + 0.1


def test_selection_rejects_an_over_correcting_lambda_and_keeps_a_useful_one(toy, tmp_path):
    out = tmp_path / "auto.pt"
    # The rule is the same whatever the network sees; the toy's margins were set on the image-only network
    # (with MASS as an input, lambda 1 loses 2.1 points on the best-observed half here, 0.1 past this tolerance).
    result = select_lambda(toy / "catalog.fits", toy / "workflow.yaml", out, path=(1000.0, 1.0), tolerance=0.02,
                           width=8, progress=False, catalog_inputs="none")
    table = result.meta.metrics["lambda_selection"]
    rows = {r["lambda"]: r for r in table["path"]}
    biased = table["biased"]
    # lambda 1000 destroys the best-observed labels, where the toy's labels are right ...
    assert rows[1000.0]["ref_accuracy"] < biased["ref_accuracy"] - 0.02 and not rows[1000.0]["accepted"]
    # ... lambda 1 keeps them and lowers soft L.
    assert rows[1.0]["accepted"] and rows[1.0]["val_L_soft"] < biased["val_L_soft"]
    assert result.meta.lam == 1.0 and result.meta.metrics["chosen_lambda"] == 1.0
    _, saved = load_checkpoint(out)
    assert saved.lam == 1.0 and saved.metrics["lambda_selection"]["path"] == table["path"]
    # Only the chosen checkpoint is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.pt"]


def test_cli_lambda_takes_a_number_or_automatic():
    from relabel.cli import _lambda_value

    assert _lambda_value("automatic") == "automatic" and _lambda_value("3") == 3.0
    with pytest.raises(ValueError):
        _lambda_value("auto")


def test_workflow_lambda_is_automatic_by_default_and_takes_a_number(toy, tmp_path):
    from relabel.errors import ConfigError
    from relabel.train.options import wants_automatic_lambda

    text = (toy / "workflow.yaml").read_text()
    for value, expected in (("automatic", "automatic"), ("3", 3.0), ("0", 0.0)):
        path = tmp_path / f"w{value}.yaml"
        path.write_text(text.replace("lambda: 10.0", f"lambda: {value}"))
        assert load_workflow(path).train["lambda"] == expected
    path.write_text(text.replace("lambda: 10.0, ", ""))
    wf = load_workflow(path)
    assert wf.train["lambda"] == "automatic"
    # automatic: debiased runs the path unless a number is given; biased never does
    assert wants_automatic_lambda("debiased", None, wf) and wants_automatic_lambda("debiased", "automatic", wf)
    assert not wants_automatic_lambda("debiased", 3.0, wf) and not wants_automatic_lambda("biased", None, wf)
    for bad in ("auto", "-1", "true"):
        path.write_text(text.replace("lambda: 10.0", f"lambda: {bad}"))
        with pytest.raises(ConfigError, match="train.lambda' must be a number or 'automatic'"):
            load_workflow(path)


def test_reference_model_must_be_a_biased_model_of_the_same_split(toy, tmp_path):
    from relabel.errors import ConfigError
    from relabel.train.lambda_path import select_or_train
    from relabel.train.loop import train_model

    common = dict(width=4, epochs=1, progress=False)
    debiased = train_model(toy / "catalog.fits", toy / "workflow.yaml", "debiased", tmp_path / "d.pt", lam=1.0,
                           **common)
    other_split = train_model(toy / "catalog.fits", toy / "workflow.yaml", "biased", tmp_path / "b.pt", seed=1,
                              **common)
    for reference, says in ((debiased.path, "method is 'debiased'"), (other_split.path, "split is seed 1")):
        with pytest.raises(ConfigError, match=says):
            select_lambda(toy / "catalog.fits", toy / "workflow.yaml", tmp_path / "auto.pt", path=(1.0,),
                          reference_model=reference, **common)
    assert not (tmp_path / "auto.pt").exists()
    # a reference model where lambda is a number would go unused: refused
    with pytest.raises(ConfigError, match="reference model"):
        select_or_train(toy / "catalog.fits", toy / "workflow.yaml", "debiased", tmp_path / "x.pt", lam=3.0,
                        reference_model=other_split.path, **common)


def test_path_stops_at_the_first_rejected_lambda_and_reuses_the_reference(toy, tmp_path):
    from relabel.train.loop import train_model

    common = dict(width=8, progress=False, catalog_inputs="none")  # as in the test above
    biased = train_model(toy / "catalog.fits", toy / "workflow.yaml", "biased", tmp_path / "biased.pt", **common)
    result = select_lambda(toy / "catalog.fits", toy / "workflow.yaml", tmp_path / "auto.pt",
                           path=(1.0, 1000.0, 3000.0), tolerance=0.02, reference_model=biased.path, **common)
    table = result.meta.metrics["lambda_selection"]
    assert [r["lambda"] for r in table["path"]] == [1.0, 1000.0] and table["untried"] == [3000.0]
    assert result.meta.lam == 1.0 and str(biased.path.resolve()) in table["biased"]["source"]
    (agreement,) = table["biased"]["best_bin_agreement"]["by_observable"]
    assert agreement["observable"] == "RESOLUTION" and agreement["agreement"] > 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.pt", "biased.pt"]


def test_cli_train_runs_the_path_by_default_with_a_reference_model(toy, tmp_path, capsys):
    from relabel.cli import main

    common = ["--config", str(toy / "workflow.yaml"), "--epochs", "2", "--width", "4", "--no-progress"]
    assert main(["train", str(toy / "catalog.fits"), "--method", "biased", "--out", str(tmp_path / "b.pt"),
                 *common]) == 0
    workflow = tmp_path / "automatic.yaml"  # the toy's file names lambda 10; without it, the default applies
    workflow.write_text((toy / "workflow.yaml").read_text().replace("lambda: 10.0, ", "").replace(
        "root: .", f"root: {toy}").replace("path: catalog.fits", f"path: {toy / 'catalog.fits'}"))
    common[1] = str(workflow)
    capsys.readouterr()
    assert main(["train", str(toy / "catalog.fits"), "--method", "debiased", "--out", str(tmp_path / "d.pt"),
                 "--reference-model", str(tmp_path / "b.pt"), *common]) == 0
    printed = capsys.readouterr().out
    assert "chosen from the path" in printed and "\n  biased   " in printed
    _, meta = load_checkpoint(tmp_path / "d.pt")
    table = meta.metrics["lambda_selection"]
    assert meta.lam == meta.metrics["chosen_lambda"] and str(tmp_path / "b.pt") in table["biased"]["source"]
    assert [r["lambda"] for r in table["path"]] + table["untried"] == [1.0, 3.0, 10.0]
    # a number given on the command line wins over the workflow's automatic
    assert main(["train", str(toy / "catalog.fits"), "--method", "debiased", "--out", str(tmp_path / "d3.pt"),
                 "--lambda", "3", *common]) == 0
    _, meta = load_checkpoint(tmp_path / "d3.pt")
    assert meta.lam == 3.0 and "lambda_selection" not in meta.metrics
