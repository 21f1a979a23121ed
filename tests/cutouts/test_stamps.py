"""PNG/JPEG stamps in layout "files": channels to bands, faults, 8-bit normalisation, a run end to end."""

import numpy as np
import torch
import pandas as pd
import pytest
import yaml
from PIL import Image

from relabel import status as st
from relabel.config import CutoutSpec
from relabel.cutouts import FileSource
from relabel.model.normalisation import estimate_normalisation, normalise

from conftest import WORKFLOW_YAML


def rgb(seed, size=16):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_colour_and_grey_stamps_map_channels_to_the_workflows_bands(tmp_path):
    pixels = rgb(0)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "b.JPG", quality=95)
    Image.fromarray(np.dstack([pixels, np.full((16, 16), 255, np.uint8)])).save(tmp_path / "c.png")  # RGBA
    rows = pd.DataFrame({"CUTOUT": ["a.png", "b.JPG", "c.png"]})
    # Legacy Surveys colour JPEGs: g in blue, r in green, z in red.
    spec = CutoutSpec(layout="files", root=tmp_path, size=16, bands=["g", "r", "z"], channels=["B", "G", "R"])
    with FileSource(spec) as source:
        got = source.read(rows)
    assert list(got.status) == [st.OK] * 3
    np.testing.assert_array_equal(got.images[0], np.moveaxis(pixels[:, :, [2, 1, 0]], -1, 0))
    np.testing.assert_array_equal(got.images[2], got.images[0])
    jpeg = np.asarray(Image.open(tmp_path / "b.JPG"))  # lossy: compare with what Pillow decodes
    np.testing.assert_array_equal(got.images[1], np.moveaxis(jpeg[:, :, [2, 1, 0]], -1, 0))

    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "grey.png")
    with FileSource(CutoutSpec(layout="files", root=tmp_path, size=16, bands=["r"])) as source:
        grey = source.read(pd.DataFrame({"CUTOUT": ["grey.png", "a.png"]}))
    assert list(grey.status) == [st.OK, st.WRONG_BANDS]  # a colour stamp is never silently made grey
    np.testing.assert_array_equal(grey.images[0, 0], pixels[:, :, 0])


def test_stamp_faults_are_row_statuses(tmp_path):
    Image.fromarray(rgb(1)).save(tmp_path / "ok.jpg")
    Image.fromarray(rgb(1, size=20)).save(tmp_path / "big.jpg")
    Image.fromarray(rgb(1)[:, :, 0]).save(tmp_path / "grey.jpg")
    (tmp_path / "trunc.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:200])
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(np.zeros((16, 16), np.uint16) + 1000).save(tmp_path / "deep.png")  # 16-bit
    rows = pd.DataFrame({"CUTOUT": ["ok.jpg", "big.jpg", "grey.jpg", "trunc.jpg", "text.png", "deep.png", "gone.jpg"]})
    with FileSource(CutoutSpec(layout="files", root=tmp_path, size=16, bands=["g", "r", "z"])) as source:
        got = source.read(rows)
    assert list(got.status) == [st.OK, st.WRONG_SHAPE, st.WRONG_BANDS, st.CORRUPT_FILE, st.CORRUPT_FILE,
                                st.CORRUPT_FILE, st.MISSING_FILE]
    assert (got.images[1:] == 0).all()


def test_read_ahead_threads_keep_row_order(tmp_path):
    names = []
    for k in range(50):
        Image.fromarray(np.full((16, 16), k, np.uint8)).save(tmp_path / f"{k}.png")
        names.append(f"{k}.png" if k != 17 else "missing.png")
    with FileSource(CutoutSpec(layout="files", root=tmp_path, size=16, bands=["r"])) as source:
        assert source.read_threads > 1
        got = source.read(pd.DataFrame({"CUTOUT": names}))
    assert got.status[17] == st.MISSING_FILE and (np.delete(got.status, 17) == st.OK).all()
    expect = np.arange(50, dtype=np.float32)
    expect[17] = 0
    np.testing.assert_array_equal(got.images[:, 0, 0, 0], expect)


def test_fits_files_are_read_in_the_calling_thread_and_stamps_by_the_pool(tmp_path):
    # fitsio holds the GIL through a read: threads would only queue; Pillow releases it while decoding.
    import fitsio

    for k in range(40):
        fitsio.write(str(tmp_path / f"{k}.fits"), np.full((16, 16), k, np.float32), clobber=True)
        Image.fromarray(np.full((16, 16), k, np.uint8)).save(tmp_path / f"{k}.png")
    spec = CutoutSpec(layout="files", root=tmp_path, size=16, bands=["r"])
    with FileSource(spec) as source:
        got = source.read(pd.DataFrame({"CUTOUT": [f"{k}.fits" for k in range(40)]}))
        assert source._pool is None
        np.testing.assert_array_equal(got.images[:, 0, 3, 3], np.arange(40, dtype=np.float32))
        got = source.read(pd.DataFrame({"CUTOUT": [f"{k}.png" for k in range(40)]}))
        assert source._pool is not None
        np.testing.assert_array_equal(got.images[:, 0, 3, 3], np.arange(40, dtype=np.float32))


def test_eight_bit_stamps_get_the_linear_normalisation():
    images = np.moveaxis(rgb(2)[None], -1, 1).astype(np.float32)
    norm = estimate_normalisation(images)
    assert norm["name"] == "linear8bit" and norm["offset"] == [127.5] * 3
    out = normalise(images, norm)
    assert out.min() >= -1 and out.max() <= 1
    np.testing.assert_allclose(out, (images - 127.5) / 127.5)
    # Calibrated fluxes (not whole numbers in 0..255) keep the sky-based arcsinh stretch.
    assert estimate_normalisation(images + 0.25)["name"] == "arcsinh"


def test_jpeg_catalog_end_to_end_through_train_and_run(tmp_path, capsys):
    from relabel.cli import main
    from relabel.model import load_checkpoint, predict_proba, preprocess
    from relabel.model.inputs import frame_inputs
    from relabel.train import train_model

    rng = np.random.default_rng(3)
    n = 64
    (tmp_path / "jpeg").mkdir()
    stamps = []
    for k in range(n):
        Image.fromarray(rgb(100 + k)).save(tmp_path / "jpeg" / f"{k}.jpg", quality=90)
        stamps.append(np.moveaxis(np.asarray(Image.open(tmp_path / "jpeg" / f"{k}.jpg"))[:, :, [2, 1, 0]], -1, 0))
    p = rng.uniform(0, 1, n).astype(np.float32)
    table = pd.DataFrame({"OBJID": np.arange(n) + 1, "RA": rng.uniform(0, 360, n), "DEC": rng.uniform(-30, 30, n),
                          "P_EL": p, "P_CS": 1 - p, "CUTOUT": [f"jpeg/{k}.jpg" for k in range(n)]})
    for col in ("ABS_MAG", "R50_KPC", "RESOLUTION", "REDSHIFT", "MAG_R"):
        table[col] = rng.normal(size=n).astype(np.float32)
    table.to_parquet(tmp_path / "catalog.parquet")
    wf = yaml.safe_load(WORKFLOW_YAML)
    wf["cutouts"] = {"layout": "files", "root": ".", "path_column": "CUTOUT", "size": 16,
                     "bands": ["g", "r", "z"], "channels": ["B", "G", "R"]}
    wf["labels"]["probabilities"][0]["threshold"] = wf["labels"]["probabilities"][1]["threshold"] = 0.5
    wf["bias"] = {"log2_bins_int": 1, "bins_obs": 2, "n_boot": 2, "n_null": 2}
    (tmp_path / "jpeg.yaml").write_text(yaml.safe_dump(wf))

    model = train_model(tmp_path / "catalog.parquet", tmp_path / "jpeg.yaml", "biased", tmp_path / "model.pt",
                        epochs=1, width=4, progress=False).path
    net, meta = load_checkpoint(model)
    assert meta.normalisation["name"] == "linear8bit" and meta.bands == ["g", "r", "z"]

    code = main(["run", str(tmp_path / "catalog.parquet"), "--model", str(model), "--out", str(tmp_path / "out"),
                 "--config", str(tmp_path / "jpeg.yaml"), "--cluster", "none"])
    assert code == 0
    df = pd.read_parquet(tmp_path / "out").sort_values("row")
    assert (df["status"] == st.OK).all()  # before: every JPEG row was corrupt_file
    inputs = torch.from_numpy(frame_inputs(net, table))  # the model also takes the intrinsic columns (default)
    assert meta.catalog_inputs == ["ABS_MAG", "R50_KPC"]
    expect = predict_proba(net, preprocess(np.stack(stamps).astype(np.float32), meta), temperature=meta.temperature,
                           inputs=inputs)
    np.testing.assert_allclose(df[["p_elliptical", "p_spiral"]].to_numpy(), expect, atol=1e-5)
