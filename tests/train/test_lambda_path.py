"""lambda chosen from the data: an over-correcting lambda is rejected, a useful one kept, the table recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relabel.model import load_checkpoint
from relabel.train.lambda_path import best_observed, select_lambda
from relabel.train.data import load_labelled_cutouts
from relabel.config import load_workflow
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
    result = select_lambda(toy / "catalog.fits", toy / "workflow.yaml", out, path=(1000.0, 1.0), tolerance=0.02,
                           width=8, progress=False)
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
