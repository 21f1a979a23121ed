from pathlib import Path

import pytest
import yaml

from relabel.config import Workflow, load_workflow
from relabel.errors import ConfigError

from conftest import WORKFLOW_YAML


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _base():
    return yaml.safe_load(WORKFLOW_YAML)


def test_loads_mapping_and_resolves_paths_against_the_file(tmp_path):
    wf = load_workflow(_write(tmp_path, WORKFLOW_YAML))
    assert wf.labels.class_names == ["elliptical", "spiral"]
    assert wf.labels.columns == ["P_EL", "P_CS"]
    assert wf.labels.thresholds == [0.8, 0.8]
    assert wf.intrinsic == ["ABS_MAG", "R50_KPC"]
    assert wf.observable_columns == ["RESOLUTION", "REDSHIFT"]
    assert wf.best_ends == ["high", "low"]
    assert wf.catalog.path == tmp_path / "catalog.fits"
    assert wf.cutouts.root == tmp_path / "."
    assert wf.cutouts.columns == ["TILE", "TILE_INDEX"]
    assert wf.bias["log2_bins_int"] == 4 and wf.run["shard_size"] == 2048


def test_paths_expand_home_and_environment_variables_as_a_shell_would(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    data = _base()
    data["catalog"]["path"] = "~/catalogs/gz1.fits"
    data["cutouts"]["root"] = "${SURVEY_SCRATCH}/cutouts"
    wf = load_workflow(_write(tmp_path, data))
    assert wf.catalog.path == tmp_path / "home" / "catalogs" / "gz1.fits"
    assert wf.cutouts.root == tmp_path / "scratch" / "cutouts"
    data["cutouts"]["root"] = "$NOT_SET_HERE/cutouts"
    with pytest.raises(ConfigError, match=r"wf.yaml: key 'cutouts.root' \(\$NOT_SET_HERE/cutouts\) uses "
                                          r"\$NOT_SET_HERE, which is not set in this environment"):
        load_workflow(_write(tmp_path, data))


def test_keep_uncertain_adds_a_class():
    data = _base()
    data["labels"]["keep_uncertain"] = True
    assert Workflow.from_dict(data).labels.class_names == ["elliptical", "spiral", "uncertain"]


def test_label_column_alternative():
    data = _base()
    data["labels"] = {"label_column": "CLASS", "classes": ["E", "S"]}
    wf = Workflow.from_dict(data)
    assert wf.labels.class_names == ["E", "S"] and wf.labels.columns == ["CLASS"]


def test_hash_changes_with_mapping():
    a, b = _base(), _base()
    b["intrinsic"] = ["ABS_MAG"]
    assert Workflow.from_dict(a).hash() == Workflow.from_dict(_base()).hash()
    assert Workflow.from_dict(a).hash() != Workflow.from_dict(b).hash()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("intrinsic"), "'intrinsic' is missing"),
        (lambda d: d.__setitem__("observables", [{"column": "Z", "best": "worst"}]), "'observables[0].best' must be one of low, high, got 'worst'"),
        (lambda d: d["labels"]["probabilities"][1].__setitem__("threshold", 1.5), "'labels.probabilities[1].threshold'"),
        (lambda d: d["labels"]["probabilities"][0].pop("class"), "'labels.probabilities[0].class' is missing"),
        (lambda d: d["labels"].__setitem__("label_column", "C"), "exactly one of 'probabilities'"),
        (lambda d: d.__setitem__("cutouts", {"layout": "cubes"}), "'cutouts.layout' must be one of tiles, files"),
        (lambda d: d.__setitem__("cutouts", {"size": -3}), "'cutouts.size' must be an integer > 0, got -3"),
        (lambda d: d.__setitem__("bias", {"bins_obs": 0}), "'bias.bins_obs' must be an integer > 0, got 0"),
        (lambda d: d.__setitem__("bias", {"bins": 5}), "unknown key 'bias.bins'"),
        (lambda d: d.__setitem__("bias", {"mc_error": -0.001}), "'bias.mc_error' must be"),
        (lambda d: d.__setitem__("bias", {"max_repetitions": 0}), "'bias.max_repetitions' must be"),
        (lambda d: d.__setitem__("intrinsinc", ["X"]), "unknown key 'intrinsinc'"),
        (lambda d: d["catalog"].__setitem__("hdu", [1]), "'catalog.hdu'"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path, edit, message):
    data = _base()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_workflow(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_workflow(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_workflow(_write(tmp_path, "labels: [unclosed"))


def test_shipped_workflows_load():
    root = Path(__file__).resolve().parents[1] / "workflows"
    files = sorted(root.glob("*.yaml"))
    assert files, "workflows/ ships example files"
    for path in files:
        wf = load_workflow(path)
        assert wf.labels.class_names and wf.observables


@pytest.mark.parametrize(
    "section, typo, suggested",
    [
        ("train", "lamda", "train.lambda"),
        ("train", "epoch", "train.epochs"),
        ("run", "shardsize", "run.shard_size"),
        ("bias", "bins_ob", "bias.bins_obs"),
        ("cluster", "knd", "cluster.kind"),
        ("catalog", "passthru", "catalog.passthrough"),
        ("cutouts", "pixelscale", "cutouts.pixel_scale"),
        ("labels", "keep_uncertian", "labels.keep_uncertain"),
    ],
)
def test_every_section_refuses_a_typo_and_suggests_the_key(tmp_path, section, typo, suggested):
    data = _base()
    data.setdefault(section, {})[typo] = 5
    with pytest.raises(ConfigError) as err:
        load_workflow(_write(tmp_path, data))
    assert f"unknown key '{section}.{typo}' (did you mean '{suggested}'?)" in str(err.value)
    assert str(tmp_path / "wf.yaml") in str(err.value)


def test_issue_example_train_epoch_lamda_is_refused_not_ignored():
    data = _base()
    data["train"] = {"epoch": 5, "lamda": 3}
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        Workflow.from_dict(data)


def test_job_queue_sections_are_closed_and_typed():
    data = _base()
    data["cluster"] = {"kind": "slurm", "slurm": {"cores": 2, "wallclock": "1:00:00"}}
    with pytest.raises(ConfigError, match=r"unknown key 'cluster.slurm.wallclock' \(did you mean 'cluster.slurm.walltime'"):
        Workflow.from_dict(data)
    data["cluster"] = {"kind": "pbs", "pbs": {"cores": "many"}}
    with pytest.raises(ConfigError, match="'cluster.pbs.cores' must be an integer or null, got 'many'"):
        Workflow.from_dict(data)
    data["cluster"] = {"kind": "slurmm"}
    with pytest.raises(ConfigError, match="did you mean 'slurm'"):
        Workflow.from_dict(data)


def test_only_the_queue_sections_given_are_kept_so_dask_config_fills_the_rest():
    data = _base()
    data["cluster"] = {"kind": "slurm", "slurm": {"cores": 2}}
    wf = Workflow.from_dict(data)
    assert wf.cluster["kind"] == "slurm" and set(wf.cluster) == {"kind", "slurm"}
    assert wf.cluster["slurm"]["cores"] == 2 and wf.cluster["slurm"]["memory"] is None


def test_types_and_ranges_are_checked_with_values_converted():
    data = _base()
    data["train"] = {"lambda": 3, "val_fraction": 0.95}
    with pytest.raises(ConfigError, match=r"'train.val_fraction' must be a number > 0 and <= 0.9, got 0.95"):
        Workflow.from_dict(data)
    data["train"] = {"lambda": 3, "epochs": True}
    with pytest.raises(ConfigError, match="'train.epochs' must be an integer, got True"):
        Workflow.from_dict(data)
    data["train"] = {"lambda": 3}
    wf = Workflow.from_dict(data)
    assert wf.train["lambda"] == 3.0 and isinstance(wf.train["lambda"], float) and wf.train["epochs"] == 12


def test_conventions_page_prints_the_schema_of_the_code():
    from relabel.config import schema_table

    page = (Path(__file__).parents[1] / "docs" / "conventions.md").read_text()
    block = page.split("<!-- schema:start (generated by docs/schema_table.py) -->\n", 1)[1].split("<!-- schema:end -->")[0]
    assert block == schema_table(), "docs/conventions.md is stale: run python docs/schema_table.py"
    assert "| `train.lambda` | a number or 'automatic' (>= 0) | `automatic` |" in block
