"""Catalog columns -> class labels: thresholds in the column's precision, later column wins, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from relabel.config import LabelSpec, ProbabilityLabel
from relabel.errors import CatalogError, ConfigError
from relabel.catalog.labels import NO_CLASS, hard_labels, labels_from_column, table_labels


def test_float32_vote_equal_to_threshold_passes():
    votes = np.array([0.7, 0.69, 0.71], dtype=np.float32)
    # The trap: in float64 the stored float32 0.7 is below 0.7.
    assert float(votes[0]) < 0.7
    codes = hard_labels({"P_CS": votes}, [0.7])
    assert codes.tolist() == [0, NO_CLASS, 0]


def test_float64_and_float16_columns_compare_in_their_own_precision():
    assert hard_labels({"P": np.array([0.7, 0.6999999], dtype=np.float64)}, [0.7]).tolist() == [0, -1]
    half = np.array([0.9], dtype=np.float16)
    assert float(half[0]) < 0.9
    assert hard_labels({"P": half}, [0.9]).tolist() == [0]


def test_later_column_wins_when_several_pass():
    p_el = np.array([0.9, 0.9, 0.1, 0.5])
    p_cs = np.array([0.9, 0.1, 0.9, 0.5])
    p_dk = np.array([0.9, 0.1, 0.1, 0.5])
    codes = hard_labels({"P_EL": p_el, "P_CS": p_cs, "P_DK": p_dk}, [0.8, 0.8, 0.8])
    assert codes.tolist() == [2, 0, 1, NO_CLASS]
    # Order matters: the same columns listed the other way round.
    codes = hard_labels({"P_DK": p_dk, "P_CS": p_cs, "P_EL": p_el}, [0.8, 0.8, 0.8])
    assert codes.tolist() == [2, 2, 1, NO_CLASS]


def test_keep_uncertain_makes_an_extra_class():
    table = pd.DataFrame({"P_EL": [0.9, 0.2, 0.5], "P_CS": [0.1, 0.8, 0.5]})
    assert hard_labels(table, [0.8, 0.8]).tolist() == [0, 1, NO_CLASS]
    assert hard_labels(table, [0.8, 0.8], keep_uncertain=True).tolist() == [0, 1, 2]


def test_dataframe_columns_are_taken_in_order():
    table = pd.DataFrame({"B": [0.9, 0.1], "A": [0.1, 0.9]})
    assert hard_labels(table, [0.5, 0.5]).tolist() == [0, 1]


def test_nan_probability_is_an_error_naming_column_and_count():
    votes = np.array([0.9, np.nan, np.nan, 0.1], dtype=np.float32)
    with pytest.raises(CatalogError, match=r"P_CS has 2 NaN value\(s\) of 4"):
        hard_labels({"P_EL": np.zeros(4), "P_CS": votes}, [0.8, 0.8], keep_uncertain=True)


def test_probability_outside_unit_interval_is_an_error_naming_column_and_count():
    votes = np.array([0.9, 1.5, -0.1, 0.1, 1.0])
    with pytest.raises(CatalogError) as err:
        hard_labels({"P_EL": 1 - np.clip(votes, 0, 1), "P_CS": votes}, [0.8, 0.8])
    message = str(err.value)
    assert "P_CS" in message and "2 value(s) of 5 outside [0, 1]" in message


def test_thresholds_must_match_columns():
    with pytest.raises(ConfigError, match="2 probability column.*1 threshold"):
        hard_labels({"P_EL": np.zeros(3), "P_CS": np.zeros(3)}, [0.8])
    with pytest.raises(ConfigError, match=r"threshold for P_EL must be a number in \[0, 1\]"):
        hard_labels({"P_EL": np.zeros(3)}, [1.2])


def test_labels_from_column_codes_in_class_order():
    values = np.array([b"spiral  ", b"elliptical", b"spiral"])  # FITS text: bytes, space padded
    assert labels_from_column(values, ["elliptical", "spiral"]).tolist() == [1, 0, 1]
    assert labels_from_column(pd.Series(["b", "a"]), ["b", "a"]).tolist() == [0, 1]


def test_labels_from_integer_column_with_text_classes():
    assert labels_from_column(np.array([1, 0, 1]), ["0", "1"]).tolist() == [1, 0, 1]
    assert labels_from_column(np.array([3, 7]), [7, 3]).tolist() == [1, 0]


def test_unknown_label_values_are_named_with_counts():
    values = ["spiral", "edge-on", "edge-on", None, "elliptical"]
    with pytest.raises(CatalogError) as err:
        labels_from_column(values, ["elliptical", "spiral"], column="CLASS")
    message = str(err.value)
    assert "CLASS" in message and "3 value(s)" in message
    assert "'edge-on' (2)" in message and "'<missing>' (1)" in message


def test_repeated_classes_are_a_config_error():
    with pytest.raises(ConfigError, match="repeat"):
        labels_from_column(["a"], ["a", "a"])


def test_table_labels_follows_the_workflow_spec():
    table = pd.DataFrame({"P_EL": np.float32([0.9, 0.1, 0.5]), "P_CS": np.float32([0.1, 0.8, 0.5]),
                          "CLASS": ["s", "e", "s"]})
    spec = LabelSpec(probabilities=[ProbabilityLabel("P_EL", "elliptical", 0.8),
                                    ProbabilityLabel("P_CS", "spiral", 0.8)], keep_uncertain=True)
    codes, names = table_labels(table, spec)
    assert codes.tolist() == [0, 1, 2] and names == ["elliptical", "spiral", "uncertain"]
    codes, names = table_labels(table, LabelSpec(label_column="CLASS", classes=["e", "s"]))
    assert codes.tolist() == [1, 0, 1] and names == ["e", "s"]


@pytest.mark.parametrize("values, hint", [
    ([0.0, 12.5, 87.5, 100.0], r"Its values lie in \[0, 100\]: percentages\? Divide them by 100\."),
    ([0, 3, 41, 7], r"whole numbers up to 41: vote counts\? Give fractions"),
    ([0.2, 1.5, -0.1, 0.4], r"is it a probability or vote fraction\?$"),  # neither: no guess
])
def test_vote_fractions_given_as_percentages_or_counts_are_refused_with_what_they_look_like(values, hint):
    with pytest.raises(CatalogError, match=r"probability column P_CS has \d value\(s\) of 4 outside \[0, 1\].*" + hint):
        hard_labels({"P_CS": np.asarray(values)}, [0.8])


def test_a_run_names_percentage_vote_fractions_before_writing(tiny_run):
    import fitsio

    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    root, data, _, model = tiny_run
    data = data.copy()
    data["P_CS"] = data["P_CS"] * 100
    data["P_EL"] = data["P_EL"] * 100
    fitsio.write(str(root / "catalog.fits"), data, extname="CATALOG", clobber=True)
    with pytest.raises(CatalogError, match=r"column P_\w+ holds \d+ value\(s\) outside \[0, 1\] .* percentages\?"):
        run_catalog(root / "catalog.fits", model, root / "out", workflow=root / "workflow.yaml",
                    cluster=ClusterOptions(kind="none"), bias=False, progress=False)
    assert not (root / "out").exists()


def test_a_label_value_that_is_no_class_is_named_with_how_to_declare_it(tiny_survey, capsys):
    import fitsio
    import yaml

    from relabel.cli import main

    root, data, _ = tiny_survey
    morph = np.where(data["P_CS"] >= 0.5, "spiral", "elliptical").astype("U10")
    morph[:6] = "UNCERTAIN"
    table = pd.DataFrame({name: data[name].astype(data[name].dtype.newbyteorder("="))
                          for name in data.dtype.names})
    table["MORPH"] = morph
    fitsio.write(str(root / "labelled.fits"), table.to_records(index=False), clobber=True)
    raw = yaml.safe_load((root / "workflow.yaml").read_text())
    raw["labels"] = {"label_column": "MORPH", "classes": ["elliptical", "spiral"]}
    (root / "categorical.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(CatalogError, match=r"label column MORPH has 6 value\(s\) not among the classes "
                                           r"\['elliptical', 'spiral'\]: 'UNCERTAIN' \(6\); if they mean no label .* "
                                           r"catalog: \{missing: \{MORPH: \['UNCERTAIN'\]\}\}"):
        labels_from_column(table["MORPH"].to_numpy(), ["elliptical", "spiral"], "MORPH")
    raw["catalog"]["missing"] = {"MORPH": ["UNCERTAIN"]}  # as the message says
    raw["bias"] = {**raw.get("bias", {}), "log2_bins_int": 1, "bins_obs": 2}  # 34 labelled rows of a tiny survey
    (root / "declared.yaml").write_text(yaml.safe_dump(raw))
    assert main(["bias", str(root / "labelled.fits"), "--config", str(root / "declared.yaml")]) == 0
    assert "dropped 6 of 40 rows: 6 missing MORPH" in capsys.readouterr().out
