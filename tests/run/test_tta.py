"""Test-time augmentation over the square's 8 symmetries, and the checkpoint's temperature, at inference."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from relabel.cli import main
from relabel.model import load_checkpoint, preprocess
from relabel.model.checkpoint import CHECKPOINT_FORMAT, CheckpointMeta, read_checkpoint, save_checkpoint
from relabel.run.inference import square_symmetry, symmetric_probabilities

from conftest import write_untrained_checkpoint


def symmetric_image(size: int = 16) -> np.ndarray:
    """A round galaxy centred between the four middle pixels: unchanged by every symmetry of the square."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    r2 = x**2 + y**2
    return (np.exp(-r2 / 8.0) + 0.3 * np.cos(np.sqrt(r2))).astype(np.float32)[None, None]


def test_the_eight_symmetries_are_distinct_and_leave_a_symmetric_image_alone():
    asymmetric = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = {tuple(square_symmetry(asymmetric, code).flatten().tolist()) for code in range(8)}
    assert len(views) == 8
    image = torch.from_numpy(symmetric_image())
    for code in range(8):
        assert torch.equal(square_symmetry(image, code), image)


def test_tta_of_a_symmetric_image_has_zero_spread(tiny_run):
    root, data, images, model_path = tiny_run
    model, meta = load_checkpoint(model_path)
    x = preprocess(np.concatenate([symmetric_image(), images[:3]]), meta)
    mean, std = symmetric_probabilities(model, x, tta=True)
    plain, none = symmetric_probabilities(model, x, tta=False)
    assert none is None
    assert np.abs(std[0]).max() < 1e-5
    np.testing.assert_allclose(mean[0], plain[0], atol=1e-5)
    # Noise images are not symmetric: an untrained network sees their turns differently.
    assert std[1:].max() > 1e-4
    # The mean is that of the 8 turned and flipped copies, each through the model alone.
    copies = np.stack([symmetric_probabilities(model, square_symmetry(x, c), tta=False)[0] for c in range(8)])
    np.testing.assert_allclose(mean, copies.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, copies.std(0), atol=1e-6)


def test_temperature_divides_the_logits(tiny_run):
    root, data, images, model_path = tiny_run
    model, meta = load_checkpoint(model_path)
    x = preprocess(images[:5], meta)
    with torch.inference_mode():
        logits = model(x).float()
    hot, _ = symmetric_probabilities(model, x, temperature=2.5, tta=False)
    np.testing.assert_allclose(hot, torch.softmax(logits / 2.5, dim=1).numpy(), atol=1e-6)


def test_old_checkpoint_without_temperature_loads_as_uncalibrated(tmp_path, tiny_run):
    root, data, images, model_path = tiny_run
    state, meta = read_checkpoint(model_path)
    old = json.loads(meta.to_json())
    old.pop("temperature"), old.pop("augment")
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "meta": json.dumps(old), "state_dict": state}, buffer)
    (tmp_path / "old.pt").write_bytes(buffer.getvalue())
    _, loaded = read_checkpoint(tmp_path / "old.pt")
    assert loaded.temperature == 1.0 and loaded.augment == "none"


def test_relabel_run_tta_end_to_end(tiny_run, capsys):
    root, data, images, model_path = tiny_run
    # A calibrated checkpoint: the run must apply its temperature.
    net, meta = load_checkpoint(model_path)
    meta.temperature = 1.7
    save_checkpoint(net, CheckpointMeta.from_json(meta.to_json()), root / "calibrated.pt")
    common = [str(root / "catalog.fits"), "--model", str(root / "calibrated.pt"), "--config",
              str(root / "workflow.yaml"), "--cluster", "none", "--no-bias", "--no-progress", "--batch-size", "8"]
    assert main(["run", *common, "--out", str(root / "tta"), "--tta"]) == 0
    assert main(["run", *common, "--out", str(root / "plain")]) == 0
    tta = pd.read_parquet(root / "tta").sort_values("row").reset_index(drop=True)
    plain = pd.read_parquet(root / "plain").sort_values("row").reset_index(drop=True)
    assert "p_spiral_std" not in plain.columns
    p = tta[["p_elliptical", "p_spiral"]].to_numpy()
    std = tta[["p_elliptical_std", "p_spiral_std"]].to_numpy()
    x = preprocess(images, meta)
    copies = np.stack([symmetric_probabilities(net, square_symmetry(x, c), 1.7, tta=False)[0] for c in range(8)])
    np.testing.assert_allclose(p, copies.mean(0), atol=1e-5)
    np.testing.assert_allclose(std, copies.std(0), atol=1e-5)
    np.testing.assert_allclose(plain[["p_elliptical", "p_spiral"]].to_numpy(), copies[0], atol=1e-5)
    assert (std > 0).all() and (tta["label"] == np.where(p[:, 1] > p[:, 0], "spiral", "elliptical")).all()
    # Resuming a TTA run without --tta would mix schemas: refused.
    assert main(["run", *common, "--out", str(root / "tta"), "--resume"]) == 2
    assert "tta" in capsys.readouterr().err
