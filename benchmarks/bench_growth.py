"""How cost grows with the catalog: 10k, 100k and 1M rows.

    python benchmarks/bench_growth.py [--sizes 10000 100000 1000000] [--width 8]

The catalogs repeat the rows of a 20,000-galaxy simulated survey (OBJID made unique,
TILE/TILE_INDEX kept), so a 1M-row catalog points at the same 20 tiles and disk stays
small; the page cache then serves the cutouts, which isolates relabel's own costs.
Each size runs in a fresh process with a fresh LocalCluster (one worker per core),
so peak memory is that size's alone. A narrow network (width 8) keeps the 1M run
to minutes; what is measured here is planning, memory and overhead, not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import survey_data as sd


def one_size(rows: int, width: int, batch_size: int, workers: int) -> dict:
    import resource

    from distributed import Client, LocalCluster

    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    paths = sd.survey(20_000)
    model = sd.checkpoint(paths, width)
    catalog = sd.grown_catalog(paths.catalog, rows)
    out = sd.DATA / "runs" / f"growth-{rows}"
    with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=50, env={"RELABEL_WORKER_CORES": "1"}) as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        result = run_catalog(catalog, model, out, workflow=paths.workflow, batch_size=batch_size, overwrite=True,
                             progress=False, bias=False, echo=lambda s: None,
                             cluster=ClusterOptions(scheduler=cluster.scheduler_address))
        wall = time.perf_counter() - t0
        worker_mb = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    s = result.summary
    return {"rows": rows, "wall_seconds": wall, "plan_seconds": s["plan_seconds"], "run_seconds": s["run_seconds"],
            "rows_per_second": rows / s["run_seconds"], "shards": s["shards"],
            "client_peak_mb": sd.peak_rss_mb(), "worker_peak_mb": sorted(worker_mb.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_size:
        print(json.dumps(one_size(args.one_size, args.width, args.batch_size, args.workers)))
        return

    sd.checkpoint(sd.survey(20_000), args.width)
    results = []
    for rows in args.sizes:
        sd.grown_catalog(sd.survey(20_000).catalog, rows)
        proc = subprocess.run([sys.executable, __file__, "--one-size", str(rows), "--width", str(args.width),
                               "--batch-size", str(args.batch_size), "--workers", str(args.workers)],
                              capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{rows:>9} rows: plan {r['plan_seconds']:6.2f} s, run {r['run_seconds']:7.1f} s "
              f"({r['rows_per_second']:6.0f} rows/s), client peak {r['client_peak_mb']:5.0f} MB, "
              f"worker peaks {', '.join(f'{m:.0f}' for m in r['worker_peak_mb'])} MB", flush=True)
    sd.RESULTS.mkdir(exist_ok=True)
    (sd.RESULTS / "bench_growth.json").write_text(json.dumps({"machine": sd.machine(), "width": args.width,
                                                               "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
