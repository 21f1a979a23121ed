"""Catalog read speed (FITS) and one shard's read time and memory (Parquet file vs dataset).

Run from the repository root (a few minutes; be kind to shared machines):

    nice python benchmarks/bench_catalog.py [N_PARQUET]

FITS: a 1,000,000-row binary table of 20 columns shaped like a survey catalog
(int64 id, float64 RA/Dec, 10 float32, 2 int16 scaled with TSCALn, 1 int16 with
TNULLn, 1 int32, a 24-character text column, 2 more float64). Rows/s of
reading every column: fitsio alone (fast, but wrong on the 2 scaled columns),
astropy Table.read (right: the oracle), and relabel's reader (fitsio for the 17
plain columns, the stored integers for the 3 others). Also relabel on the 17
plain columns only (fitsio's speed must be kept there).

Parquet: N_PARQUET rows (default 20,000,000) of 8 columns written once as a single
file and once as a dataset of 20 files (row groups of 65,536 rows). For each, in
a fresh process: the time to open the catalog, to read one 2,048-row shard in the
middle, and the process's peak resident memory; and the whole-file read that
relabel 0.1 did for the same shard. Writes benchmarks/results/bench_catalog.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_FITS = 1_000_000
SHARD = 2048
ROW_GROUP = 65_536


def write_fits(path: Path, n: int) -> None:
    from astropy.io import fits

    rng = np.random.default_rng(0)
    cols = [fits.Column(name="OBJID", format="K", array=np.arange(n, dtype=np.int64) + 1237645942904389632),
            fits.Column(name="RA", format="D", array=rng.uniform(0, 360, n)),
            fits.Column(name="DEC", format="D", array=rng.uniform(-10, 70, n))]
    cols += [fits.Column(name=f"F{i}", format="E", array=rng.normal(size=n).astype(np.float32)) for i in range(10)]
    cols += [fits.Column(name=f"S{i}", format="I", array=rng.integers(0, 30000, n).astype(np.int16)) for i in range(2)]
    nexp = rng.integers(1, 20, n).astype(np.int16)
    nexp[::13] = -99
    cols += [fits.Column(name="N_EXP", format="I", null=-99, array=nexp),
             fits.Column(name="FLAGS", format="J", array=rng.integers(0, 2**20, n).astype(np.int32)),
             fits.Column(name="IAUNAME", format="24A", array=np.char.add("J", np.arange(n).astype("U23"))),
             fits.Column(name="Z", format="D", array=rng.uniform(0, 0.3, n)),
             fits.Column(name="ZERR", format="D", array=rng.uniform(0, 0.01, n))]
    hdu = fits.BinTableHDU.from_columns(cols, name="CATALOG")
    for k in (14, 15):  # S0, S1: sizes in units of 0.001
        hdu.header[f"TSCAL{k}"], hdu.header[f"TZERO{k}"] = 1e-3, 0.0
    hdu.writeto(path, overwrite=True)


def time_fits(path: Path) -> dict:
    import fitsio
    from astropy.table import Table

    from relabel.catalog import open_catalog

    def best(fn, repeat=3):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    cat = open_catalog(path)
    plain = [c for c in cat.columns if cat.plans[c].route == "fitsio"]
    numeric = [c for c in cat.columns if c != "IAUNAME"]
    try:
        fitsio.read(str(path), ext=1)
        whole = "read"
    except Exception as exc:  # the scaled columns shift the text column's bytes
        whole = f"fails: {type(exc).__name__}"
    out = {
        "fitsio_numeric_columns_wrong_values": best(lambda: fitsio.read(str(path), ext=1, columns=numeric)),
        "astropy_table_read": best(lambda: Table.read(path, hdu=1)),
        "relabel_all_columns": best(lambda: open_catalog(path).read_all(cat.columns)),
        "relabel_plain_columns": best(lambda: open_catalog(path).read_all(plain)),
        "fitsio_plain_columns": best(lambda: fitsio.read(str(path), ext=1, columns=plain)),
    }
    return {k: {"seconds": round(v, 3), "rows_per_s": round(N_FITS / v)} for k, v in out.items()} | {
        "routes": {r: sum(p.route == r for p in cat.plans.values()) for r in ("fitsio", "astropy")},
        "fitsio_all_columns": whole}


def write_parquet(root: Path, n: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    single, dataset = root / "single.parquet", root / "dataset"
    dataset.mkdir()
    chunk = n // 20
    writer = None
    for part in range(20):
        rng = np.random.default_rng(part)
        ids = np.arange(part * chunk, (part + 1) * chunk, dtype=np.int64) + 10**18
        table = pa.table({"OBJID": ids, "RA": rng.uniform(0, 360, chunk), "DEC": rng.uniform(-10, 70, chunk),
                          "P_EL": rng.uniform(size=chunk).astype(np.float32),
                          "P_CS": rng.uniform(size=chunk).astype(np.float32),
                          "RESOLUTION": rng.uniform(1, 9, chunk).astype(np.float32),
                          "REDSHIFT": rng.uniform(0, 0.2, chunk).astype(np.float32),
                          "TILE_INDEX": (np.arange(chunk) % 4096).astype(np.int32)})
        writer = writer or pq.ParquetWriter(single, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
        pq.write_table(table, dataset / f"part-{part:02d}.parquet", row_group_size=ROW_GROUP)
    writer.close()
    return single, dataset


BASELINE = r"""
import json
import pyarrow.dataset, pandas
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"peak_rss_mb": round(int(hwm) / 1024, 1)}))
"""


SHARD_PROBE = r"""
import json, sys, time
import pyarrow.dataset as ds
path, start, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cols = ["OBJID", "RA", "DEC", "P_EL", "P_CS"]
t0 = time.perf_counter()
if mode == "relabel":
    from relabel.catalog import open_catalog
    cat = open_catalog(path)
    t1 = time.perf_counter()
    frame = cat.read(cols, start, start + %d)
else:  # relabel 0.1: the whole fragment's columns, then a slice
    dataset = ds.dataset(path, format="parquet")
    frags = list(dataset.get_fragments()); counts = [f.count_rows() for f in frags]
    t1 = time.perf_counter()
    lo = 0
    for f, c in zip(frags, counts):
        if lo + c > start:
            frame = f.to_table(columns=cols).slice(start - lo, %d).to_pandas(); break
        lo += c
t2 = time.perf_counter()
assert len(frame) == %d
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"open_s": round(t1 - t0, 4), "shard_read_s": round(t2 - t1, 4),
                  "peak_rss_mb": round(int(hwm) / 1024, 1)}))
""" % (SHARD, SHARD, SHARD)


def time_parquet(n: int) -> dict:
    out = {"rows": n, "row_group_rows": ROW_GROUP, "shard_rows": SHARD}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        t = time.perf_counter()
        single, dataset = write_parquet(Path(tmp), n)
        out["write_seconds"] = round(time.perf_counter() - t, 1)
        start = n // 2 + 1000
        out["imports_only"] = json.loads(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True,
                                                        text=True, check=True).stdout)
        for name, path in (("single_file", single), ("dataset_20_files", dataset)):
            for mode in ("relabel", "relabel_0.1_whole_fragment"):
                probe = subprocess.run([sys.executable, "-c", SHARD_PROBE, str(path), str(start), mode.split("_")[0]
                                        if mode == "relabel" else "old"], capture_output=True, text=True, check=True)
                out[f"{name}/{mode}"] = json.loads(probe.stdout)
    return out


def main() -> None:
    n_parquet = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000_000
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        path = Path(tmp) / "cat.fits"
        write_fits(path, N_FITS)
        results["fits_1M_rows_20_columns"] = time_fits(path)
    results["parquet"] = time_parquet(n_parquet)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bench_catalog.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
