"""The training / validation split: a hash of each object's id and the seed, independent of row order.

Integer ids (int64, uint64) mix their 64-bit pattern, so the split of integer ids is
the one existing checkpoints record; text ids (IAU names, Zoobot ``id_str``) first
become 64 bits as the BLAKE2b digest of their UTF-8 bytes (trailing blanks removed).
No id ever goes through float: a 19-digit id would lose its last digits.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from relabel.errors import CatalogError, ConfigError

SPLIT_SCHEME = "splitmix64(id ^ seed)"


def id_bits(ids) -> np.ndarray:
    """Each id's 64-bit value: an integer's two's-complement bits, or the 8-byte BLAKE2b digest of a text id.

    Parameters
    ----------
    ids : array-like, shape (n,)
        Integers (NumPy or pandas nullable, without nulls) or text.

    Returns
    -------
    numpy.ndarray of uint64, shape (n,)

    Raises
    ------
    CatalogError
        For float or null ids (a float cannot hold every 64-bit id).
    """
    dtype = getattr(ids, "dtype", None)
    if dtype is not None and hasattr(dtype, "numpy_dtype") and dtype.kind in "iu":
        if pd.isna(ids).any():
            raise CatalogError("ids hold nulls; every galaxy needs an id")
        ids = ids.to_numpy(dtype=dtype.numpy_dtype)
    values = np.asarray(ids)
    if values.dtype.kind == "u":
        return values.astype(np.uint64)
    if values.dtype.kind == "i":
        return values.astype(np.int64).view(np.uint64)
    if values.dtype.kind == "f":
        raise CatalogError("ids are floating-point numbers; give an integer or text id column (floats lose digits)")
    out = np.empty(len(values), dtype=np.uint64)
    for i, value in enumerate(values):
        if value is None or (not isinstance(value, (str, bytes)) and pd.isna(value)):
            raise CatalogError(f"id of row {i} is null; every galaxy needs an id")
        if isinstance(value, (int, np.integer)):
            out[i] = np.uint64(int(value) & 0xFFFFFFFFFFFFFFFF)
            continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        out[i] = np.frombuffer(hashlib.blake2b(text.rstrip().encode(), digest_size=8).digest(), dtype="<u8")[0]
    return out


def validation_mask(ids, seed: int, val_fraction: float) -> np.ndarray:
    """True for the rows held out for validation: a fixed pseudo-random share of object ids.

    The choice depends only on each object's id (:func:`id_bits`) and the seed, not on
    the row order or on which other rows are present. The mixer is splitmix64
    (Steele, Lea & Flood 2014, OOPSLA).

    Parameters
    ----------
    ids : array-like of int or str, shape (n,)
        Object ids (the catalog's id column).
    seed : int
        Seed of the split.
    val_fraction : float
        Share held out, in [0, 1].

    Returns
    -------
    numpy.ndarray of bool, shape (n,)

    Examples
    --------
    >>> mask = validation_mask(np.arange(100_000), seed=0, val_fraction=0.25)
    >>> round(float(mask.mean()), 2)
    0.25
    >>> bool((validation_mask([7, 3], 0, 0.25) == validation_mask([3, 7], 0, 0.25)[::-1]).all())
    True
    >>> names = [f"J{i:06d}+000000" for i in range(20_000)]
    >>> round(float(validation_mask(names, 0, 0.25).mean()), 2)
    0.25
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = id_bits(ids)
    seed_mix = np.full(ids.shape, (int(seed) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = ids ^ seed_mix
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    uniform = (x >> np.uint64(11)).astype(np.float64) / float(2**53)
    return uniform < val_fraction
