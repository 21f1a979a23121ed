"""A network that also takes the catalog's intrinsic columns: what it learns, how it is saved, run and refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd
import pytest
import torch

import relabel
from relabel import status as st
from relabel.errors import CheckpointError, ConfigError
from relabel.evaluate import evaluate_model
from relabel.model import MorphologyCNN, load_checkpoint
from relabel.model.inputs import input_columns
from relabel.run.clusters import ClusterOptions
from relabel.train import train_model
from tests.train.test_loop import write_tile_survey

WORKFLOW = textwrap.dedent(
    """\
    name: colour-only
    catalog: {path: catalog.fits, hdu: 1, id: OBJID, missing: {COLOR: [-99]}}
    labels:
      probabilities:
        - {column: P_EL, class: elliptical, threshold: 0.8}
        - {column: P_CS, class: spiral, threshold: 0.8}
    intrinsic: [COLOR]
    observables:
      - {column: RESOLUTION, best: high}
    cutouts: {layout: tiles, root: ., size: 16, bands: [r]}
    bias: {log2_bins_int: 1, bins_obs: 2, n_boot: 2, n_null: 2}
    train: {epochs: 6, batch_size: 64, lambda: 3.0, val_fraction: 0.3, seed: 0}
    """
)


def write_colour_only_survey(root: Path, n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """Images that show nothing of the class (the same noisy blob for every galaxy) and a class set by COLOR.

    Spirals are blue (COLOR < 0.6) with probability 0.95, ellipticals red: like a survey of
    one band, whose images cannot show the colour that the catalog knows. Labels are right.
    """
    rng = np.random.default_rng(seed)
    colour = rng.uniform(0.2, 1.0, n)
    spiral = np.where(colour < 0.6, rng.uniform(size=n) < 0.95, rng.uniform(size=n) < 0.05)
    yy, xx = np.mgrid[:16, :16] - 7.5
    blob = np.exp(-0.5 * (np.hypot(xx, yy) / 2.0) ** 2)
    images = (blob[None] + rng.normal(0, 0.1, (n, 16, 16)))[:, None].astype(np.float32)
    data = np.zeros(n, dtype=[("OBJID", ">i8"), ("RA", ">f8"), ("DEC", ">f8"), ("P_EL", ">f4"), ("P_CS", ">f4"),
                              ("COLOR", ">f4"), ("RESOLUTION", ">f4"), ("TILE", "S16"), ("TILE_INDEX", ">i4")])
    data["OBJID"] = 1 + np.arange(n)
    data["RA"], data["DEC"] = rng.uniform(0, 360, n), rng.uniform(-30, 30, n)
    data["P_CS"] = np.where(spiral, 0.9, 0.1)
    data["P_EL"] = 1 - data["P_CS"]
    data["COLOR"], data["RESOLUTION"] = colour, rng.uniform(0, 1, n)
    return write_tile_survey(root, data, images, spiral, WORKFLOW)


@pytest.fixture(scope="module")
def colour_models(tmp_path_factory):
    """The same biased training with and without the catalog input (a few seconds each)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("colour")
    write_colour_only_survey(root)
    common = dict(catalog_path=root / "catalog.fits", workflow=root / "workflow.yaml", method="biased", width=8,
                  progress=False)
    images_only = train_model(out=root / "images.pt", catalog_inputs="none", **common)
    with_inputs = train_model(out=root / "inputs.pt", catalog_inputs="intrinsic", **common)
    return root, images_only, with_inputs


def test_the_catalog_input_gives_what_the_images_cannot_show(colour_models):
    root, images_only, with_inputs = colour_models
    plain = evaluate_model(root / "catalog.fits", images_only.path, truth=root / "truth.parquet")
    informed = evaluate_model(root / "catalog.fits", with_inputs.path, truth=root / "truth.parquet")
    assert plain["accuracy_truth"] < 0.7, "the images alone carry no class: near the majority share"
    assert informed["accuracy_truth"] > 0.88, "COLOR decides the class 95 % of the time"
    assert with_inputs.meta.catalog_inputs == ["COLOR"] and images_only.meta.catalog_inputs == []


def test_the_inputs_and_their_scaling_are_saved_with_the_weights(colour_models):
    root, _, with_inputs = colour_models
    model, meta = load_checkpoint(with_inputs.path)
    colour = fitsio.read(str(root / "catalog.fits"), columns=["COLOR"])["COLOR"].astype(np.float64)
    train = ~relabel.train.validation_mask(np.arange(1, len(colour) + 1), 0, 0.3)
    q25, q50, q75 = np.quantile(colour[train], [0.25, 0.5, 0.75])
    # The scaling comes from the training rows only: the validation galaxies stay unseen.
    assert model.input_offset.item() == pytest.approx(q50, abs=1e-5)
    assert model.input_scale.item() == pytest.approx((q75 - q25) / 1.349, rel=1e-4)
    x = torch.zeros(4, 1, 16, 16)
    blue, red = torch.full((4, 1), 0.3), torch.full((4, 1), 0.9)
    with torch.inference_mode():
        p_blue = torch.softmax(model(x, blue), 1)[:, 1]
        p_red = torch.softmax(model(x, red), 1)[:, 1]
        with pytest.raises(ValueError, match="COLOR"):
            model(x)
    assert (p_blue > 0.7).all() and (p_red < 0.3).all(), "blue galaxies are spirals, red ones ellipticals"
    with pytest.raises(ValueError, match="no catalog inputs"):
        MorphologyCNN(1, 2, width=4)(x, blue)


def test_a_run_gives_rows_missing_an_input_a_status(colour_models, tmp_path):
    root, _, with_inputs = colour_models
    data = fitsio.read(str(root / "catalog.fits"))
    bad = {3: np.nan, 5: np.inf, 8: -99.0}  # every way a value is missing: NaN, inf, the declared code
    for row, value in bad.items():
        data["COLOR"][row] = value
    catalog = tmp_path / "catalog.fits"
    fitsio.write(str(catalog), data, extname="CATALOG", clobber=True)
    (tmp_path / "tiles").symlink_to(root / "tiles")
    (tmp_path / "workflow.yaml").write_text(WORKFLOW)
    relabel.run_catalog(catalog, with_inputs.path, tmp_path / "out", workflow=tmp_path / "workflow.yaml",
                        cluster=ClusterOptions(kind="none"), bias=False, progress=False, shard_size=256)
    out = pd.read_parquet(tmp_path / "out").sort_values("row").reset_index(drop=True)
    assert sorted(np.flatnonzero(out["status"] != st.OK)) == sorted(bad)
    assert (out.loc[list(bad), "status"] == st.MISSING_INPUT).all()
    assert out.loc[list(bad), "p_spiral"].isna().all() and out.loc[list(bad), "label"].isna().all()
    good = out["status"] == st.OK
    blue, red = out["COLOR"] < 0.5, out["COLOR"] > 0.7  # away from the colour boundary at 0.6
    assert (out.loc[good & blue, "p_spiral"] > 0.5).mean() > 0.9
    assert (out.loc[good & red, "p_spiral"] < 0.5).mean() > 0.9

    # The same rows through predict_frame (a DataFrame, no Parquet): the same statuses and probabilities.
    frame = relabel.predict_frame(pd.DataFrame(data.byteswap().view(data.dtype.newbyteorder())), with_inputs.path,
                                  tmp_path / "workflow.yaml")
    assert frame["status"].tolist() == out["status"].tolist()
    np.testing.assert_allclose(frame["p_spiral"], out["p_spiral"], atol=1e-6, equal_nan=True)


def test_a_catalog_without_the_models_input_is_refused_before_anything_is_written(colour_models, tmp_path):
    root, _, with_inputs = colour_models
    (tmp_path / "tiles").symlink_to(root / "tiles")
    (tmp_path / "catalog.fits").symlink_to(root / "catalog.fits")
    (tmp_path / "workflow.yaml").write_text(WORKFLOW.replace("intrinsic: [COLOR]", "intrinsic: [RESOLUTION]"))
    with pytest.raises(CheckpointError, match="COLOR"):
        relabel.run_catalog(tmp_path / "catalog.fits", with_inputs.path, tmp_path / "out",
                            workflow=tmp_path / "workflow.yaml", cluster=ClusterOptions(kind="none"), bias=False,
                            progress=False)
    assert not (tmp_path / "out").exists()


def test_the_lambda_path_trains_every_lambda_with_the_inputs(colour_models, tmp_path):
    root, _, with_inputs = colour_models
    from relabel.train.lambda_path import select_lambda

    result = select_lambda(root / "catalog.fits", root / "workflow.yaml", tmp_path / "auto.pt", path=(1.0, 3.0),
                           reference_model=with_inputs.path, epochs=4, width=8, progress=False,
                           catalog_inputs="intrinsic")
    model, meta = load_checkpoint(result.path)
    assert meta.catalog_inputs == ["COLOR"] and meta.metrics["chosen_lambda"] in (1.0, 3.0)
    assert len(meta.metrics["lambda_selection"]["path"]) >= 1
    with pytest.raises(ConfigError, match="catalog inputs"):  # an image-only reference measures another network
        select_lambda(root / "catalog.fits", root / "workflow.yaml", tmp_path / "mixed.pt", path=(1.0,),
                      reference_model=colour_models[1].path, epochs=4, width=8, progress=False,
                      catalog_inputs="intrinsic")
    assert not (tmp_path / "mixed.pt").exists()


def test_an_unknown_choice_is_refused(tmp_path):
    write_colour_only_survey(tmp_path, n=200)
    with pytest.raises(ConfigError, match="catalog_inputs"):
        train_model(tmp_path / "catalog.fits", tmp_path / "workflow.yaml", "biased", tmp_path / "m.pt",
                    catalog_inputs="colour", progress=False)
    assert not (tmp_path / "m.pt").exists()


def test_a_network_with_catalog_inputs_is_calibrated_on_its_galaxies_as_observed(small_survey):
    # Degraded views keep a bright, nearby galaxy's intrinsic values, a pairing the survey hardly holds:
    # for such a network T is fitted on the galaxies as observed (on the deep preset the degraded views'
    # T gave an ECE of 0.046-0.070 against the truth, as observed 0.022).
    import relabel.train as rt
    from relabel.config import load_workflow
    from relabel.model.calibration import calibrate_on_validation

    workflow = load_workflow(small_survey.workflow)
    data = rt.load_labelled_cutouts(small_survey.catalog, workflow, 0, 0.25, None, progress=False)
    rows = np.flatnonzero(data.is_val)
    calibrations = {}
    for choice in ("none", "intrinsic"):
        model = MorphologyCNN(2, 2, width=4, catalog_inputs=input_columns(choice, workflow.intrinsic))
        if choice == "intrinsic":
            model.set_input_scaling(torch.from_numpy(data.intrinsic.to_numpy(np.float32)))
        calibrations[choice] = calibrate_on_validation(model.eval(), data, rows, workflow, 1, 2)
    assert calibrations["none"].temperature_conditions is not None, "an image-only network is shown the views"
    assert calibrations["intrinsic"].views == "as observed"
    assert calibrations["intrinsic"].temperature_conditions is None


def test_a_null_in_a_nullable_input_column_is_a_missing_input(colour_models):
    # Parquet and pandas nulls (pd.NA in a nullable float or integer column), besides NaN, inf and codes.
    root, _, with_inputs = colour_models
    data = fitsio.read(str(root / "catalog.fits"))
    frame = pd.DataFrame(data.byteswap().view(data.dtype.newbyteorder())).iloc[:40].reset_index(drop=True)
    for dtype in ("Float64", "Int64"):
        rows = frame.copy()
        colour = rows["COLOR"].astype(np.float64)
        rows["COLOR"] = (colour * 100).round().astype(dtype) if dtype == "Int64" else colour.astype(dtype)
        rows.loc[[2, 9], "COLOR"] = pd.NA
        out = relabel.predict_frame(rows, with_inputs.path, root / "workflow.yaml")
        assert sorted(np.flatnonzero(out["status"] != st.OK)) == [2, 9], dtype
        assert (out.loc[[2, 9], "status"] == st.MISSING_INPUT).all() and out.loc[[2, 9], "p_spiral"].isna().all()
