"""The comparison with the field's baselines: `relabel evaluate --compare --figure` and `relabel report --comparison`,
on real small trained models of a small simulated survey."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import yaml

from relabel.cli import main
from relabel.errors import OutputError
from relabel.evaluate import CORRECTION_ROW, LABELS_ROW, format_comparison
from relabel.report import make_report
from relabel.report.comparison import comparison_html, read_comparison
from relabel.run.clusters import ClusterOptions
from relabel.run.pipeline import run_catalog

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def coarse_workflow(small_survey, tmp_path_factory):
    """The survey's workflow with bins that 150 held-out galaxies fill (2 x 3, few repetitions)."""
    mapping = yaml.safe_load(small_survey.workflow.read_text())
    mapping["catalog"]["path"] = str(small_survey.catalog)
    mapping["cutouts"]["root"] = str(small_survey.root)
    mapping["bias"].update(log2_bins_int=1, bins_obs=3, n_boot=3, n_null=3)
    path = tmp_path_factory.mktemp("wf") / "coarse.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


@pytest.fixture(scope="module")
def debiased_model(small_survey, coarse_workflow, tmp_path_factory):
    """A de-biased model of the small survey, 2 epochs: real weights and a fitted temperature."""
    from relabel.train import train_model

    out = tmp_path_factory.mktemp("model") / "debiased.pt"
    return train_model(small_survey.catalog, coarse_workflow, "debiased", out, epochs=2, width=4,
                       progress=False).path


@pytest.fixture(scope="module")
def comparison_file(small_survey, small_model, debiased_model, coarse_workflow, tmp_path_factory):
    """What `relabel evaluate --compare ... --figure ... --json` printed, saved, and the figure it drew."""
    folder = tmp_path_factory.mktemp("compare")
    figure = folder / "comparison.png"
    argv = ["evaluate", str(small_survey.catalog), "--model", str(small_model), "--truth", str(small_survey.truth),
            "--config", str(coarse_workflow), "--compare", f"de-biased={debiased_model}", "--figure", str(figure),
            "--device", "cpu", "--json"]
    stdout = io.StringIO()  # a module fixture cannot take capsys
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    assert code == 0
    (folder / "comparison.json").write_text(stdout.getvalue())
    return folder / "comparison.json", figure, argv


def test_evaluate_compare_measures_each_model_and_draws_the_figure(comparison_file, small_model):
    path, figure, _ = comparison_file
    result = json.loads(path.read_text())
    methods = [row["method"] for row in result["rows"]]
    # --model is named after its file; --compare rows follow in the order given.
    assert methods == [LABELS_ROW, CORRECTION_ROW, small_model.stem, "de-biased"]
    assert result["temperatures"]["de-biased"] > 0
    for row in result["rows"]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1
        assert len(row["ece_by_quartile"]) == 4
        assert sum(result["reliability"][row["method"]]["count"]) == result["n"]
    assert figure.read_bytes()[:8] == PNG
    from matplotlib.image import imread

    assert imread(figure).shape[:2] == (950, 1300)  # 13 x 9.5 inches at 100 dpi: four panels
    assert result["figure"] == str(figure) and "reliability diagram" in result["caption"]
    assert read_comparison(path) == result


def test_evaluate_compare_refuses_to_replace_the_figure_and_needs_truth(comparison_file, capsys):
    _, figure, argv = comparison_file
    before = figure.read_bytes()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err and figure.read_bytes() == before
    no_truth = [a for i, a in enumerate(argv) if a != "--truth" and (i == 0 or argv[i - 1] != "--truth")]
    assert main(no_truth) == 2
    assert "need --truth" in capsys.readouterr().err
    twice = argv[:-1] + ["--compare", f"de-biased={argv[argv.index('--model') + 1]}", "--overwrite"]
    assert main(twice) == 2
    assert "two models named 'de-biased'" in capsys.readouterr().err
    model_only = argv[:argv.index("--compare")] + ["--correct-along", "REDSHIFT"]
    assert main(model_only) == 2
    assert "--correct-along belongs to a comparison" in capsys.readouterr().err
    unknown = argv[:-1] + ["--overwrite", "--correct-along", "NOT_AN_OBSERVABLE"]
    assert main(unknown) == 2
    assert "NOT_AN_OBSERVABLE: not among the workflow's observables" in capsys.readouterr().err
    assert figure.read_bytes() == before


def test_comparison_text_has_a_line_per_method_and_the_truth(comparison_file):
    result = json.loads(comparison_file[0].read_text())
    lines = format_comparison(result).splitlines()
    assert lines[0].startswith(f"{result['n']} held-out galaxies")
    for row in result["rows"]:
        line = next(x for x in lines if x.startswith(row["method"] + " "))
        assert f"{row['accuracy']:.3f}" in line and f"{row['ece']:.3f}" in line
    assert lines[-1].startswith("truth")


def test_report_shows_the_comparison_table_and_figure(comparison_file, small_survey, small_model, tmp_path):
    path, _, _ = comparison_file
    result = json.loads(path.read_text())
    out = tmp_path / "run"
    run_catalog(small_survey.catalog, small_model, out, workflow=small_survey.workflow,
                cluster=ClusterOptions(kind="none"), progress=False)
    assert main(["report", str(out), "--truth", str(small_survey.truth), "--out", str(tmp_path / "rep"),
                 "--comparison", str(path)]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["methods"] == result
    assert (tmp_path / "rep" / "comparison.png").read_bytes()[:8] == PNG
    assert "alt='comparison.png'" in html and "Comparison with the field's baselines" in html
    for row in result["rows"]:
        cells = f"<tr><td>{row['method']}</td><td>{row['coverage']:.2f}</td><td>{row['excess_L']:.4f}</td>"
        assert cells + f"<td>{row['accuracy']:.3f}</td>" in html
    # Without a comparison the page has neither.
    plain = make_report(out, report_dir=tmp_path / "plain")
    assert "methods" not in plain and "comparison.png" not in (tmp_path / "plain" / "report.html").read_text()
    assert comparison_html(None) == []


def test_a_file_that_is_not_a_comparison_is_refused_before_anything_is_written(small_survey, small_model,
                                                                                 tmp_path):
    out = tmp_path / "run"
    run_catalog(small_survey.catalog, small_model, out, workflow=small_survey.workflow,
                cluster=ClusterOptions(kind="none"), progress=False, bias=False)
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    (tmp_path / "broken.json").write_text("{not json")
    for name, message in (("other.json", "lacks true_fraction_by_quartile"), ("broken.json", "is not JSON"),
                          ("missing.json", "does not exist")):
        with pytest.raises(OutputError, match=message):
            make_report(out, report_dir=tmp_path / "rep", comparison=tmp_path / name)
        assert not (tmp_path / "rep").exists()
