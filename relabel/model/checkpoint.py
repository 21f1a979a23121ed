"""Checkpoints: one file of weights (a state dict of tensors) and JSON metadata, loaded without running code.

A checkpoint is written by ``torch.save`` holding only a state dict of tensors and a
JSON string of metadata (:class:`CheckpointMeta`). It is read back with
``torch.load(weights_only=True)``, so loading executes no code: a file whose pickle
asks to build arbitrary objects is refused. The metadata carries everything inference
must repeat exactly: class names, bands, cutout size, and the normalisation.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from relabel import __version__
from relabel.errors import CheckpointError
from relabel.files import write_bytes_atomic
from relabel.model.network import MorphologyCNN, build_model

CHECKPOINT_FORMAT = "relabel-checkpoint"
CHECKPOINT_VERSION = 1


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
    #: Logits are divided by this before the softmax at inference (temperature scaling,
    #: fitted on the validation split; 1.0 in checkpoints written before it existed).
    temperature: float = 1.0
    #: Training augmentation beyond the square's symmetries: "none" or "degrade".
    augment: str = "none"
    relabel_version: str = __version__
    format_version: int = CHECKPOINT_VERSION
    content_hash: str = ""

    def to_json(self) -> str:
        """The metadata as sorted JSON, without ``content_hash`` (which hashes the file that holds it)."""
        data = asdict(self)
        data.pop("content_hash")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        """Metadata from :meth:`to_json`'s text; keys this version does not know are ignored.

        Parameters
        ----------
        text : str
            JSON text.

        Returns
        -------
        CheckpointMeta
        """
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def n_classes(self) -> int:
        """K, the number of classes the model predicts."""
        return len(self.classes)

    def check_input(self, bands, size: int, source: str = "the data") -> None:
        """Refuse data whose bands or cutout size differ from what the model was trained on.

        Parameters
        ----------
        bands : sequence of str
            The data's bands, in order.
        size : int
            The data's cutout side, pixels.
        source : str
            What the data is, for the message (e.g. a catalog's path).

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


    @property
    def catalog_inputs(self) -> list[str]:
        """Catalog columns the network takes beside the cutouts (empty: images only)."""
        return list(self.architecture.get("catalog_inputs", []))

    def pixel_scale(self, workflow) -> float:
        """The pixel scale the model was trained at, arcsec / pixel (the workflow's when the checkpoint records none).

        Parameters
        ----------
        workflow : relabel.config.Workflow
            The data's workflow, whose ``cutouts.pixel_scale`` stands in for an old checkpoint's.

        Returns
        -------
        float
        """
        return float((self.workflow.get("cutouts") or {}).get("pixel_scale", workflow.cutouts.pixel_scale))

    def check_pixel_scale(self, workflow, what: str) -> None:
        """Refuse stamps whose stated pixel scale (``cutouts.pixel_scale`` in the workflow file) is not the model's.

        A network sees a galaxy's size in pixels: stamps at half the model's scale show
        every galaxy twice as large, and its labels follow. Tile cubes and per-galaxy files
        carry no WCS relabel reads, so the workflow's word is all there is (survey images
        are checked through their WCS instead, :func:`relabel.cutouts.images.check_pixel_scales`);
        a workflow that does not state a scale is not checked (the default is the
        simulator's 0.396 arcsec).

        Parameters
        ----------
        workflow : relabel.config.Workflow
            The data's workflow (``raw`` says whether the scale was stated).
        what : str
            The checkpoint, for the message.

        Raises
        ------
        CheckpointError
            Naming both scales and the tolerance.
        """
        stated = (workflow.raw.get("cutouts") or {}).get("pixel_scale")
        trained, tolerance = self.pixel_scale(workflow), workflow.cutouts.pixel_scale_tolerance
        if stated is not None and abs(float(stated) / trained - 1.0) > tolerance:
            raise CheckpointError(
                f"workflow {workflow.source or workflow.name} states cutouts.pixel_scale {float(stated):.4f} arcsec "
                f"where {what} was trained on {trained:.4f} (tolerance {tolerance:.1%}, key "
                "cutouts.pixel_scale_tolerance): resample the stamps or use a model trained at this scale")

    def check_columns(self, columns, source: str = "the catalog") -> None:
        """Refuse a catalog that lacks a column the network takes as input.

        Parameters
        ----------
        columns : collection of str
            The columns the data offers (for ``relabel run``: the workflow's intrinsic columns,
            which it reads from every row).
        source : str
            What the data is, for the message.

        Raises
        ------
        CheckpointError
            Naming the missing columns.
        """
        missing = [c for c in self.catalog_inputs if c not in set(columns)]
        if missing:
            raise CheckpointError(
                f"checkpoint {self.content_hash[:12] or '(unsaved)'} takes the catalog column(s) "
                f"{', '.join(missing)} beside the cutouts (trained with catalog_inputs {self.catalog_inputs}), "
                f"but {source} does not give them: name them among the workflow's intrinsic columns")


# --------------------------------------------------------------------------- save / load


def save_checkpoint(model: nn.Module, meta: CheckpointMeta, path: str | Path) -> str:
    """Write weights + metadata to ``path`` atomically; return (and set in ``meta``) the file's sha256.

    Parameters
    ----------
    model : torch.nn.Module
        The trained network (its state dict is saved on the CPU).
    meta : CheckpointMeta
        Bands, size, normalisation, classes, architecture, temperature; ``content_hash`` is set.
    path : str or pathlib.Path
        The checkpoint file.

    Returns
    -------
    str
        The sha256 hex digest of the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "meta": meta.to_json(), "state_dict": state}, buffer)
    data = buffer.getvalue()
    write_bytes_atomic(path, data)
    meta.content_hash = hashlib.sha256(data).hexdigest()
    return meta.content_hash


def read_checkpoint(path: str | Path) -> tuple[dict, CheckpointMeta]:
    """The state dict (CPU tensors) and metadata of a checkpoint file, without building the model.

    Parameters
    ----------
    path : str or pathlib.Path
        A checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    state : dict of str to torch.Tensor
        The weights, on the CPU.
    meta : CheckpointMeta

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
    kind = _foreign_kind(data)
    if kind:
        raise CheckpointError(f"checkpoint {path} is a {kind}, not a checkpoint: give the .pt file "
                              "written by `relabel train`")
    try:
        with warnings.catch_warnings():
            # A plain (non-torch) pickle makes torch warn about its protocol before refusing it.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data (possibly code); "
            f"refused without running it{_unsupported_global(exc)}"
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

    Parameters
    ----------
    path : str or pathlib.Path
        A checkpoint written by :func:`save_checkpoint`.
    device : str or torch.device
        Where the model is placed (channels-last memory format).

    Returns
    -------
    model : MorphologyCNN
    meta : CheckpointMeta

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
    # torch's stubs omit Module.to's memory_format keyword, which it accepts at run time.
    return model.to(device, memory_format=torch.channels_last).eval(), meta  # type: ignore[call-overload]


def _foreign_kind(data: bytes) -> str | None:
    """What a file that is certainly not a checkpoint is, from its first bytes (catalogs given by mistake)."""
    if data[:6] == b"SIMPLE":
        return "FITS file"
    if data[:4] == b"PAR1":
        return "Parquet file"
    return None


def _unsupported_global(exc: Exception) -> str:
    """The object torch refused to load (``: GLOBAL x.y``), without its paragraph about ``weights_only``."""
    import re

    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return f" (it names {found.group(1)})" if found else ""
