"""RA/Dec in every unit and notation catalogs use, read as degrees (relabel.catalog.coordinates)."""

from __future__ import annotations

import dataclasses

import fitsio
import numpy as np
import pandas as pd
import pytest
import yaml

from relabel.catalog.coordinates import resolve_coordinate_units, to_degrees
from relabel.catalog.reader import open_catalog
from relabel.config import Workflow
from relabel.errors import CatalogError

RA_DEG, DEC_DEG = 149.934848, -2.225333  # 09h59m44.3635s, -02d13m31.2s


@pytest.mark.parametrize("values, unit", [
    (["09:59:44.3635"], None),        # sexagesimal RA text: hours
    (["09 59 44.3635"], None),        # blank-separated, as VizieR writes it
    (["9h59m44.3635s"], None),        # with its letters
    ([b"09:59:44.3635 "], None),      # FITS text: bytes, blank-padded
    (["149.934848"], None),           # a decimal number as text: degrees
    (["09:59:44.3635"], "h:m:s"),     # VizieR's unit of a sexagesimal RA column
    (["149:56:05.45"], "deg"),        # sexagesimal degrees when the unit says so
    ([149.934848], None),
    ([149.934848], "deg"),
    ([np.radians(149.934848)], "rad"),
    ([149.934848 * 3600], "arcsec"),
    ([149.934848 / 15], "hourangle"),
    ([149.934848 / 15], "h"),         # hours of time, as catalogs write an RA in hours
    ([149.934848], "DEG"),            # units as catalogs write them outside the standard
    ([149.934848], "Degrees"),
    ([np.radians(149.934848)], "RADIANS"),
    ([149.934848 / 15], "hours"),
    ([149.934848 / 15 * 3600], "s"),  # seconds of time of right ascension
])
def test_right_ascension_in_every_notation_is_the_same_degrees(values, unit):
    assert to_degrees(pd.Series(values), unit, True)[0] == pytest.approx(RA_DEG, abs=2e-6)


@pytest.mark.parametrize("values, unit", [
    (["-02:13:31.2"], None), (["-02 13 31.2"], None), (["-2d13m31.2s"], None), (["-02:13:31.2"], "d:m:s"),
    (["-2.225333"], None), ([-2.225333], None), ([np.radians(-2.225333)], "rad"), ([-2.225333 * 60], "arcmin"),
])
def test_declination_in_every_notation_is_the_same_degrees(values, unit):
    assert to_degrees(pd.Series(values), unit, False)[0] == pytest.approx(DEC_DEG, abs=2e-6)


def test_missing_and_unreadable_coordinates_are_nan_not_an_error():
    text = to_degrees(pd.Series(["09:59:44.36", "", None, "not a position", "   "]), None, True)
    assert text[0] == pytest.approx(RA_DEG, abs=1e-4) and np.isnan(text[1:]).all()
    nullable = to_degrees(pd.Series([149.9, None], dtype="Float64"), "deg", True)
    assert nullable[0] == pytest.approx(149.9) and np.isnan(nullable[1])


@pytest.mark.parametrize("unit, why", [("pix", "not an angle"), ("mag", "not an angle"),
                                       ("degs_please", "not a unit astropy knows")])
def test_a_unit_that_is_not_an_angle_is_refused_naming_the_column(unit, why):
    with pytest.raises(CatalogError, match=f"coordinate column RA has unit '{unit}', which is {why}"):
        to_degrees(pd.Series([1.0]), unit, True, "RA")


def _workflow(tmp_path, **catalog) -> Workflow:
    from conftest import WORKFLOW_YAML

    raw = yaml.safe_load(WORKFLOW_YAML)
    raw["catalog"].update(catalog)
    return Workflow.from_dict(raw, base_dir=tmp_path)


def test_each_catalog_format_states_its_units(tmp_path):
    from astropy.table import Table

    table = Table({"RA": [np.radians(RA_DEG)], "DEC": [DEC_DEG], "MAG": [17.0]})
    table["RA"].unit, table["DEC"].unit = "rad", "deg"
    table.write(tmp_path / "c.fits")
    table.write(tmp_path / "c.parquet")
    fits_units = [open_catalog(tmp_path / "c.fits").unit(c) for c in ("RA", "DEC", "MAG")]
    parquet_units = [open_catalog(tmp_path / "c.parquet").unit(c) for c in ("RA", "DEC", "MAG")]
    memory_units = [open_catalog(table).unit(c) for c in ("RA", "DEC", "MAG")]
    assert fits_units == parquet_units == memory_units == ["rad", "deg", None]
    assert open_catalog(table.to_pandas()).unit("RA") is None  # a DataFrame states no units


def test_the_catalogs_unit_is_used_unless_the_workflow_names_one_and_they_must_agree(tmp_path):
    fitsio.write(str(tmp_path / "c.fits"), np.array([(np.radians(RA_DEG), DEC_DEG)], [("RA", "f8"), ("DEC", "f8")]),
                 units=["rad", ""])
    catalog = open_catalog(tmp_path / "c.fits")
    resolved = resolve_coordinate_units(catalog, _workflow(tmp_path))
    assert (resolved.catalog.ra_unit, resolved.catalog.dec_unit) == ("rad", None)
    stated = resolve_coordinate_units(catalog, _workflow(tmp_path, ra_unit="radian", dec_unit="arcsec"))
    assert (stated.catalog.ra_unit, stated.catalog.dec_unit) == ("radian", "arcsec")
    with pytest.raises(CatalogError, match=r"column RA has unit 'rad' but workflow .* \(catalog.ra_unit\) says 'deg'"):
        resolve_coordinate_units(catalog, _workflow(tmp_path, ra_unit="deg"))
    assert dataclasses.asdict(_workflow(tmp_path).catalog)["ra_unit"] is None  # the default: degrees


def test_the_fast_sexagesimal_reading_agrees_with_astropys_everywhere_on_the_sky():
    from astropy.coordinates import Angle

    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 360, 2000), np.concatenate([rng.uniform(-90, 90, 1990), rng.uniform(-0.9, 0.9, 10)])
    ra_text = pd.Series(Angle(ra, unit="deg").to_string(unit="hourangle", sep=":", precision=4))
    dec_text = pd.Series(Angle(dec, unit="deg").to_string(sep=" ", precision=3, alwayssign=True))  # "-00 ..." too
    np.testing.assert_allclose(to_degrees(ra_text, None, True), Angle(list(ra_text), unit="hourangle").deg,
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(to_degrees(dec_text, None, False), Angle(list(dec_text), unit="deg").deg,
                               rtol=0, atol=1e-10)
    assert np.abs(to_degrees(dec_text, None, False) - dec).max() < 1e-6  # 0.001 arcsec printed
