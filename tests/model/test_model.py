"""The classifier, its normalisation and its checkpoints: round trip, refusals, safety."""

from __future__ import annotations

import doctest
import hashlib
import pickle

import numpy as np
import pytest
import torch

import relabel.model.checkpoint
import relabel.model.device
import relabel.model.network
import relabel.model.normalisation
import relabel.model.predict
from relabel.errors import CheckpointError
from relabel.model import (
    CheckpointMeta,
    MorphologyCNN,
    dihedral_augment,
    estimate_normalisation,
    load_checkpoint,
    predict_proba,
    preprocess,
    read_checkpoint,
    save_checkpoint,
)


def _meta(size: int = 16, bands=("r",), width: int = 8) -> CheckpointMeta:
    return CheckpointMeta(
        classes=["elliptical", "spiral"], bands=list(bands), size=size,
        normalisation={"name": "arcsinh", "offset": [0.5] * len(bands), "scale": [2.0] * len(bands)},
        architecture={"name": "MorphologyCNN", "n_bands": len(bands), "n_classes": 2, "width": width},
        method="debiased", lam=10.0, binning={"log2_bins_int": 4, "bins_obs": 5},
        workflow={"intrinsic": ["ABS_MAG"]}, metrics={"best_epoch": 3}, split={"seed": 0, "val_fraction": 0.25},
    )


def _trained_like(seed: int = 0) -> MorphologyCNN:
    torch.manual_seed(seed)
    net = MorphologyCNN(1, 2, width=8)
    # Non-trivial batch-norm statistics, so the round trip checks the buffers too.
    net.train()
    with torch.no_grad():
        net(torch.randn(32, 1, 16, 16) * 3 + 1)
    return net.eval()


def test_doctests():
    for module in (relabel.model.network, relabel.model.normalisation, relabel.model.checkpoint, relabel.model.device,
                   relabel.model.predict):
        assert doctest.testmod(module).failed == 0


def test_model_size_suits_64px_cutouts():
    net = MorphologyCNN(n_bands=1, n_classes=2)
    n_params = sum(p.numel() for p in net.parameters())
    assert 2e5 < n_params < 5e6
    assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 2)


def test_checkpoint_round_trip_gives_same_predictions(tmp_path):
    net, meta = _trained_like(), _meta()
    images = np.random.default_rng(1).normal(1.0, 3.0, (5, 1, 16, 16)).astype(np.float32)
    before = predict_proba(net, preprocess(images, meta))
    digest = save_checkpoint(net, meta, tmp_path / "m.pt")
    loaded, meta2 = load_checkpoint(tmp_path / "m.pt")
    assert not loaded.training
    np.testing.assert_array_equal(predict_proba(loaded, preprocess(images, meta2)), before)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-6)
    assert digest == meta2.content_hash == hashlib.sha256((tmp_path / "m.pt").read_bytes()).hexdigest()
    for key in ("classes", "bands", "size", "normalisation", "method", "lam", "binning", "workflow", "metrics", "split"):
        assert getattr(meta2, key) == getattr(meta, key)
    assert meta2.relabel_version == relabel.__version__


def test_preprocess_applies_the_recorded_arcsinh_stretch():
    meta = _meta()
    images = np.array([[[[0.5, 2.5], [np.nan, -3.5]]]], dtype=np.float32)
    meta.size = 2
    out = preprocess(images, meta).numpy()
    np.testing.assert_allclose(out[0, 0], [[0.0, np.arcsinh(1.0)], [0.0, np.arcsinh(-2.0)]], rtol=1e-6)


def test_normalisation_is_estimated_from_the_sky_noise():
    rng = np.random.default_rng(0)
    images = rng.normal(0.2, 0.05, (200, 2, 32, 32)).astype(np.float32)
    images[:, 1] *= 4
    images[:, :, 12:20, 12:20] += 100.0  # a bright galaxy must not change the sky estimate
    norm = estimate_normalisation(images)
    np.testing.assert_allclose(norm["offset"], [0.2, 0.8], rtol=0.02)
    np.testing.assert_allclose(norm["scale"], [0.05, 0.2], rtol=0.05)


def test_mismatched_input_is_refused_naming_what_differs():
    meta = _meta(size=16, bands=("r",))
    with pytest.raises(CheckpointError, match=r"cutout size 64 .* trained on 16"):
        meta.check_input(["r"], 64)
    with pytest.raises(CheckpointError, match=r"bands \['g', 'r'\] .* trained on \['r'\]"):
        meta.check_input(["g", "r"], 16)
    with pytest.raises(CheckpointError, match="expects cutouts of shape"):
        preprocess(np.zeros((2, 3, 16, 16), dtype=np.float32), meta)
    with pytest.raises(CheckpointError, match="cutout size 32"):
        preprocess(np.zeros((2, 1, 32, 32), dtype=np.float32), meta)


class _Payload:
    """Unpickling this object would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_checkpoint_with_code_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    payload = {"format": "relabel-checkpoint", "meta": "{}", "state_dict": {"w": _Payload(marker)}}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="refused without running it"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_or_foreign_checkpoint_names_the_file(tmp_path):
    save_checkpoint(_trained_like(), _meta(), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt.*not a relabel checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_dihedral_augment_only_turns_and_flips():
    images = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(50, 1, 1, 1)
    out = dihedral_augment(images, torch.Generator().manual_seed(0))
    symmetries = set()
    for src, dst in zip(images, out):
        matches = [(k, f) for k in range(4) for f in (False, True)
                   if torch.equal(torch.flip(torch.rot90(src, k, (1, 2)), (2,)) if f else torch.rot90(src, k, (1, 2)), dst)]
        assert matches
        symmetries.add(matches[0])
    assert len(symmetries) == 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gives")
def test_device_choice_without_cuda():
    from relabel.errors import ConfigError
    from relabel.model import choose_device

    assert choose_device("auto") == torch.device("cpu") == choose_device(None)
    with pytest.raises(ConfigError, match="device cuda was asked for but torch sees no CUDA device"):
        choose_device("cuda")
