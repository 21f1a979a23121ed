"""What the report says: units, definitions, captions, a like-for-like table, honest examples."""

import json

import numpy as np
import pandas as pd
import pytest

from relabel.errors import OutputError
from relabel.report import make_report
from relabel.report.columns import axis_label
from relabel.report.gallery import crop_to_galaxy, pick_examples
from relabel.report.numbers import binning_columns, comparison_table, truth_trends
from relabel.run.clusters import ClusterOptions
from relabel.run.pipeline import run_catalog


@pytest.fixture(scope="module")
def reported(small_survey, small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("content") / "out"
    run_catalog(small_survey.catalog, small_model, out, workflow=small_survey.workflow,
                cluster=ClusterOptions(kind="none"), progress=False, echo=lambda line: None)
    numbers = make_report(out, truth=small_survey.truth, report_dir=out.parent / "report")
    return out, numbers, (out.parent / "report" / "report.html").read_text()


def test_units_definitions_and_a_caption_under_every_figure(reported):
    _, numbers, html = reported
    for text in ("ABS_MAG: absolute magnitude (mag)", "R50_KPC: physical half-light radius (kpc)",
                 "PSF_FWHM: seeing, PSF FWHM (arcsec)", "RESOLUTION is the galaxy&#x27;s angular half-light radius"):
        assert text in html, text
    assert html.count("<figcaption>") == len(numbers["figures"]) == 6
    assert set(numbers["captions"]) == set(numbers["figures"])
    assert "null L" in numbers["captions"]["Labeling bias L"]
    assert "font-size:17px" in html  # body text readable, not matplotlib's default 6-pt subtitles


def test_bin_ranges_only_for_the_columns_the_bins_are_cut_in(reported, small_survey):
    from relabel.config import load_workflow

    wf = load_workflow(small_survey.workflow)
    assert wf.intrinsic == ["ABS_MAG", "R50_KPC", "COLOR_GR"]
    assert binning_columns(wf) == ["ABS_MAG", "R50_KPC"]  # 2 levels of the k-d tree
    _, numbers, _ = reported
    caption = numbers["captions"]["spiral fraction against RESOLUTION"]
    assert "median splits of ABS_MAG and R50_KPC" in caption and "COLOR_GR" not in caption


def test_like_for_like_table_compares_the_label_sets_on_the_same_galaxies(reported):
    out, numbers, html = reported
    table = numbers["comparison"]
    frame = pd.read_parquet(out)
    truth_rows = table["rows"]
    assert [r["n"] for r in truth_rows[:2]] == [len(frame), int((frame["label_original"] != "uncertain").sum())]
    assert [r["subset"].split(" (")[0] for r in truth_rows[2:]] == [f"RESOLUTION quartile {i} of 4" for i in range(1, 5)]
    for r in truth_rows:
        # every label set's fraction is over the same N galaxies (uncertain counts as not spiral)
        assert set(r["fraction"]) == {"original", "new", "truth"} and set(r["accuracy"]) == {"original", "new"}
        assert r["fraction"]["original"] <= 1 - r["uncertain_original"] + 1e-12
    everyone = truth_rows[0]
    assert everyone["fraction"]["new"] == pytest.approx((frame["label"] == "spiral").mean())
    assert "accuracy: original" in html


def test_comparison_without_truth_has_no_accuracy(reported, small_survey):
    from relabel.bias.table import run_workflow

    out, _, _ = reported
    wf, classes = run_workflow(out)
    frame = pd.read_parquet(out)
    table = comparison_table(frame, wf, classes, np.ones(len(frame), bool))
    assert all(r["accuracy"] is None for r in table["rows"]) and "truth" not in table["rows"][0]["fraction"]
    assert truth_trends(frame, wf, classes, np.ones(len(frame), bool)) == []


def test_truth_trend_inside_an_intrinsic_bin_is_called_out(reported, small_survey):
    from relabel.bias.table import run_workflow

    out, _, _ = reported
    wf, classes = run_workflow(out)
    frame = pd.read_parquet(out)
    n = len(frame)
    # a truth that rises with RESOLUTION in every bin: a real trend the reader must be told about
    res = frame["RESOLUTION"].to_numpy()
    frame["true_label"] = np.where(res > np.median(res), "spiral", "elliptical")
    trends = truth_trends(frame, wf, classes, np.ones(n, bool))
    assert trends and all(t["to"] > t["from"] for t in trends if t["observable"] == "RESOLUTION")
    assert set(trends[0]["ranges"]) == {"ABS_MAG", "R50_KPC"}


def test_gallery_is_stratified_by_true_class_and_quality_with_disagreements(reported, small_survey):
    from relabel.bias.table import run_workflow

    out, numbers, _ = reported
    wf, classes = run_workflow(out)
    frame = pd.read_parquet(out).merge(pd.read_parquet(small_survey.truth)[["OBJID", "TRUE_CLASS"]], on="OBJID")
    frame = frame.rename(columns={"TRUE_CLASS": "true_label"})
    picks = pick_examples(frame, wf, classes)
    cells = set(zip(picks["cls"], picks["agrees"], picks["quartile"]))
    assert len(cells) == len(picks)  # one galaxy per cell
    assert {c for c, _, _ in cells} == set(classes)  # both true classes shown
    assert {q for _, _, q in cells} == {0, 1, 2, 3}  # every quality quartile
    assert any(not a for _, a, _ in cells)  # disagreements are shown, not hidden
    assert (picks["cls"] == picks["true_label"]).all()
    assert "Example cutouts" in numbers["figures"]


def test_stamps_are_cropped_to_the_galaxy():
    yy, xx = np.mgrid[:64, :64] - 31.5
    rng = np.random.default_rng(1)

    def galaxy(r):
        return (np.exp(-(xx**2 + yy**2) / (2 * r**2)) + rng.normal(0, 0.01, (64, 64)))[None]

    small, large, huge = (crop_to_galaxy(galaxy(r)).shape[-1] for r in (1.5, 6.0, 40.0))
    assert 16 <= small < large < 64  # zoomed in, more for the smaller galaxy
    assert huge == 64  # larger than its stamp: shown whole, not cut
    assert crop_to_galaxy(rng.normal(0, 1, (2, 64, 64))).shape == (2, 64, 64)  # no galaxy: whole stamp


def test_report_refuses_to_replace_a_report_and_reads_fits_truth(reported, small_survey, tmp_path):
    import fitsio

    out, numbers, _ = reported
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        make_report(out, report_dir=out.parent / "report")
    truth = pd.read_parquet(small_survey.truth)
    table = np.zeros(len(truth), dtype=[("OBJID", ">i8"), ("TRUE_CLASS", "S12")])
    table["OBJID"] = truth["OBJID"].to_numpy()
    table["TRUE_CLASS"] = truth["TRUE_CLASS"].astype(str).to_numpy()  # blank-padded in FITS
    fitsio.write(str(tmp_path / "truth.fits"), table)
    again = make_report(out, truth=tmp_path / "truth.fits", report_dir=out.parent / "report", overwrite=True)
    assert again["comparison"] == numbers["comparison"]
    saved = json.loads((out.parent / "report" / "report.json").read_text())
    assert saved["comparison"] == numbers["comparison"]


def test_axis_labels_carry_units():
    assert axis_label("R50_KPC") == "R50_KPC: physical half-light radius (kpc)"
    assert axis_label("PSF_FWHM").endswith("(arcsec)")


def test_the_report_says_what_the_network_sees(reported, small_model):
    from relabel.model.checkpoint import read_checkpoint

    _, numbers, html = reported
    inputs = read_checkpoint(small_model)[1].catalog_inputs
    assert numbers["training"]["catalog_inputs"] == inputs
    expected = (f"sees the cutouts and the catalog's {', '.join(inputs)}" if inputs
                else "The network sees the cutouts only.")
    assert expected in html
