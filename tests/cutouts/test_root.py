"""Cutouts that cannot be found, or do not hold what the workflow says, stop a run before it starts."""

import os

import fitsio
import numpy as np
import pytest
import yaml

from relabel.errors import CatalogError, ConfigError
from relabel.evaluate import evaluate_model
from relabel.run.clusters import ClusterOptions
from relabel.run.pipeline import run_catalog
from tests.conftest import WORKFLOW_YAML

NONE = ClusterOptions(kind="none")


def _workflow(folder, **cutouts):
    raw = yaml.safe_load(WORKFLOW_YAML)
    raw["cutouts"].update(cutouts)
    path = folder / f"wf{len(list(folder.glob('wf*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(root, model, workflow, out="out"):
    return run_catalog(root / "catalog.fits", model, root / out, workflow=workflow, cluster=NONE, progress=False,
                       bias=False, echo=lambda line: None)


def test_a_root_pointing_nowhere_fails_before_any_output(tiny_run):
    root, _, _, model = tiny_run
    with pytest.raises(CatalogError, match="cutouts.root .*no-such is not a folder"):
        _run(root, model, _workflow(root, root=str(root / "no-such")))
    assert not (root / "out").exists()
    with pytest.raises(CatalogError, match="no-such is not a folder"):
        evaluate_model(root / "catalog.fits", model, workflow=_workflow(root, root=str(root / "no-such")),
                       all_rows=True)


def test_a_root_without_the_catalogs_cutouts_fails_before_any_output(tiny_run):
    root, _, _, model = tiny_run
    (root / "empty").mkdir()
    with pytest.raises(CatalogError, match="none of the first 40 cutout files named by column TILE"):
        _run(root, model, _workflow(root, root=str(root / "empty")))
    assert not (root / "out").exists()


def test_evaluate_with_no_usable_cutout_is_a_clear_error(tiny_run):
    root, _, _, model = tiny_run
    (root / "empty").mkdir()
    with pytest.raises(CatalogError, match="none of the 40 evaluated rows has a usable cutout"):
        evaluate_model(root / "catalog.fits", model, workflow=_workflow(root, root=str(root / "empty")),
                       all_rows=True)


def _write_headers(root, images, bands, scale):
    for t in range(0, 40, 16):
        header = [{"name": "BANDS", "value": bands}, {"name": "PIXSCALE", "value": scale}]
        fitsio.write(str(root / "tiles" / f"tile_{t // 16:05d}.fits"), images[t:t + 16], header=header, clobber=True)


def test_header_bands_and_pixel_scale_are_compared_with_the_workflow(tiny_run):
    root, _, images, model = tiny_run
    _write_headers(root, images, "r", 0.262)
    with pytest.raises(ConfigError, match="pixel_scale is 0.396 .* says PIXSCALE = 0.262"):
        _run(root, model, _workflow(root))
    result = _run(root, model, _workflow(root, pixel_scale=0.262))  # matching: runs
    assert result.summary["rows_out"] == 40
    _write_headers(root, images, "g", 0.262)
    with pytest.raises(ConfigError, match=r"bands is \['r'\] but .* says BANDS = g"):
        _run(root, model, _workflow(root, pixel_scale=0.262), out="out2")
    assert not (root / "out2").exists()


def test_one_odd_cutout_file_is_not_a_reason_to_refuse_the_run(tiny_run):
    root, _, images, model = tiny_run
    fitsio.write(str(root / "tiles" / "tile_00000.fits"), images[:16], header=[{"name": "PIXSCALE", "value": 0.262}],
                 clobber=True)  # the other two tiles say nothing
    assert _run(root, model, _workflow(root)).summary["rows_out"] == 40


def test_recorded_root_resolves_from_the_catalogs_real_folder(tiny_run, tmp_path_factory):
    """Without a workflow, the checkpoint's relative root is taken beside the catalog file itself,
    also when the catalog is reached through a symbolic link from elsewhere."""
    root, _, _, model = tiny_run
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.symlink(root / "catalog.fits", elsewhere / "catalog.fits")
    result = run_catalog(elsewhere / "catalog.fits", model, elsewhere / "out", cluster=NONE, progress=False,
                         bias=False, echo=lambda line: None)
    assert result.summary["status"] == {"ok": 40}
    copied = tmp_path_factory.mktemp("copied")
    (copied / "catalog.fits").write_bytes((root / "catalog.fits").read_bytes())  # a copy without its cutouts
    with pytest.raises(CatalogError, match="checkpoint's recorded root"):
        run_catalog(copied / "catalog.fits", model, copied / "out", cluster=NONE, progress=False, bias=False,
                    echo=lambda line: None)
    assert not (copied / "out").exists()
