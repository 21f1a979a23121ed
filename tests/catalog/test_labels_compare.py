"""labels.compare: a vote fraction passes its threshold with P >= t (default) or P > t (Galaxy Zoo 1's flags)."""

import numpy as np
import pytest
import yaml

from relabel.bias.table import bias_of_table
from relabel.catalog.labels import NO_CLASS, hard_labels
from relabel.config import Workflow
from relabel.errors import ConfigError
from tests.conftest import WORKFLOW_YAML


def test_equal_to_the_threshold_passes_only_with_the_default():
    # float32 0.8 (stored as 0.80000001) and float64 0.8: equal to t in each column's own precision
    for dtype in (np.float32, np.float64):
        p_cs = np.array([0.8, 0.81, 0.79], dtype=dtype)
        probs = {"P_EL": (1 - p_cs).astype(dtype), "P_CS": p_cs}
        assert hard_labels(probs, [0.8, 0.8]).tolist() == [1, 1, NO_CLASS]
        assert hard_labels(probs, [0.8, 0.8], compare=">").tolist() == [NO_CLASS, 1, NO_CLASS]
    with pytest.raises(ConfigError, match="'>=' or '>'"):
        hard_labels(probs, [0.8, 0.8], compare="=>")


def _workflow(compare=None):
    raw = yaml.safe_load(WORKFLOW_YAML)
    if compare is not None:
        raw["labels"]["compare"] = compare
    return Workflow.from_dict(raw)


def test_workflow_key_defaults_to_the_authors_choice():
    assert _workflow().labels.compare == ">="
    assert _workflow(">").labels.compare == ">"
    with pytest.raises(ConfigError, match="labels.compare"):
        _workflow("gt")


def test_relabel_bias_uses_the_comparison(tiny_survey):
    root, data, _ = tiny_survey
    import fitsio

    data = data.copy()
    data["P_CS"][:10] = np.float32(0.8)  # ten votes exactly at the threshold
    data["P_EL"][:10] = np.float32(0.2)
    fitsio.write(str(root / "catalog.fits"), data, extname="CATALOG", clobber=True)
    small = {"log2_bins_int": 1, "bins_obs": 2, "n_boot": 2, "null": 0}
    ge = bias_of_table(root / "catalog.fits", root / "workflow.yaml", small)
    gt = bias_of_table(root / "catalog.fits", root / "workflow.yaml", {**small, "compare": ">"})
    assert ge.n_objects - gt.n_objects == 10
    assert gt.dropped["passing no threshold"] - ge.dropped.get("passing no threshold", 0) == 10
