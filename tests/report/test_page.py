"""`relabel report` on a real run of a small simulated survey."""

import json

import pytest

from relabel.cli import main
from relabel.run.clusters import ClusterOptions
from relabel.errors import OutputError
from relabel.run.pipeline import run_catalog
from relabel.report import make_report


@pytest.fixture(scope="module")
def small_output(small_survey, small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    run_catalog(small_survey.catalog, small_model, out, workflow=small_survey.workflow,
                cluster=ClusterOptions(kind="none"), progress=False)
    return out


def test_report_files_and_html_references_every_figure(small_output, small_survey, tmp_path):
    numbers = make_report(small_output, truth=small_survey.truth, report_dir=tmp_path / "rep")
    html = (tmp_path / "rep" / "report.html").read_text()
    assert len(numbers["figures"]) == 3 + 3  # one per observable, L, statuses, examples
    for path in numbers["figures"].values():
        name = path.rsplit("/", 1)[-1]
        assert (tmp_path / "rep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"alt='{name}'" in html
    assert html.count("data:image/png;base64,") == len(numbers["figures"])  # self-contained
    assert numbers["rows"] == 600 and numbers["status"] == {"ok": 600}
    table = numbers["comparison"]
    assert [r["n"] for r in table["rows"]][:1] == [600] and len(table["rows"]) == 2 + 4
    assert sum(r["n"] for r in table["rows"][2:]) == 600  # the quartiles partition the same galaxies
    confident = table["rows"][1]
    # the labels are right where they are confident: the simulator's volunteers rarely err
    assert confident["accuracy"]["original"] > 0.9 and confident["uncertain_original"] == 0
    everyone = table["rows"][0]
    # like for like: on all galaxies the original labels' uncertain ones count as wrong
    assert everyone["accuracy"]["original"] <= 1 - everyone["uncertain_original"] + 1e-12
    assert set(numbers["labeling_bias"]) == {"original", "new", "truth"}
    for res in numbers["labeling_bias"].values():
        # the excess is stated with its Monte-Carlo error and the repetitions that reached it
        assert res["mc_error"] > 0 and res["n_boot"] >= 20 and res["n_null"] >= 10
        assert (f"{res['excess']:.4f} &plusmn; {res['mc_error']:.4f} <small>(Monte-Carlo; {res['n_boot']} "
                f"bootstrap, {res['n_null']} null)") in html
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["labeling_bias"] == numbers["labeling_bias"]


def test_report_numbers_match_relabel_bias(small_output, capsys):
    assert main(["report", str(small_output), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # `relabel bias` on the same output, mapped by the same workflow the run recorded
    record = json.loads((small_output / "_run.json").read_text())
    workflow = small_output.parent / "wf.yaml"
    import yaml

    raw = dict(record["workflow"])
    raw["cutouts"] = {**raw.get("cutouts", {}), "root": record["workflow_base"]}
    workflow.write_text(yaml.safe_dump(raw))
    assert main(["bias", str(small_output), "--config", str(workflow), "--labels", "P_EL", "P_CS", "--json"]) == 0
    original = json.loads(capsys.readouterr().out)
    assert main(["bias", str(small_output), "--config", str(workflow), "--label-column", "label",
                 "--classes", "elliptical", "spiral", "--json"]) == 0
    new = json.loads(capsys.readouterr().out)
    for key in ("L", "L_std", "null_L", "null_L_std", "n_objects", "mc_error", "n_boot", "n_null"):
        assert report["labeling_bias"]["original"][key] == original[key]
        assert report["labeling_bias"]["new"][key] == new[key]


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(OutputError, match="not a relabel run output"):
        make_report(tmp_path)
