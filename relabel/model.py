"""The morphology classifier: a compact residual CNN, its input normalisation and its checkpoints.

A checkpoint is one file written by ``torch.save`` holding only a state dict of
tensors and a JSON string of metadata (:class:`CheckpointMeta`). It is read back
with ``torch.load(weights_only=True)``, so loading executes no code: a file whose
pickle asks to build arbitrary objects is refused. The metadata carries
everything inference must repeat exactly: class names, bands, cutout size, and
the normalisation (an arcsinh stretch whose per-band offset and scale were
estimated from the sky noise of the training cutouts).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import CheckpointError, ConfigError

CHECKPOINT_FORMAT = "relabel-checkpoint"
CHECKPOINT_VERSION = 1

#: Width of the frame of border pixels that estimates the sky level and noise.
SKY_BORDER = 4


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class MorphologyCNN(nn.Module):
    """Residual CNN for n-band square cutouts; outputs one logit per class.

    A strided 3x3 stem halves the image (a 64x64 cutout becomes 32x32), then four
    stages of residual blocks, each after the first doubling the channels and
    halving the size (32 -> 16 -> 8 -> 4 for 64x64), then global average pooling,
    dropout and a linear layer. ``width=16`` gives about 0.3 M parameters, ``width=32`` about
    1.2 M. Global pooling makes the network accept any cutout size, but a
    checkpoint is only used at the size it was trained on (:meth:`CheckpointMeta.check_input`).

    Examples
    --------
    >>> net = MorphologyCNN(n_bands=1, n_classes=2, width=8)
    >>> net(torch.zeros(3, 1, 32, 32)).shape
    torch.Size([3, 2])
    """

    def __init__(self, n_bands: int, n_classes: int, width: int = 16, blocks: tuple[int, ...] = (1, 1, 1, 1),
                 stem_stride: int = 2, dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(n_bands, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                stages.append(ResidualBlock(c_in, c_out, stride=2 if (j == 0 and i > 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, n_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last norm of each residual branch: every block starts as the identity, training is steadier.
        for block in self.stages:
            nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def build_model(architecture: dict) -> MorphologyCNN:
    """The network an ``architecture`` record (as stored in a checkpoint) describes."""
    arch = dict(architecture)
    name = arch.pop("name", "MorphologyCNN")
    if name != "MorphologyCNN":
        raise CheckpointError(f"unknown architecture {name!r}; this relabel knows MorphologyCNN")
    arch["blocks"] = tuple(arch.get("blocks", (1, 1, 1, 1)))
    return MorphologyCNN(**arch)


# --------------------------------------------------------------------------- normalisation


def estimate_normalisation(images: np.ndarray, border: int = SKY_BORDER) -> dict:
    """Arcsinh-stretch parameters per band from the sky in the cutouts' border frame.

    The offset is the median border pixel (the residual sky level) and the scale the
    robust sky noise, 1.4826 x the median absolute deviation. ``asinh((x - offset) / scale)``
    is then linear (about x / noise) at the noise level and logarithmic in bright
    cores, so faint outer structure (spiral arms) and bright bulges both stay in a
    range the network handles. One value per band for the whole survey, never per
    image, so surface brightness still means the same in every cutout.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> norm = estimate_normalisation(rng.normal(1.0, 2.0, (50, 1, 32, 32)).astype(np.float32))
    >>> norm["name"], round(norm["offset"][0], 1), round(norm["scale"][0], 1)
    ('arcsinh', 1.0, 2.0)
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"need images of shape (n, bands, H, W) with n > 0, got {images.shape}")
    frame = np.ones(images.shape[-2:], dtype=bool)
    frame[border:-border, border:-border] = False
    offsets, scales = [], []
    for b in range(images.shape[1]):
        sky = images[:, b][:, frame]
        sky = sky[np.isfinite(sky)]
        median = float(np.median(sky))
        mad = float(np.median(np.abs(sky - median)))
        if not mad > 0:
            mad = float(np.std(sky)) / 1.4826 or 1.0
        offsets.append(median)
        scales.append(1.4826 * mad)
    return {
        "name": "arcsinh",
        "offset": offsets,
        "scale": scales,
        "estimated_from": f"{SKY_BORDER}-pixel border frame of {images.shape[0]} training cutouts: "
        "offset = median, scale = 1.4826 x MAD (sky noise)",
    }


def normalise(images: np.ndarray, normalisation: dict, out: np.ndarray | None = None) -> np.ndarray:
    """Apply a recorded normalisation to float32 images (n, bands, H, W); non-finite pixels become the sky (0).

    ``out`` (float32, same shape) receives the result without temporaries: the pipeline
    normalises straight into its padded batch buffer.
    """
    name = normalisation.get("name")
    if name != "arcsinh":
        raise CheckpointError(f"unknown normalisation {name!r}; this relabel knows 'arcsinh'")
    offset = np.asarray(normalisation["offset"], dtype=np.float32)[None, :, None, None]
    scale = np.asarray(normalisation["scale"], dtype=np.float32)[None, :, None, None]
    if out is None:
        out = np.empty(np.shape(images), dtype=np.float32)
    np.subtract(np.asarray(images, dtype=np.float32), offset, out=out)
    np.divide(out, scale, out=out)
    np.arcsinh(out, out=out)
    # nan_to_num writes every pixel (7x the cost of the check); most batches have nothing to fix.
    if not np.isfinite(out).all():
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


# --------------------------------------------------------------------------- checkpoint metadata


@dataclass
class CheckpointMeta:
    """What a checkpoint records besides its weights.

    ``workflow`` is the column mapping the model was trained with (catalog id and
    coordinates, label columns and thresholds, intrinsic and observable columns,
    cutout layout); ``split`` says how training and validation rows were chosen
    (see :func:`relabel.train.validation_mask`); ``content_hash`` is the sha256 of the
    checkpoint file's bytes, filled in when the file is written or read.
    """

    classes: list[str]
    bands: list[str]
    size: int
    normalisation: dict
    architecture: dict
    method: str = "biased"
    lam: float = 0.0
    binning: dict = field(default_factory=dict)
    workflow: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    relabel_version: str = __version__
    format_version: int = CHECKPOINT_VERSION
    content_hash: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("content_hash")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CheckpointMeta":
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def check_input(self, bands, size: int, source: str = "the data") -> None:
        """Refuse data whose bands or cutout size differ from what the model was trained on.

        Raises
        ------
        CheckpointError
            Naming the expected and the given bands / size.
        """
        problems = []
        if list(bands) != list(self.bands):
            problems.append(f"bands {list(bands)} where the model was trained on {list(self.bands)}")
        if int(size) != int(self.size):
            problems.append(f"cutout size {int(size)} where the model was trained on {int(self.size)}")
        if problems:
            raise CheckpointError(f"checkpoint {self.content_hash[:12] or '(unsaved)'} does not fit {source}: "
                                  + "; ".join(problems))


# --------------------------------------------------------------------------- save / load


def save_checkpoint(model: nn.Module, meta: CheckpointMeta, path: str | Path) -> str:
    """Write weights + metadata to ``path`` atomically; return (and set in ``meta``) the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "meta": meta.to_json(), "state_dict": state}, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    meta.content_hash = hashlib.sha256(data).hexdigest()
    return meta.content_hash


def read_checkpoint(path: str | Path) -> tuple[dict, CheckpointMeta]:
    """The state dict (CPU tensors) and metadata of a checkpoint file, without building the model.

    Raises
    ------
    CheckpointError
        The file is missing, truncated, not a relabel checkpoint, or holds anything
        but tensors and plain data (a pickle that would run code is refused, not run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():
            # A plain (non-torch) pickle makes torch warn about its protocol before refusing it.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data (possibly code); "
            f"refused without running it ({str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a relabel checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    try:
        meta = CheckpointMeta.from_json(payload["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata ({exc})") from None
    if meta.format_version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {meta.format_version}; this relabel {__version__} reads "
            f"up to {CHECKPOINT_VERSION}: upgrade relabel"
        )
    meta.content_hash = hashlib.sha256(data).hexdigest()
    return payload["state_dict"], meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[MorphologyCNN, CheckpointMeta]:
    """The model (in eval mode, on ``device``) and metadata of a checkpoint; executes no code from the file.

    Raises
    ------
    CheckpointError
        See :func:`read_checkpoint`; also when the weights do not fit the recorded architecture.
    """
    state, meta = read_checkpoint(path)
    model = build_model(meta.architecture)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the recorded architecture ({exc})") from None
    # Channels-last lets oneDNN (CPU) and cuDNN (GPU) pick their fastest convolutions: ~1.5x on this CPU.
    return model.to(device, memory_format=torch.channels_last).eval(), meta


# --------------------------------------------------------------------------- inference


def preprocess(images: np.ndarray, meta: CheckpointMeta) -> torch.Tensor:
    """Float32 cutouts (n, bands, H, W) -> the network's input, exactly as in training.

    Raises
    ------
    CheckpointError
        The images' band count or size differs from the checkpoint's.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != len(meta.bands) or images.shape[2] != images.shape[3]:
        raise CheckpointError(
            f"checkpoint {meta.content_hash[:12] or '(unsaved)'} expects cutouts of shape "
            f"(n, {len(meta.bands)}, {meta.size}, {meta.size}) (bands {meta.bands}); got {images.shape}"
        )
    meta.check_input(meta.bands, images.shape[-1])
    return torch.from_numpy(normalise(images, meta.normalisation))


def choose_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``requested``, or with None/"auto" CUDA when torch sees a GPU, else the CPU.

    With several GPUs and one worker process per GPU (a SLURM job, or a LocalCluster on a
    multi-GPU machine), worker ``name-i`` (or ``i``) takes GPU ``i``: the processes start
    with the same environment, so CUDA_VISIBLE_DEVICES cannot tell them apart.

    Raises
    ------
    ConfigError
        A CUDA device was asked for and torch sees none.

    Examples
    --------
    >>> choose_device("cpu")
    device(type='cpu')
    """
    if requested not in (None, "auto"):
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {requested} was asked for but torch sees no CUDA device")
        return device
    if not torch.cuda.is_available():
        return torch.device("cpu")
    per_job = int(os.environ.get("RELABEL_GPUS_PER_JOB", "1") or 1)
    if per_job > 1:
        try:
            from distributed import get_worker

            index = int(str(get_worker().name).rsplit("-", 1)[-1])
            return torch.device(f"cuda:{index % torch.cuda.device_count()}")
        except (ImportError, ValueError):
            pass
    return torch.device("cuda")


def autocast_for(device: torch.device):
    """bfloat16 autocast on CUDA (convolutions on tensor cores); nothing on CPU, which stays exact and deterministic."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Softmax class probabilities (n, K) as float64 numpy, in batches on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode(), autocast_for(device):
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device, non_blocking=True,
                                                        memory_format=torch.channels_last)
            out.append(torch.softmax(model(batch).float(), dim=1).cpu())
    model.train(was_training)
    if not out:
        n_classes = model.head[-1].out_features if isinstance(model, MorphologyCNN) else 0
        return np.zeros((0, n_classes))
    return torch.cat(out).double().numpy()


def dihedral_augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image turned by a random multiple of 90 degrees and randomly flipped (the 8 symmetries of a square).

    Galaxy morphology does not depend on orientation, and these transforms move
    pixels without interpolation, so the noise stays exactly as observed.
    """
    n = images.shape[0]
    choice = torch.randint(0, 8, (n,), generator=generator)
    out = images.clone()
    for code in range(1, 8):
        idx = (choice == code).nonzero(as_tuple=True)[0].to(images.device)
        if len(idx) == 0:
            continue
        x = torch.rot90(images.index_select(0, idx), code % 4, dims=(2, 3))
        if code >= 4:
            x = torch.flip(x, dims=(3,))
        out[idx] = x
    return out
