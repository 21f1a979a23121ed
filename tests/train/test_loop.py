"""Biased and de-biased training, the differentiable bias term, and evaluation on held-out rows."""

from __future__ import annotations

import doctest
import json
import textwrap
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd
import pytest
import torch

import relabel.train.penalty
import relabel.train.loop
import relabel.train.options
import relabel.train.schedule
import relabel.train.selection
import relabel.train.split
from relabel.bias import bin_fractions, labeling_bias
from relabel.train.penalty import BiasPenalty
from relabel.errors import ConfigError
from relabel.evaluate import evaluate_model
from relabel.model import MorphologyCNN, load_checkpoint
from relabel.train import penalty_cells, train_model, validation_mask

TOY_WORKFLOW = textwrap.dedent(
    """\
    name: toy
    catalog: {path: catalog.fits, hdu: 1, id: OBJID}
    labels:
      probabilities:
        - {column: P_EL, class: elliptical, threshold: 0.8}
        - {column: P_CS, class: spiral, threshold: 0.8}
    intrinsic: [MASS]
    observables:
      - {column: RESOLUTION, best: high}
    cutouts: {layout: tiles, root: ., size: 16, bands: [r]}
    bias: {log2_bins_int: 1, bins_obs: 2, n_boot: 2, n_null: 2}
    train: {epochs: 10, batch_size: 64, lambda: 10.0, val_fraction: 0.3, seed: 0}
    """
)


def write_toy_survey(root: Path, n: int = 1600, seed: int = 0) -> pd.DataFrame:
    """A strongly biased toy survey: 16x16 blobs, spirals carry a ring whose contrast grows with resolution.

    The spiral share depends only on MASS (intrinsic); below RESOLUTION 0.5 half the
    spirals are labelled elliptical and half get no confident label, as human
    classifiers do with unresolved arms. Returns the truth (OBJID, TRUE_CLASS).
    """
    rng = np.random.default_rng(seed)
    mass, res = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    spiral = rng.uniform(0, 1, n) < 0.3 + 0.4 * mass
    yy, xx = np.mgrid[:16, :16] - 7.5
    r = np.hypot(xx, yy)
    sigma = 1.2 + 2.0 * (1 - res)
    images = np.exp(-0.5 * (r[None] / sigma[:, None, None]) ** 2)
    images += (spiral * res)[:, None, None] * 0.8 * np.exp(-0.5 * ((r - 5.0) / 0.8) ** 2)[None]
    images = (images + rng.normal(0, 0.05, images.shape))[:, None].astype(np.float32)
    low = spiral & (res < 0.5)
    coin = rng.uniform(0, 1, n) < 0.5
    p_cs = np.where(spiral, 0.9, 0.1)
    p_cs = np.where(low, np.where(coin, 0.1, 0.5), p_cs)
    data = np.zeros(n, dtype=[("OBJID", ">i8"), ("P_EL", ">f4"), ("P_CS", ">f4"), ("MASS", ">f4"),
                              ("RESOLUTION", ">f4"), ("TILE", "S16"), ("TILE_INDEX", ">i4")])
    data["OBJID"] = 1 + np.arange(n)
    data["P_CS"], data["P_EL"] = p_cs, 1 - p_cs
    data["MASS"], data["RESOLUTION"] = mass, res
    return write_tile_survey(root, data, images, spiral, TOY_WORKFLOW)


def write_tile_survey(root: Path, data: np.ndarray, images: np.ndarray, spiral: np.ndarray, workflow: str,
                      per_tile: int = 256) -> pd.DataFrame:
    """Write ``images`` (n, 1, H, W) as tiles of ``per_tile``, the catalog ``data`` (its TILE / TILE_INDEX filled
    here), the workflow and the truth (OBJID, TRUE_CLASS from ``spiral``) under ``root``; returns the truth."""
    n = len(data)
    data["TILE"] = [f"tiles/t{i // per_tile}.fits".encode() for i in range(n)]
    data["TILE_INDEX"] = np.arange(n) % per_tile
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    for t in range(0, n, per_tile):
        fitsio.write(str(root / "tiles" / f"t{t // per_tile}.fits"), images[t:t + per_tile], clobber=True)
    fitsio.write(str(root / "catalog.fits"), data, extname="CATALOG", clobber=True)
    (root / "workflow.yaml").write_text(workflow)
    truth = pd.DataFrame({"OBJID": data["OBJID"].astype(np.int64),
                          "TRUE_CLASS": np.where(spiral, "spiral", "elliptical")})
    truth.to_parquet(root / "truth.parquet")
    return truth


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    """One biased and one de-biased model trained on the toy survey (a few seconds each)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("toy")
    write_toy_survey(root)
    common = dict(catalog_path=root / "catalog.fits", workflow=root / "workflow.yaml", width=8, progress=False)
    biased = train_model(method="biased", out=root / "biased.pt", **common)
    debiased = train_model(method="debiased", out=root / "debiased.pt", **common)
    return root, biased, debiased


def test_doctests():
    assert doctest.testmod(relabel.train.penalty).failed == 0
    for module in (relabel.train.split, relabel.train.penalty, relabel.train.loop, relabel.train.options,
                   relabel.train.schedule, relabel.train.selection, relabel.bias.metric):
        assert doctest.testmod(module).failed == 0


# --- the bias term ------------------------------------------------------------------------


def _random_table(n=600, seed=0):
    rng = np.random.default_rng(seed)
    intrinsic = pd.DataFrame({"M": rng.normal(size=n).astype(np.float32), "R": rng.normal(size=n).astype(np.float32)})
    observables = pd.DataFrame({"RES": rng.uniform(size=n).astype(np.float32), "Z": rng.uniform(size=n)})
    return intrinsic, observables


def test_bias_term_equals_soft_L_on_a_full_batch_without_memory():
    intrinsic, observables = _random_table()
    best = ["high", "low"]
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(len(intrinsic), 3)) + 2 * observables[["RES"]].to_numpy()
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    leaf, obs_bin = penalty_cells(intrinsic, observables, best, 3, 4)
    # The cells are L's: the same number of objects in every (observable, leaf, bin).
    counts = bin_fractions(intrinsic, observables, np.zeros(len(leaf), dtype=int), 1, 3, 4, best).n_bin
    for j in range(2):
        np.testing.assert_array_equal(np.bincount(leaf * 4 + obs_bin[:, j], minlength=32).reshape(8, 4), counts[j])
    expected = labeling_bias(intrinsic, observables, probs, None, 3, 4, best)
    for memory in (False, True):  # with memory, the first full batch is the whole memory
        penalty = BiasPenalty(torch.tensor(leaf), torch.tensor(obs_bin), 8, 4, [3, 0], 3, memory=memory)
        assert float(penalty(torch.tensor(probs), torch.arange(len(leaf)))) == pytest.approx(expected, rel=1e-6)


def _cells(n=400):
    return torch.arange(n) % 4, (torch.arange(n) // 4 % 5)[:, None]


def test_bias_term_is_zero_without_dependence_and_positive_with_it():
    leaf, obs_bin = _cells()
    flat = torch.stack([0.2 + 0.15 * leaf, 0.8 - 0.15 * leaf], dim=1).double()  # depends on the leaf only
    pen = BiasPenalty(leaf, obs_bin, 4, 5, [4], 2, memory=False)
    assert float(pen(flat, torch.arange(400))) < 1e-5
    tilted = flat.clone()
    tilted[:, 0] += 0.02 * obs_bin[:, 0]
    tilted[:, 1] -= 0.02 * obs_bin[:, 0]
    assert float(pen(tilted, torch.arange(400))) > 0.01


def test_bias_term_gradient_reaches_the_model_but_not_through_the_reference():
    torch.manual_seed(0)
    net = MorphologyCNN(1, 2, width=4).eval()  # batch norm on running statistics: images do not mix
    x = torch.randn(40, 1, 16, 16, requires_grad=True)
    leaf = torch.zeros(40, dtype=torch.long)
    obs_bin = (torch.arange(40) % 2)[:, None]
    pen = BiasPenalty(leaf, obs_bin, 1, 2, [1], 2)
    pen(torch.softmax(net(x), 1).detach(), torch.arange(40))  # fill the memory
    value = pen(torch.softmax(net(x[:20]), 1), torch.arange(20))
    value.backward()
    assert net.stem[0].weight.grad.abs().sum() > 0
    per_image = x.grad[:20].abs().sum(dim=(1, 2, 3))
    pulled = obs_bin[:20, 0] == 0
    assert (per_image[pulled] > 0).float().mean() > 0.8  # (a dead-ReLU image may get none)
    assert (per_image[~pulled] == 0).all()  # the reference bin is detached


def test_memory_keeps_every_objects_latest_probabilities():
    leaf, obs_bin = torch.zeros(8, dtype=torch.long), (torch.arange(8) // 4)[:, None]
    pen = BiasPenalty(leaf, obs_bin, 1, 2, [1], 2)
    tilted = torch.stack([0.1 * obs_bin[:, 0], 1 - 0.1 * obs_bin[:, 0]], dim=1).double()
    assert float(pen(tilted, torch.arange(8))) == pytest.approx(0.1 / 2**0.5)
    flat = torch.full((4, 2), 0.5, dtype=torch.float64)
    # A batch of the four worse-observed objects: alone it has no reference bin, so B = 0; with the
    # memory, the reference objects count with what they predicted last time (0.1, 0.9).
    assert float(BiasPenalty(leaf, obs_bin, 1, 2, [1], 2, memory=False)(flat, torch.arange(4))) < 1e-5
    assert float(pen(flat, torch.arange(4))) == pytest.approx(0.4 / 2**0.5)
    # Every object seen again with flat probabilities: their old values are gone.
    assert float(pen(torch.full((4, 2), 0.5, dtype=torch.float64), torch.arange(4, 8))) < 1e-5


# --- training -----------------------------------------------------------------------------


def test_validation_split_depends_on_ids_and_seed_only():
    ids = np.arange(1000, 5000)
    mask = validation_mask(ids, seed=3, val_fraction=0.25)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(validation_mask(ids[shuffled], 3, 0.25), mask[shuffled])
    assert 0.22 < mask.mean() < 0.28
    assert (validation_mask(ids, 4, 0.25) != mask).any()
    with pytest.raises(ConfigError):
        validation_mask(ids, 0, 1.0)


def test_debiased_training_lowers_L_of_predictions(toy_models):
    root, biased, debiased = toy_models
    b, d = biased.meta.metrics["best"], debiased.meta.metrics["best"]
    assert b["val_L_soft"] > 0.15  # the biased model learned the labels' bias ...
    assert d["val_L_soft"] < 0.5 * b["val_L_soft"]  # ... the de-biased one much less of it
    assert d["val_accuracy"] > 0.75  # and it did not collapse to one class
    assert debiased.meta.metrics["collapse_guard_passed"]
    assert debiased.meta.method == "debiased" and debiased.meta.lam == 10.0
    assert biased.meta.lam == 0.0
    assert [h["epoch"] for h in debiased.history] == list(range(1, len(debiased.history) + 1))
    # The model in the file is the best epoch's.
    assert debiased.meta.metrics["best_epoch"] == debiased.best_epoch


def test_training_is_deterministic_on_cpu(tmp_path, toy_models):
    root = toy_models[0]
    runs = [train_model(root / "catalog.fits", root / "workflow.yaml", "debiased", tmp_path / f"m{i}.pt", epochs=2,
                        width=4, progress=False) for i in range(2)]
    a, b = (load_checkpoint(r.path)[0].state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_records_what_inference_needs(toy_models):
    root, _, debiased = toy_models
    model, meta = load_checkpoint(debiased.path)
    assert meta.classes == ["elliptical", "spiral"] and meta.bands == ["r"] and meta.size == 16
    assert meta.normalisation["name"] == "arcsinh" and len(meta.normalisation["scale"]) == 1
    assert meta.workflow["intrinsic"] == ["MASS"]
    assert meta.binning["log2_bins_int"] == 1 and meta.binning["bins_obs"] == 2
    assert meta.split["val_fraction"] == 0.3 and meta.split["n_val"] > 0
    assert json.dumps(meta.metrics)  # plain JSON


def test_bad_options_are_config_errors(toy_models, tmp_path):
    root = toy_models[0]
    with pytest.raises(ConfigError, match="method"):
        train_model(root / "catalog.fits", root / "workflow.yaml", "fancy", tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="lambda"):
        train_model(root / "catalog.fits", root / "workflow.yaml", "debiased", tmp_path / "m.pt", lam=-1)


# --- evaluation ---------------------------------------------------------------------------


def test_evaluate_reports_bias_and_accuracy_on_held_out_rows(toy_models):
    root, biased, debiased = toy_models
    out = {name: evaluate_model(root / "catalog.fits", model.path, truth=root / "truth.parquet")
           for name, model in (("biased", biased), ("debiased", debiased))}
    for res in out.values():
        assert res["n"] == debiased.meta.split["n_val"]
        for key in ("L_labels", "null_L_labels", "L_model", "null_L_model", "L_model_soft", "accuracy_labels",
                    "accuracy_truth", "accuracy_truth_labels"):
            assert 0 <= res[key] <= 1, key
        assert len(res["accuracy_truth_by_quartile"]) == 4
        assert set(res["fraction_by_quartile"]) == {"elliptical", "spiral"}
        assert all(len(v) == 4 for v in res["true_fraction_by_quartile"].values())
        json.dumps(res)
    # The toy's labels are biased; the de-biased model is less so, and closer to the truth at low resolution.
    assert out["biased"]["L_model"] > out["debiased"]["L_model"]
    assert out["debiased"]["accuracy_truth_by_quartile"][0] > out["biased"]["accuracy_truth_by_quartile"][0]
    everything = evaluate_model(root / "catalog.fits", debiased.path, all_rows=True)
    assert everything["n"] == 1600 and everything["accuracy_truth"] is None
    assert everything["true_fraction_by_quartile"] is None


def test_collapse_guard_flags_a_lambda_that_ruins_the_accuracy(toy_models, tmp_path, capsys):
    root = toy_models[0]
    result = train_model(root / "catalog.fits", root / "workflow.yaml", "debiased", tmp_path / "m.pt", lam=1e3,
                         epochs=6, warmup_epochs=3, width=8, progress=False)
    guard = [h["val_balanced_accuracy"] for h in result.history]
    assert max(guard[:3]) > 0.9  # the warm-up learned the classes ...
    assert max(guard[3:]) < max(guard) - 0.1  # ... which lambda = 1000 then destroyed
    assert not result.meta.metrics["collapse_guard_passed"]
    assert guard[result.best_epoch - 1] == max(guard[3:])
    assert "lambda 1000 is probably too large" in capsys.readouterr().err


def test_a_run_that_stops_before_it_settles_is_flagged(toy_models, tmp_path, capsys):
    root = toy_models[0]
    # Two epochs at full lambda cannot show three steady ones.
    result = train_model(root / "catalog.fits", root / "workflow.yaml", "debiased", tmp_path / "short.pt",
                         epochs=4, warmup_epochs=2, width=8, progress=False, settle_window=3)
    saved = load_checkpoint(result.path)[1].metrics
    assert saved["settled"] is False and not result.settled
    assert saved["settlement"]["epochs_seen"] == 2 and saved["settlement"]["window"] == 3
    err = capsys.readouterr().err
    assert "training had not settled when it stopped" in err
    # The temperature's line says what it was fitted on, as the checkpoint records it.
    calibration = saved["calibration"]
    assert (f"temperature {calibration['temperature']:.3g}, fitted on {calibration['n_galaxies']} best-observed "
            f"confident validation galaxies {calibration['views']}") in err
    # Every run records its settlement, computed from its own history.
    for model in toy_models[1:]:
        s = model.meta.metrics["settlement"]
        assert model.meta.metrics["settled"] == s["settled"] == (s["class_share_swing"] <= 0.05
                                                                 and s["accuracy_swing"] <= 0.05)


def test_patience_does_not_stop_a_debiased_run_that_has_not_settled(toy_models, tmp_path):
    root = toy_models[0]
    # patience 1 stops a run at the first epoch without a better criterion; an unsettled de-biased run goes on.
    kwargs = dict(epochs=7, warmup_epochs=2, width=8, progress=False, patience=1, settle_window=3)
    strict = train_model(root / "catalog.fits", root / "workflow.yaml", "debiased", tmp_path / "strict.pt",
                         settle_tolerance=-1.0, **kwargs)
    assert len(strict.history) == 7 and strict.stop_reason == "reached 7 epochs"
    assert not strict.settled  # a negative tolerance: no swing is small enough, so it never settles nor stops early
    # The same run with a loose tolerance settles as soon as it has three epochs at full lambda, and may stop.
    loose = train_model(root / "catalog.fits", root / "workflow.yaml", "debiased", tmp_path / "loose.pt",
                        settle_tolerance=1.0, **kwargs)
    settled_from = 2 + 3  # warm-up, then a window of three epochs
    assert loose.settled and loose.best_epoch >= settled_from
    if loose.stop_reason.startswith("no better"):
        assert len(loose.history) >= settled_from
