"""The training / validation split: a hash of each object's id and the seed, independent of row order."""

from __future__ import annotations

import numpy as np

from relabel.errors import ConfigError

SPLIT_SCHEME = "splitmix64(id ^ seed)"


def validation_mask(ids, seed: int, val_fraction: float) -> np.ndarray:
    """True for the rows held out for validation: a fixed pseudo-random share of object ids.

    The choice depends only on each object's id and the seed, not on the row order
    or on which other rows are present.

    Examples
    --------
    >>> mask = validation_mask(np.arange(100_000), seed=0, val_fraction=0.25)
    >>> round(float(mask.mean()), 2)
    0.25
    >>> bool((validation_mask([7, 3], 0, 0.25) == validation_mask([3, 7], 0, 0.25)[::-1]).all())
    True
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = np.asarray(ids).astype(np.int64).view(np.uint64)
    seed_mix = np.full(ids.shape, (int(seed) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = ids ^ seed_mix
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    uniform = (x >> np.uint64(11)).astype(np.float64) / float(2**53)
    return uniform < val_fraction
