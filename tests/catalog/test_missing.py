"""The one missing-value rule: FITS nulls, NaN, Parquet nulls and declared codes, through `relabel bias`."""

import json
import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from relabel.catalog.missing import drop_missing, missing_mask, parse_missing_codes
from relabel.cli import main
from relabel.errors import ConfigError

N = 400


def _columns(n=N, seed=3):
    """A survey-like table: labels, two intrinsic and two observable columns, as plain arrays."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n).astype(np.float32)
    return {
        "OBJID": np.arange(n, dtype=np.int64) + 10**15,
        "P_EL": p, "P_CS": (1 - p).astype(np.float32),
        "ABS_MAG": rng.normal(-20, 1, n).astype(np.float32),
        "R50_KPC": np.round(rng.uniform(1, 9, n), 3).astype(np.float32),
        "RESOLUTION": rng.uniform(1, 10, n).astype(np.float32),
        "REDSHIFT": rng.uniform(0.01, 0.2, n).astype(np.float32),
    }


def _workflow(path, observables=(("RESOLUTION", "high"), ("REDSHIFT", "low")), extra=""):
    obs = "\n".join(f"  - {{column: {c}, best: {b}}}" for c, b in observables)
    path.write_text(textwrap.dedent("""\
        name: t
        catalog: {id: OBJID%s}
        labels:
          probabilities:
            - {column: P_EL, class: elliptical, threshold: 0.6}
            - {column: P_CS, class: spiral, threshold: 0.6}
        intrinsic: [ABS_MAG, R50_KPC]
        observables:
        """) % extra + obs + "\nbias: {log2_bins_int: 2, bins_obs: 3, n_boot: 4, n_null: 2, seed: 1}\n")
    return path


def _fits(path, cols, override=()):
    fmt = {np.dtype(np.float32): "E", np.dtype(np.int64): "K", np.dtype(np.float64): "D", np.dtype(np.int16): "I"}
    out = [dict(override).get(n) or fits.Column(name=n, format=fmt[a.dtype], array=a) for n, a in cols.items()]
    fits.BinTableHDU.from_columns(out, name="CATALOG").writeto(path, overwrite=True)
    return path


def _bias(table, workflow, capsys):
    capsys.readouterr()
    assert main(["bias", str(table), "--config", str(workflow), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _same_L(a, b):
    assert a["L"] == b["L"] and a["n_objects"] == b["n_objects"]


def test_tscale_column_gives_the_float_columns_L(tmp_path, capsys):
    # shared case tscale-column: R50_KPC as int16 + TSCALn = 0.001 is the same table as the float32 values
    cols = _columns()
    raw = np.round(cols["R50_KPC"].astype(np.float64) / 1e-3).astype(np.int16)
    ref = dict(cols, R50_KPC=(raw * 1e-3).astype(np.float64))
    _fits(tmp_path / "ref.fits", ref)
    hdu = fits.BinTableHDU.from_columns(
        [fits.Column(name=n, format="I" if n == "R50_KPC" else {"f": "E", "i": "K"}[a.dtype.kind],
                     array=raw if n == "R50_KPC" else a) for n, a in cols.items()], name="CATALOG")
    k = list(cols).index("R50_KPC") + 1
    hdu.header[f"TSCAL{k}"], hdu.header[f"TZERO{k}"] = 1e-3, 0.0
    hdu.writeto(tmp_path / "case.fits")
    wf = _workflow(tmp_path / "w.yaml")
    case, want = _bias(tmp_path / "case.fits", wf, capsys), _bias(tmp_path / "ref.fits", wf, capsys)
    _same_L(case, want)
    assert case["n_objects"] == want["n_objects"]


@pytest.mark.parametrize("form, dtype, null", [("I", np.int16, -99), ("J", np.int32, -1), ("K", np.int64, -9999),
                                               ("B", np.uint8, 255)])
def test_tnull_integer_rows_dropped_and_counted(tmp_path, capsys, form, dtype, null):
    # shared case tnull-integer, for every integer TFORM: TNULL rows are missing, like NaN
    cols = _columns()
    n_exp = np.clip(np.round(cols["RESOLUTION"] * 2), 1, 20).astype(dtype)
    is_null = np.random.default_rng(1).random(N) < 0.15
    n_exp[is_null] = null
    wf = _workflow(tmp_path / "w.yaml", observables=(("N_EXP", "high"), ("REDSHIFT", "low")))
    _fits(tmp_path / "case.fits", cols, {"X": None})
    case_cols = [fits.Column(name=n, format={"f": "E", "i": "K"}[a.dtype.kind], array=a) for n, a in cols.items()]
    fits.BinTableHDU.from_columns(case_cols + [fits.Column(name="N_EXP", format=form, null=null, array=n_exp)]
                                  ).writeto(tmp_path / "case.fits", overwrite=True)
    keep = ~is_null
    ref_cols = [fits.Column(name=n, format={"f": "E", "i": "K"}[a.dtype.kind], array=a[keep]) for n, a in cols.items()]
    fits.BinTableHDU.from_columns(ref_cols + [fits.Column(name="N_EXP", format=form, array=n_exp[keep])]
                                  ).writeto(tmp_path / "ref.fits")
    case, want = _bias(tmp_path / "case.fits", wf, capsys), _bias(tmp_path / "ref.fits", wf, capsys)
    _same_L(case, want)
    assert case["dropped"]["missing N_EXP"] == int(is_null.sum())


def test_sentinel_codes_declared_in_the_workflow(tmp_path, capsys):
    # shared case sentinel-values: REDSHIFT = -9999 and ABS_MAG = 99 declared in catalog.missing
    cols = _columns()
    bad_z = np.random.default_rng(3).random(N) < 0.10
    bad_m = np.random.default_rng(4).random(N) < 0.05
    case = dict(cols, REDSHIFT=np.where(bad_z, -9999.0, cols["REDSHIFT"]).astype(np.float32),
                ABS_MAG=np.where(bad_m, 99.0, cols["ABS_MAG"]).astype(np.float32))
    _fits(tmp_path / "case.fits", case)
    _fits(tmp_path / "ref.fits", {n: a[~(bad_z | bad_m)] for n, a in cols.items()})
    wf = _workflow(tmp_path / "w.yaml", extra=", missing: {REDSHIFT: [-9999], ABS_MAG: [99]}")
    got, want = _bias(tmp_path / "case.fits", wf, capsys), _bias(tmp_path / "ref.fits", wf, capsys)
    _same_L(got, want)
    assert got["dropped"]["missing REDSHIFT"] == int(bad_z.sum())
    assert got["dropped"]["missing ABS_MAG"] == int(bad_m.sum())
    assert got["n_table"] - got["n_objects"] >= int((bad_z | bad_m).sum())  # each row once in the total


def test_nan_vote_fractions_left_out_of_bias(tmp_path, capsys):
    # shared case nan-vote-fractions (bias part): NaN fractions are missing labels
    cols = _columns()
    case = {n: a.copy() for n, a in cols.items()}
    for row in (5, 150, 250):
        case["P_EL"][row] = case["P_CS"][row] = np.nan
    _fits(tmp_path / "case.fits", case)
    keep = np.ones(N, bool)
    keep[[5, 150, 250]] = False
    _fits(tmp_path / "ref.fits", {n: a[keep] for n, a in cols.items()})
    wf = _workflow(tmp_path / "w.yaml")
    got, want = _bias(tmp_path / "case.fits", wf, capsys), _bias(tmp_path / "ref.fits", wf, capsys)
    _same_L(got, want)
    assert got["dropped"]["missing P_EL"] == 3 and got["dropped"]["missing P_CS"] == 3


def test_parquet_dataset_of_several_files_with_nulls(tmp_path, capsys):
    # a hive-partitioned dataset of 4 files; Arrow nulls in an intrinsic and an observable column are missing
    cols = _columns()
    nulls = np.zeros(N, bool)
    nulls[::17] = True
    table = pa.table({n: pa.array(a, mask=nulls if n in ("R50_KPC", "REDSHIFT") else None) for n, a in cols.items()})
    for part in range(4):
        folder = tmp_path / "ds" / f"field={part}"
        folder.mkdir(parents=True)
        pq.write_table(table.slice(part * 100, 100), folder / "part.parquet", row_group_size=30)
    _fits(tmp_path / "ref.fits", {n: a[~nulls] for n, a in cols.items()})
    wf = _workflow(tmp_path / "w.yaml")
    got, want = _bias(tmp_path / "ds", wf, capsys), _bias(tmp_path / "ref.fits", wf, capsys)
    _same_L(got, want)
    assert got["dropped"]["missing R50_KPC"] == got["dropped"]["missing REDSHIFT"] == int(nulls.sum())
    assert "missing P_EL" not in got["dropped"]


def test_missing_mask_every_kind():
    assert missing_mask(pd.Series([1.0, np.nan, np.inf, -9999.0], dtype=np.float32), [-9999]).tolist() == \
        [False, True, True, True]
    ints = pd.Series(pd.array([1, None, 99, 3], dtype="Int16"))
    assert missing_mask(ints, [99]).tolist() == [False, True, True, False]
    assert missing_mask(pd.Series(["a", None, "N/A ", "b"], dtype=object), ["N/A"]).tolist() == \
        [False, True, True, False]
    kept, counts = drop_missing(pd.DataFrame({"A": [1.0, np.nan, 3.0], "B": [np.nan, np.nan, 1.0]}), ["A", "B"])
    assert len(kept) == 1 and counts == {"missing A": 1, "missing B": 2}


def test_missing_codes_config_is_checked():
    assert parse_missing_codes({"Z": -9999, "M": [99, "x"]}) == {"Z": [-9999], "M": [99, "x"]}
    with pytest.raises(ConfigError, match="catalog.missing"):
        parse_missing_codes([-9999], "w.yaml")
    with pytest.raises(ConfigError, match="catalog.missing.Z"):
        parse_missing_codes({"Z": [None]}, "w.yaml")


def test_undeclared_missing_value_codes_at_a_column_end_are_warned_about(tmp_path, capsys):
    import warnings

    import fitsio
    import yaml

    from relabel.bias.table import bias_of_table
    from relabel.cli import main
    from relabel.errors import DataWarning

    rng = np.random.default_rng(3)
    n = 400
    data = np.zeros(n, dtype=[("OBJID", ">i8"), ("P_EL", ">f4"), ("P_CS", ">f4"), ("ABS_MAG", ">f4"),
                              ("REDSHIFT", ">f4")])
    data["OBJID"] = np.arange(n)
    data["P_CS"] = rng.uniform(0, 1, n)
    data["P_EL"] = 1 - data["P_CS"]
    data["ABS_MAG"] = rng.normal(-20, 1, n)
    data["ABS_MAG"][:5] = -99.0  # inside the range of nothing: -99 mag is below every real value
    data["REDSHIFT"] = rng.uniform(0.01, 0.2, n)
    data["REDSHIFT"][10:31] = -9999.0
    fitsio.write(str(tmp_path / "c.fits"), data)
    wf = {"catalog": {"path": "c.fits", "id": "OBJID"},
          "labels": {"probabilities": [{"column": "P_EL", "class": "elliptical", "threshold": 0.5},
                                       {"column": "P_CS", "class": "spiral", "threshold": 0.5}]},
          "intrinsic": ["ABS_MAG"], "observables": [{"column": "REDSHIFT", "best": "low"}],
          "bias": {"log2_bins_int": 1, "bins_obs": 3, "n_boot": 0, "n_null": 0}}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(wf))
    with pytest.warns(DataWarning) as caught:
        bias_of_table(tmp_path / "c.fits", tmp_path / "wf.yaml")
    said = sorted(str(w.message).split(" at ")[0] for w in caught)
    assert said == ["column ABS_MAG holds 5 value(s) of -99", "column REDSHIFT holds 21 value(s) of -9999"]

    wf["catalog"]["missing"] = {"REDSHIFT": [-9999], "ABS_MAG": [-99]}
    (tmp_path / "declared.yaml").write_text(yaml.safe_dump(wf))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # declared codes: nothing to warn about
        result = bias_of_table(tmp_path / "c.fits", tmp_path / "declared.yaml")
    assert result.dropped["missing REDSHIFT"] == 21 and result.dropped["missing ABS_MAG"] == 5

    # through the command line: one warning line each, on stderr
    assert main(["bias", str(tmp_path / "c.fits"), "--config", str(tmp_path / "wf.yaml")]) == 0
    err = capsys.readouterr().err
    assert "relabel: WARNING: column REDSHIFT holds 21 value(s) of -9999" in err
    assert "catalog: {missing: {REDSHIFT: [-9999]}}" in err
