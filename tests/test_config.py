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
        (lambda d: d.__setitem__("observables", [{"column": "Z", "best": "worst"}]), "'observables[0].best' must be 'low' or 'high'"),
        (lambda d: d["labels"]["probabilities"][1].__setitem__("threshold", 1.5), "'labels.probabilities[1].threshold'"),
        (lambda d: d["labels"]["probabilities"][0].pop("class"), "'labels.probabilities[0].class' is missing"),
        (lambda d: d["labels"].__setitem__("label_column", "C"), "exactly one of 'probabilities'"),
        (lambda d: d.__setitem__("cutouts", {"layout": "cubes"}), "'cutouts.layout' must be one of tiles, files"),
        (lambda d: d.__setitem__("cutouts", {"size": -3}), "'cutouts.size' must be a positive integer"),
        (lambda d: d.__setitem__("bias", {"bins_obs": 0}), "'bias.bins_obs' must be a positive integer"),
        (lambda d: d.__setitem__("bias", {"bins": 5}), "unknown key 'bias.bins'"),
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
