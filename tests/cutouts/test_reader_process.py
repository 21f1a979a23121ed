"""Cutting in child processes (relabel.cutouts.reader_process): same cutouts, same faults, no GIL shared."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import fitsio
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import WORKFLOW_YAML, write_wcs_image

from relabel import status as st
from relabel.config import Workflow
from relabel.cutouts import reader_process as rp
from relabel.cutouts.sources import open_cutout_source
from relabel.errors import ConfigError


def _workflow(root, **cutouts) -> Workflow:
    raw = yaml.safe_load(WORKFLOW_YAML)
    raw["cutouts"].update(cutouts)
    return Workflow.from_dict(raw, base_dir=root)


def _both(workflow, rows, batch, processes=1, **kw):
    """Cutouts read in this process and through child processes, batch by batch."""
    here, there = [], []
    with open_cutout_source(workflow, **kw) as source:
        for i in range(0, len(rows), batch):
            cut = source.read(rows.iloc[i:i + batch])
            here.append((cut.images.copy(), list(cut.status), cut.coverage))
    with rp.ProcessCutoutSource(workflow, batch_size=batch, processes=processes, **kw) as source:
        for i in range(0, len(rows), batch):
            cut = source.read(rows.iloc[i:i + batch])
            there.append((np.array(cut.images), list(cut.status), cut.coverage))
    return here, there


def _assert_same(here, there):
    assert len(here) == len(there)
    for (a_img, a_st, a_cov), (b_img, b_st, b_cov) in zip(here, there):
        assert a_st == b_st
        np.testing.assert_array_equal(a_img, b_img)
        if a_cov is None:
            assert b_cov is None
        else:
            np.testing.assert_array_equal(a_cov, b_cov)


def test_tiles_and_their_faults_come_back_identical(tiny_survey):
    root, _, images = tiny_survey
    nan = np.zeros((2, 1, 16, 16), "f4")
    nan[0] = np.nan
    fitsio.write(str(root / "tiles" / "nan.fits"), nan)
    (root / "tiles" / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 50)
    tiles = ["tiles/tile_00000.fits"] * 16 + ["tiles/none.fits", "tiles/broken.fits", "tiles/nan.fits",
                                               "tiles/nan.fits", "tiles/tile_00001.fits"]
    rows = pd.DataFrame({"TILE": tiles, "TILE_INDEX": list(range(16)) + [0, 0, 0, 1, 99]})
    here, there = _both(_workflow(root), rows, batch=6)
    _assert_same(here, there)
    statuses = sum((s for _, s, _ in there), [])
    assert statuses[16:] == [st.MISSING_FILE, st.CORRUPT_FILE, st.ALL_NAN, st.OK, st.BAD_INDEX]
    np.testing.assert_array_equal(there[0][0], images[:6])


def test_per_object_files_and_stamps_come_back_identical(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for k in range(10):
        fitsio.write(str(tmp_path / f"g{k}.fits"), rng.normal(size=(16, 16)).astype("f4"))
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / f"g{k}.png")
    (tmp_path / "trunc.fits").write_bytes((tmp_path / "g0.fits").read_bytes()[:3000])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    names = [f"g{k}.fits" for k in range(10)] + ["trunc.fits", "missing.fits"]
    here, there = _both(_workflow(tmp_path, layout="files"), pd.DataFrame({"CUTOUT": names}), batch=5)
    _assert_same(here, there)
    assert sum((s for _, s, _ in there), [])[-2:] == [st.CORRUPT_FILE, st.MISSING_FILE]
    names = [f"g{k}.png" for k in range(10)] + ["bad.png"]
    here, there = _both(_workflow(tmp_path, layout="files"), pd.DataFrame({"CUTOUT": names}), batch=4)
    _assert_same(here, there)
    assert sum((s for _, s, _ in there), [])[-1] == st.CORRUPT_FILE


@pytest.mark.parametrize("processes", [1, 3])
def test_survey_image_stamps_and_edges_come_back_identical(tmp_path, processes):
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval, wcs.wcs.crpix = [150.0, 2.0], [150.5, 120.5]
    wcs.wcs.cd = np.array([[-0.26 / 3600, 0.0], [0.0, 0.26 / 3600]])
    data = np.random.default_rng(3).normal(size=(240, 300)).astype(np.float32)
    write_wcs_image(tmp_path / "img.fits.fz", data, wcs, compress="rice", tile_dims=[1, 300])
    xy = np.column_stack([np.linspace(-20, 320, 40), np.linspace(-10, 250, 40)])
    ra, dec = wcs.all_pix2world(xy[:, 0], xy[:, 1], 0)
    rows = pd.DataFrame({"RA": ra, "DEC": dec, "IMAGE": "img.fits.fz"})
    here, there = _both(_workflow(tmp_path, layout="images", image_column="IMAGE"), rows, batch=7,
                        processes=processes)
    _assert_same(here, there)
    statuses = set(sum((s for _, s, _ in there), []))
    assert {st.OK, st.PARTIAL_EDGE, st.OUTSIDE_IMAGE} <= statuses


def test_an_exception_in_the_child_is_raised_with_its_own_type_and_message(tmp_path):
    rows = pd.DataFrame({"RA": [150.0], "DEC": [2.0]})  # no IMAGE column: the source cannot say where to cut
    workflow = _workflow(tmp_path, layout="images", image_column="IMAGE")
    with pytest.raises(KeyError) as in_process, open_cutout_source(workflow) as source:
        source.read(rows)
    with pytest.raises(KeyError) as in_child, rp.ProcessCutoutSource(workflow, batch_size=4) as source:
        source.read(rows)
    assert str(in_child.value) == str(in_process.value) == "'IMAGE'"


def test_a_child_that_dies_is_a_clear_error_and_the_next_source_gets_a_new_one(tiny_survey):
    root, _, images = tiny_survey
    workflow = _workflow(root)
    rows = pd.DataFrame({"TILE": ["tiles/tile_00000.fits"] * 4, "TILE_INDEX": [0, 1, 2, 3]})
    with rp.ProcessCutoutSource(workflow, batch_size=4) as source:
        child = source._children[0]
        os.kill(child.process.pid, signal.SIGKILL)
        child.process.wait(timeout=10)
        with pytest.raises(rp.ReaderProcessError, match="died while reading 4 tiles cutouts under "):
            source.read(rows)
    with rp.ProcessCutoutSource(workflow, batch_size=4) as source:
        assert source._children[0] is not child
        np.testing.assert_array_equal(source.read(rows).images, images[:4])


def test_buffers_are_removed_and_children_reused(tiny_survey):
    root, _, _ = tiny_survey
    workflow = _workflow(root)
    with rp.ProcessCutoutSource(workflow, batch_size=4, processes=2) as source:
        paths, pids = list(source._paths), sorted(c.process.pid for c in source._children)
        assert all(p.exists() for p in paths) and len(paths) == 3
    assert not any(p.exists() for p in paths)
    with rp.ProcessCutoutSource(workflow, batch_size=4, processes=2) as source:
        children = list(source._children)
        assert sorted(c.process.pid for c in children) == pids
    rp.stop_children()
    assert not rp._IDLE and all(c.process.poll() is not None for c in children)


def test_children_exit_when_their_parent_is_killed(tiny_survey, tmp_path):
    root, _, _ = tiny_survey
    script = textwrap.dedent(f"""
        import sys, time, yaml
        sys.path.insert(0, {str(os.path.dirname(__file__) + '/..')!r})
        from conftest import WORKFLOW_YAML
        from relabel.config import Workflow
        from relabel.cutouts.reader_process import ProcessCutoutSource
        raw = yaml.safe_load(WORKFLOW_YAML)
        source = ProcessCutoutSource(Workflow.from_dict(raw, base_dir={str(root)!r}), batch_size=4, processes=2)
        print(" ".join(str(c.process.pid) for c in source._children), flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.1)
    assert not any(_running(p) for p in pids)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_reading_processes_follow_the_device_and_the_configuration():
    import dask

    assert rp.reading_processes(8, on_gpu=False) == 1
    assert rp.reading_processes(8, on_gpu=True) == 7
    assert rp.reading_processes(1, on_gpu=True) == 1
    with dask.config.set({"relabel.cutting-processes": 3}):
        assert rp.reading_processes(8, on_gpu=False) == 3


def test_cutting_setting_chooses_the_reader_and_refuses_other_values(tiny_survey):
    import dask

    workflow = _workflow(tiny_survey[0])
    with rp.open_reader(workflow) as source:
        assert isinstance(source, rp.ProcessCutoutSource)
    with dask.config.set({"relabel.cutting": "thread"}), rp.open_reader(workflow) as source:
        assert not isinstance(source, rp.ProcessCutoutSource)
    with pytest.raises(ValueError, match="relabel.cutting is 'gpu'"):
        rp.open_reader(workflow, where="gpu")
    with pytest.raises(ConfigError):
        rp.ProcessCutoutSource(_workflow(tiny_survey[0], layout="images"), batch_size=4).read(
            pd.DataFrame({"RA": [1.0], "DEC": [1.0]}))


@pytest.mark.parametrize("cutting, processes", [("process", 3), ("process", 1)])
def test_a_run_predicts_the_same_whether_reading_in_children_or_a_thread(tiny_run, tmp_path, cutting, processes):
    import dask

    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    root, _, _, model = tiny_run
    outputs = {}
    for name, setting in {"thread": {"relabel.cutting": "thread"},
                          cutting: {"relabel.cutting": cutting, "relabel.cutting-processes": processes}}.items():
        with dask.config.set(setting):
            result = run_catalog(root / "catalog.fits", model, tmp_path / name, workflow=root / "workflow.yaml",
                                 batch_size=4, bias=False, progress=False, echo=lambda line: None,
                                 cluster=ClusterOptions(kind="none"))
        outputs[name] = pd.read_parquet(result.out_dir).sort_values("OBJID").reset_index(drop=True)
        assert {r["reading_processes"] for r in result.shard_results} == {processes if name == cutting else 0}
    assert len(outputs["thread"]) == 40 and (outputs["thread"]["status"] == st.OK).all()
    pd.testing.assert_frame_equal(outputs["thread"], outputs[cutting])


def test_many_reads_in_flight_each_land_in_their_own_rows(tiny_run):
    """Reads in flight finish in any order; each batch's images must still be its own rows'."""
    from relabel.model import load_checkpoint
    from relabel.run.inference import predict_rows

    root, _, _, model = tiny_run
    workflow = _workflow(root)
    net, meta = load_checkpoint(model)
    rows = pd.DataFrame({"TILE": [f"tiles/tile_{k // 16:05d}.fits" for k in range(40)],
                         "TILE_INDEX": [k % 16 for k in range(40)]})
    with open_cutout_source(workflow) as source:
        expected = predict_rows(rows, source, net, meta, batch_size=2).probabilities
    for _ in range(3):
        with rp.ProcessCutoutSource(workflow, batch_size=2, processes=4, normalisation=meta.normalisation) as source:
            got = predict_rows(rows, source, net, meta, batch_size=2).probabilities
        np.testing.assert_array_equal(got, expected)


def test_a_local_cluster_started_by_relabel_reads_as_the_caller_configured(tiny_run, tmp_path):
    import dask

    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    root, _, _, model = tiny_run
    seen = {}
    for name, setting in {"default": {}, "thread": {"relabel.cutting": "thread"}}.items():
        with dask.config.set(setting):
            result = run_catalog(root / "catalog.fits", model, tmp_path / name, workflow=root / "workflow.yaml",
                                 bias=False, progress=False, echo=lambda line: None,
                                 cluster=ClusterOptions(kind="local", workers=1, dashboard_address="127.0.0.1:0"))
        seen[name] = {r["reading_processes"] for r in result.shard_results}
        assert result.summary["status"] == {"ok": 40}
    assert seen == {"default": {1}, "thread": {0}}
