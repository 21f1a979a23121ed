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
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last norm of each residual branch: every block starts as the identity, training is steadier.
        for block in stages:
            nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of normalised cutouts.

        Parameters
        ----------
        x : torch.Tensor, shape (n, bands, size, size)
            Normalised cutouts (:func:`relabel.model.normalisation.normalise`).

        Returns
        -------
        torch.Tensor, shape (n, K)
            Logits (softmax gives the probabilities).
        """
        return self.head(self.stages(self.stem(x)))


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
    return MorphologyCNN(**arch)
