"""Class probabilities of a batch of normalised cutouts, and the square's symmetries used to augment them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from relabel.errors import CheckpointError
from relabel.model.checkpoint import CheckpointMeta
from relabel.model.device import autocast_for
from relabel.model.network import MorphologyCNN
from relabel.model.normalisation import normalise


def predict_proba(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256, temperature: float = 1.0,
    inputs: torch.Tensor | None = None,
) -> np.ndarray:
    """Softmax class probabilities as float64 numpy, in batches on the model's device.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier; evaluated in eval mode (its training mode is restored after).
    images : torch.Tensor, shape (n, bands, size, size)
        Normalised cutouts (see :func:`preprocess`).
    batch_size : int
        Cutouts per forward pass.
    temperature : float
        Logits are divided by it before the softmax (temperature scaling, Guo et al. 2017); a
        checkpoint's ``meta.temperature`` gives the probabilities ``relabel run`` writes.
    inputs : torch.Tensor, shape (n, d), optional
        The galaxies' catalog inputs, for a model that takes them
        (:func:`relabel.model.network.catalog_inputs`).

    Returns
    -------
    numpy.ndarray, shape (n, K), float64
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode(), autocast_for(device):
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device, non_blocking=True,
                                                        memory_format=torch.channels_last)
            extra = None if inputs is None else inputs[start:start + batch_size].to(device)
            logits = model(batch) if extra is None else model(batch, extra)
            out.append(torch.softmax(logits.float() / float(temperature), dim=1).cpu())
    model.train(was_training)
    if not out:
        n_classes = model.n_classes if isinstance(model, MorphologyCNN) else 0
        return np.zeros((0, n_classes))
    return torch.cat(out).double().numpy()


def dihedral_augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image turned by a random multiple of 90 degrees and randomly flipped (the 8 symmetries of a square).

    Galaxy morphology does not depend on orientation, and these transforms move
    pixels without interpolation, so the noise stays exactly as observed.

    Parameters
    ----------
    images : torch.Tensor, shape (n, bands, size, size)
        Square cutouts.
    generator : torch.Generator, optional
        Seeds the choice of symmetry per image.

    Returns
    -------
    torch.Tensor, shape (n, bands, size, size)
        A new tensor; ``images`` is unchanged.
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


def preprocess(images: np.ndarray, meta: CheckpointMeta) -> torch.Tensor:
    """Float32 cutouts (n, bands, H, W) -> the network's input, exactly as ``relabel run`` prepares it.

    Parameters
    ----------
    images : numpy.ndarray, shape (n, bands, size, size)
        Cutouts in the survey's pixel units, bands in the checkpoint's order.
    meta : CheckpointMeta
        The checkpoint's metadata (bands, size, normalisation).

    Returns
    -------
    torch.Tensor, shape (n, bands, size, size), float32

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
