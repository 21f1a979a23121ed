"""The morphology classifier: a compact residual CNN for n-band square cutouts."""

from __future__ import annotations

import torch
from torch import nn

from relabel.errors import CheckpointError


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
        """Two 3x3 convolutions plus the shortcut, shape (n, c_out, H / stride, W / stride).

        Parameters
        ----------
        x : torch.Tensor, shape (n, c_in, H, W)
            Feature maps.

        Returns
        -------
        torch.Tensor
        """
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

    With ``catalog_inputs`` (catalog columns: the workflow's intrinsic properties) a small
    perceptron of those values adds its logits to the image's: the class probabilities are
    a product of experts, ``p(class | image, catalog) ~ exp(f(image) + g(catalog))``, in
    which the catalog gives the prior and the image the evidence. Where an image shows
    little (a small, faint galaxy) its logits are weak and the prior decides; the de-biasing
    constraint is conditional on these same properties, and an image of one band cannot
    show, e.g., a galaxy's colour. The values are standardised inside the model
    (``input_offset``, ``input_scale``: buffers saved with the weights, set from the
    training rows by :meth:`set_input_scaling`) and clipped to +-``INPUT_CLIP`` scales.

    Examples
    --------
    >>> net = MorphologyCNN(n_bands=1, n_classes=2, width=8)
    >>> net(torch.zeros(3, 1, 32, 32)).shape
    torch.Size([3, 2])
    >>> net = MorphologyCNN(n_bands=1, n_classes=2, width=8, catalog_inputs=("M_R", "COLOR_GR"))
    >>> net(torch.zeros(3, 1, 32, 32), torch.zeros(3, 2)).shape
    torch.Size([3, 2])
    """

    #: Standardised catalog inputs are clipped to this many scales (values unlike any training galaxy's).
    INPUT_CLIP = 6.0
    input_offset: torch.Tensor
    input_scale: torch.Tensor

    def __init__(self, n_bands: int, n_classes: int, width: int = 16, blocks: tuple[int, ...] = (1, 1, 1, 1),
                 stem_stride: int = 2, dropout: float = 0.2, catalog_inputs: tuple[str, ...] | list[str] = ()):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(n_bands, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.n_classes = n_classes
        stages: list[ResidualBlock] = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                stages.append(ResidualBlock(c_in, c_out, stride=2 if (j == 0 and i > 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, n_classes))
        self.catalog_inputs = tuple(str(c) for c in catalog_inputs)
        self.catalog_head: nn.Module | None = None
        if self.catalog_inputs:
            d = len(self.catalog_inputs)
            self.catalog_head = nn.Sequential(nn.Linear(d, 32), nn.ReLU(inplace=True), nn.Linear(32, n_classes))
            self.register_buffer("input_offset", torch.zeros(d))
            self.register_buffer("input_scale", torch.ones(d))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last norm of each residual branch: every block starts as the identity, training is steadier.
        for block in stages:
            nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits of normalised cutouts (and, for a model with catalog inputs, their catalog values).

        Parameters
        ----------
        x : torch.Tensor, shape (n, bands, size, size)
            Normalised cutouts (:func:`relabel.model.normalisation.normalise`).
        inputs : torch.Tensor, shape (n, len(catalog_inputs)), optional
            The galaxies' values of ``catalog_inputs`` in catalog units (finite); required exactly
            when the model has catalog inputs.

        Returns
        -------
        torch.Tensor, shape (n, K)
            Logits (softmax gives the probabilities).

        Raises
        ------
        ValueError
            ``inputs`` missing for a model with catalog inputs, or given to one without.
        """
        logits = self.head(self.stages(self.stem(x)))
        if self.catalog_head is None:
            if inputs is not None:
                raise ValueError("this model takes no catalog inputs")
            return logits
        if inputs is None:
            raise ValueError(f"this model also takes the catalog values of {list(self.catalog_inputs)}")
        z = (inputs.to(self.input_offset.dtype) - self.input_offset) / self.input_scale
        z = z.clamp(-self.INPUT_CLIP, self.INPUT_CLIP)
        return logits + self.catalog_head(z).to(logits.dtype)

    def set_input_scaling(self, values: torch.Tensor) -> None:
        """Standardise the catalog inputs by the median and the normalised interquartile range of ``values``.

        Parameters
        ----------
        values : torch.Tensor, shape (n, len(catalog_inputs))
            The training galaxies' values (finite).
        """
        if self.catalog_head is None or len(values) == 0:
            return
        values = values.double()
        q25, q50, q75 = (torch.quantile(values, q, dim=0) for q in (0.25, 0.5, 0.75))
        # 1.349 IQR is one standard deviation for a Gaussian, and unmoved by a few extreme catalog values.
        scale = ((q75 - q25) / 1.349).clamp_min(1e-6)
        self.input_offset.copy_(q50.float())
        self.input_scale.copy_(scale.float())


def build_model(architecture: dict) -> MorphologyCNN:
    """The network an ``architecture`` record (as stored in a checkpoint) describes.

    Parameters
    ----------
    architecture : dict
        ``name`` (``"MorphologyCNN"``) and the keyword arguments of :class:`MorphologyCNN`.

    Returns
    -------
    MorphologyCNN
        Freshly initialised; load weights into it.

    Raises
    ------
    CheckpointError
        An unknown architecture name.
    TypeError
        A keyword :class:`MorphologyCNN` does not take.
    """
    arch = dict(architecture)
    name = arch.pop("name", "MorphologyCNN")
    if name != "MorphologyCNN":
        raise CheckpointError(f"unknown architecture {name!r}; this relabel knows MorphologyCNN")
    arch["blocks"] = tuple(arch.get("blocks", (1, 1, 1, 1)))
    arch["catalog_inputs"] = tuple(arch.get("catalog_inputs", ()))
    return MorphologyCNN(**arch)


def catalog_inputs(model: nn.Module) -> tuple[str, ...]:
    """The catalog columns a model takes besides its cutouts (empty for an image-only model).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    tuple of str
    """
    return tuple(getattr(model, "catalog_inputs", ()))
