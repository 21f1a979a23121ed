"""The catalog-level correction (Hart et al. 2016 style): toy tables with a known dependence, and the command."""

from __future__ import annotations

import json
import textwrap

import fitsio
import numpy as np
import pandas as pd
import pytest

from relabel.baselines import catalog_level_correction, debias_catalog, quantile_map
from relabel.bias.metric import labeling_bias, repetition_options
from relabel.cli import main
from relabel.errors import ConfigError, OutputError


def toy_fractions(n: int, seed: int, injected: bool):
    """Spiral vote fractions whose true share depends on an intrinsic column only; optionally
    shrunk at low values of the observable (worse resolution), as volunteers miss arms there."""
    rng = np.random.default_rng(seed)
    intrinsic = rng.normal(size=(n, 2))
    observable = rng.uniform(0.0, 1.0, n)
    spiral = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * intrinsic[:, 0]))
    f_spiral = np.where(spiral, rng.beta(8, 2, n), rng.beta(2, 8, n))
    if injected:
        f_spiral = f_spiral * (0.4 + 0.6 * observable)
    return np.stack([1.0 - f_spiral, f_spiral], axis=1), intrinsic, observable


def test_quantile_map_onto_itself_is_identity_with_ties():
    values = np.array([0.0, 0.25, 0.25, 0.5, 0.5, 0.5, 1.0])
    assert np.array_equal(quantile_map(values, values), values)


def test_unbiased_table_is_unchanged_within_noise():
    fractions, intrinsic, observable = toy_fractions(8000, seed=1, injected=False)
    corrected = catalog_level_correction(fractions, intrinsic, observable, "high", 2, 5)
    # Only sampling noise between bins of ~400 objects is mapped away.
    assert np.abs(corrected - fractions).mean() < 0.03
    before = labeling_bias(intrinsic, observable[:, None], fractions.argmax(1), 2, 2, 5, ["high"])
    after = labeling_bias(intrinsic, observable[:, None], corrected.argmax(1), 2, 2, 5, ["high"])
    assert after < before + 0.01


@pytest.mark.parametrize("best", ["high", "low"])
def test_injected_dependence_is_removed(best):
    fractions, intrinsic, observable = toy_fractions(8000, seed=2, injected=True)
    if best == "low":  # the same table with the observable's scale reversed (e.g. redshift)
        observable = 1.0 - observable
    corrected = catalog_level_correction(fractions, intrinsic, observable, best, 2, 5)
    worst = observable < 0.2 if best == "high" else observable > 0.8
    best_rows = observable > 0.8 if best == "high" else observable < 0.2
    assert fractions[best_rows, 1].mean() - fractions[worst, 1].mean() > 0.2
    assert abs(corrected[best_rows, 1].mean() - corrected[worst, 1].mean()) < 0.02
    before = labeling_bias(intrinsic, observable[:, None], fractions.argmax(1), 2, 2, 5, [best])
    after = labeling_bias(intrinsic, observable[:, None], corrected.argmax(1), 2, 2, 5, [best])
    assert after < before / 3
    # Fractions stay fractions, and each row keeps its total.
    assert corrected.min() >= 0 and corrected.max() <= 1
    assert np.allclose(corrected.sum(1), fractions.sum(1))


WORKFLOW = textwrap.dedent(
    """\
    name: toy
    catalog: {id: OBJID}
    labels:
      probabilities:
        - {column: P_EL, class: elliptical, threshold: 0.7}
        - {column: P_CS, class: spiral, threshold: 0.7}
    intrinsic: [ABS_MAG, R50_KPC]
    observables:
      - {column: RESOLUTION, best: high}
      - {column: REDSHIFT, best: low}
    bias: {log2_bins_int: 2, bins_obs: 4}
    """
)


def write_toy_catalog(path, n=2000, seed=3):
    fractions, intrinsic, observable = toy_fractions(n, seed, injected=True)
    data = np.zeros(n, dtype=[("OBJID", ">i8"), ("P_EL", ">f4"), ("P_CS", ">f4"), ("ABS_MAG", ">f4"),
                              ("R50_KPC", ">f4"), ("RESOLUTION", ">f4"), ("REDSHIFT", ">f8")])
    data["OBJID"] = 10 + np.arange(n)
    data["P_EL"], data["P_CS"] = fractions[:, 0], fractions[:, 1]
    data["ABS_MAG"], data["R50_KPC"] = intrinsic[:, 0], intrinsic[:, 1]
    data["RESOLUTION"], data["REDSHIFT"] = observable, 0.3 - 0.2 * observable
    data["P_CS"][5] = np.nan  # one row the correction cannot use
    fitsio.write(str(path), data, extname="CATALOG", clobber=True)
    return data


def test_debias_catalog_command_writes_and_refuses_to_replace(tmp_path, capsys):
    write_toy_catalog(tmp_path / "cat.fits")
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    out = tmp_path / "corrected.parquet"
    args = ["debias-catalog", str(tmp_path / "cat.fits"), "--config", str(tmp_path / "wf.yaml"), "--out", str(out)]
    assert main(args) == 0
    table = pd.read_parquet(out)
    assert len(table) == 2000 and table["OBJID"].iloc[0] == 10
    assert table.loc[5, "status"] == "missing_values" and np.isnan(table.loc[5, "p_spiral"])
    assert pd.isna(table.loc[5, "label"])
    ok = table["status"] == "ok"
    assert set(table.loc[ok, "label"]) <= {"elliptical", "spiral", "uncertain"}
    # Worse resolution, fewer confident spirals in the original labels, not after the correction.
    worst, best = ok & (table["RESOLUTION"] < 0.25), ok & (table["RESOLUTION"] > 0.75)
    share = lambda column, rows: (table.loc[rows, column] == "spiral").mean()  # noqa: E731
    assert share("label_original", best) - share("label_original", worst) > 0.15
    assert abs(share("label", best) - share("label", worst)) < 0.08

    before = out.read_bytes()
    assert main(args) == 2
    assert "exists; use --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(args + ["--overwrite", "--observable", "REDSHIFT", "--json"]) == 0
    assert '"observable": "REDSHIFT"' in capsys.readouterr().out


def test_debias_catalog_needs_vote_fractions_and_a_known_observable(tmp_path):
    write_toy_catalog(tmp_path / "cat.fits", n=200)
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    with pytest.raises(ConfigError, match="not one of the workflow's observables"):
        debias_catalog(tmp_path / "cat.fits", tmp_path / "wf.yaml", tmp_path / "o.parquet", observable="SNR")
    categorical = WORKFLOW.replace(
        "  probabilities:\n    - {column: P_EL, class: elliptical, threshold: 0.7}\n"
        "    - {column: P_CS, class: spiral, threshold: 0.7}\n",
        "  label_column: CLASS\n  classes: [elliptical, spiral]\n")
    (tmp_path / "cat.yaml").write_text(categorical)
    with pytest.raises(ConfigError, match="needs vote fractions"):
        debias_catalog(tmp_path / "cat.fits", tmp_path / "cat.yaml", tmp_path / "o.parquet")
    (tmp_path / "o.parquet").write_text("x")
    with pytest.raises(OutputError, match="o.parquet exists"):
        debias_catalog(tmp_path / "cat.fits", tmp_path / "wf.yaml", tmp_path / "o.parquet")


def test_comparison_table_measures_every_method_on_the_same_galaxies(small_survey, small_model, tmp_path):
    import yaml

    from relabel.config import Workflow
    from relabel.evaluate import CORRECTION_ROW, LABELS_ROW, compare_methods, comparison_frame, evaluate_model

    # 150 held-out galaxies: coarse bins, so that the labels' confident subset fills them.
    mapping = yaml.safe_load(small_survey.workflow.read_text())
    mapping["bias"].update(log2_bins_int=1, bins_obs=3, n_boot=3, n_null=3)
    workflow = Workflow.from_dict(mapping, base_dir=small_survey.root)
    result = compare_methods(small_survey.catalog, {"biased": small_model, "again": small_model},
                             small_survey.truth, workflow=workflow, device="cpu")
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == [LABELS_ROW, CORRECTION_ROW, "biased", "again"]
    # The same model twice gives the same numbers; the labels cover only their confident galaxies.
    for key in ("accuracy", "excess_L", "ece", "fraction_error"):
        assert rows["biased"][key] == rows["again"][key]
    assert rows[CORRECTION_ROW]["coverage"] == 1.0 and rows["biased"]["n"] == result["n"]
    assert 0 < rows[LABELS_ROW]["coverage"] < 1
    # Consistent with relabel evaluate on the same held-out rows.
    single = evaluate_model(small_survey.catalog, small_model, truth=small_survey.truth, workflow=workflow,
                            device="cpu")
    assert result["n"] == single["n"]
    assert rows["biased"]["accuracy"] == pytest.approx(single["accuracy_truth"])
    assert rows["biased"]["accuracy_by_quartile"] == pytest.approx(single["accuracy_truth_by_quartile"])
    assert rows[LABELS_ROW]["accuracy"] == pytest.approx(single["accuracy_truth_labels"])
    assert rows["biased"]["excess_L"] == pytest.approx(single["excess_L_model"])
    for row in rows.values():
        assert 0 <= row["ece"] <= 1 and 0 <= row["accuracy"] <= 1
        assert sum(result["reliability"][row["method"]]["count"]) == result["n"]
    frame = comparison_frame(result)
    assert list(frame.index) == [LABELS_ROW, CORRECTION_ROW, "biased", "again", "truth"]
    assert frame.loc["truth", "spiral_q1"] == pytest.approx(result["true_fraction_by_quartile"]["spiral"][0])
    # The truth's own L, on the same held-out rows and bins: the floor an unbiased classifier keeps.
    from astropy.table import Table

    from relabel.bias.metric import bias_with_errors
    from relabel.model.checkpoint import load_checkpoint
    from relabel.train.split import validation_mask

    catalog = Table.read(small_survey.catalog).to_pandas()
    split = load_checkpoint(small_model)[1].split
    held = catalog[validation_mask(catalog["OBJID"].to_numpy(), split["seed"], split["val_fraction"])]
    true_class = pd.read_parquet(small_survey.truth).set_index("OBJID").loc[held["OBJID"], "TRUE_CLASS"]
    codes = pd.Categorical(true_class, categories=["elliptical", "spiral"]).codes
    params = workflow.bias
    expected = bias_with_errors(held[workflow.intrinsic], held[workflow.observable_columns], codes, 2,
                                params["log2_bins_int"], params["bins_obs"], [o.best for o in workflow.observables],
                                **repetition_options(params))
    assert len(held) == result["n"]
    assert result["truth_L"]["L"] == pytest.approx(expected.L)
    assert result["truth_L"]["excess_L"] == pytest.approx(expected.excess)
    assert frame.loc["truth", "excess_L"] == pytest.approx(expected.excess)
    json.dumps(result)  # plain data for the report


def test_comparison_corrects_along_each_observable_asked(small_survey, small_model, tmp_path):
    import yaml

    from relabel.baselines import catalog_level_correction
    from relabel.config import Workflow
    from relabel.evaluate import CORRECTION_ROW, LABELS_ROW, compare_methods
    from relabel.model.checkpoint import load_checkpoint
    from relabel.train.split import validation_mask

    mapping = yaml.safe_load(small_survey.workflow.read_text())
    mapping["bias"].update(log2_bins_int=1, bins_obs=3, n_boot=3, n_null=3)
    workflow = Workflow.from_dict(mapping, base_dir=small_survey.root)
    result = compare_methods(small_survey.catalog, {"biased": small_model}, small_survey.truth, workflow=workflow,
                             device="cpu", correction_observables=["REDSHIFT", "RESOLUTION"])
    rows = {r["method"]: r for r in result["rows"]}
    along_redshift = CORRECTION_ROW
    assert list(rows) == [LABELS_ROW, along_redshift, f"{CORRECTION_ROW} (RESOLUTION)", "biased"]
    assert result["correction_observables"] == ["REDSHIFT", "RESOLUTION"]
    # Each row is the correction of the whole catalog along its own observable, read on the held-out rows.
    catalog = fitsio.read(small_survey.catalog)
    truth = pd.read_parquet(small_survey.truth).set_index("OBJID").loc[catalog["OBJID"], "TRUE_CLASS"].to_numpy()
    intrinsic = np.column_stack([catalog[c] for c in workflow.intrinsic])
    split = load_checkpoint(small_model)[1].split
    held_out = validation_mask(catalog["OBJID"], split["seed"], split["val_fraction"])
    for column, best, name in (("REDSHIFT", "low", along_redshift), ("RESOLUTION", "high",
                                                                      f"{CORRECTION_ROW} (RESOLUTION)")):
        corrected = catalog_level_correction(np.column_stack([catalog["P_EL"], catalog["P_CS"]]), intrinsic,
                                             catalog[column], best, 1, 3)
        hard = np.where(corrected[:, 1] > corrected[:, 0], "spiral", "elliptical")
        assert rows[name]["accuracy"] == pytest.approx((hard[held_out] == truth[held_out]).mean())
    assert rows[along_redshift]["accuracy"] != rows[f"{CORRECTION_ROW} (RESOLUTION)"]["accuracy"]
    with pytest.raises(ConfigError, match="MAG_R: not among the workflow's observables"):
        compare_methods(small_survey.catalog, {"biased": small_model}, small_survey.truth, workflow=workflow,
                        device="cpu", correction_observables=["MAG_R"])


def test_comparison_refuses_models_of_different_splits(small_survey, small_model, tmp_path):
    from relabel.evaluate import compare_methods
    from relabel.model.checkpoint import load_checkpoint, save_checkpoint

    net, meta = load_checkpoint(small_model)
    meta.split = dict(meta.split, seed=meta.split["seed"] + 1)
    save_checkpoint(net, meta, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="different splits"):
        compare_methods(small_survey.catalog, {"a": small_model, "b": tmp_path / "other.pt"}, small_survey.truth)
