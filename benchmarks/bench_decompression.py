"""How fast can a tile-compressed survey image be decompressed on this CPU? (issue 17's bound)

    python benchmarks/bench_decompression.py [--size 2048] [--repeats 5]

Writes one size x size float32 image of unit Gaussian noise (the sky that fills most of
a survey image) as RICE_1 with q = 16 (the simulator's and fpack's default quantisation),
the same quantised to int32 without quantisation (pure Rice decoding), and GZIP_1; then
times, best of ``--repeats``, nanoseconds of wall time per decompressed pixel, one
thread: fitsio reading the whole image and in blocks of 32 rows (how relabel reads
compressed images), and astropy's ``section`` whole and in 32-row blocks. The result
bounds what cutting stamps from compressed images can cost per stamp: at a density of
one galaxy per P pixels per band, at least (ns per pixel) x P x bands.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent


def best_ns_per_pixel(read, pixels: int, repeats: int) -> float:
    """Best wall time of ``read()`` over ``repeats`` calls, in ns per pixel."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - t0)
    return best * 1e9 / pixels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_decompression.json")
    args = parser.parse_args(argv)
    n = args.size
    sky = np.random.default_rng(0).normal(0.0, 1.0, (n, n)).astype(np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"RICE_1 float32, q = 16": (Path(tmp) / "rice.fits.fz", sky, {"compress": "rice", "qlevel": 16.0}),
                 "RICE_1 int32 (no quantisation)": (Path(tmp) / "int.fits.fz", np.round(16 * sky).astype(np.int32),
                                                    {"compress": "rice"}),
                 "GZIP_1 float32, q = 16": (Path(tmp) / "gzip.fits.fz", sky, {"compress": "gzip", "qlevel": 16.0})}
        for name, (path, data, options) in files.items():
            fitsio.write(str(path), data, **options)
            row = {}
            with fitsio.FITS(str(path)) as f:
                hdu = f[1]
                row["fitsio, whole image"] = best_ns_per_pixel(hdu.read, n * n, args.repeats)
                row["fitsio, 32-row blocks"] = best_ns_per_pixel(
                    lambda: [hdu[y:y + 32, :] for y in range(0, n, 32)], n * n, args.repeats)
            with fits.open(path) as f:
                hdu = f[1]
                row["astropy section, whole image"] = best_ns_per_pixel(lambda: hdu.section[:, :], n * n,
                                                                        args.repeats)
                row["astropy section, 32-row blocks"] = best_ns_per_pixel(
                    lambda: [hdu.section[y:y + 32, :] for y in range(0, n, 32)], n * n, args.repeats)
            results[name] = row
            print(name, {k: round(v, 1) for k, v in row.items()}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"size": n, "repeats": args.repeats, "ns_per_pixel": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
