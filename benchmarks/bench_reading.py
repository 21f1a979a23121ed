"""Reading beside the forward pass: a thread of the worker against child processes.

    python benchmarks/bench_reading.py [--n 20000] [--repeats 2] [--skip-runs]

On the same simulated survey (tiles, the survey-image layout with half its images
RICE-compressed, one FITS file per galaxy; benchmarks/bench_pipeline.py makes them):

  stall    a single-threaded forward pass alone, then beside reading without pause in
           a thread of the same process (what relabel did before) and through a child
           process (relabel.cutouts.reader_process): images/s of the forward pass.
  feed     stamps/s that the reading delivers to a consumer that does everything a
           GPU worker's host thread does except the network (normalise into the batch,
           tensor, a token forward pass): the rate a GPU would be fed, per reading mode
           and number of child processes (1 .. cores).
  runs     `relabel run`, 1 and 2 workers, cutting in a thread against child processes,
           per layout, ratios within each repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import bench_pipeline as bp
import numpy as np
import survey_data as sd


def _layouts(paths) -> dict:
    images = bp.survey_images(paths)
    files = bp.per_object_files(paths)
    return {"tiles": (paths.catalog, paths.workflow), "images": images, "files": files}


def _read_forever(wf, batches, mode: str, stop: threading.Event, batch_size: int) -> None:
    from relabel.cutouts.reader_process import open_reader

    while not stop.is_set():
        for image, parts in batches:
            with open_reader(wf, image=image, batch_size=batch_size, where=mode, processes=1) as source:
                for part in parts:
                    if stop.is_set():
                        return
                    source.read(part)


def stall(model, layouts, batch_size: int, seconds: float = 4.0) -> dict:
    """Forward images/s alone and beside continuous reading, per layout and mode."""
    import torch

    from relabel.model import load_checkpoint

    torch.set_num_threads(1)
    net, meta = load_checkpoint(model)
    x = torch.randn(batch_size, len(meta.bands), meta.size, meta.size).contiguous(memory_format=torch.channels_last)

    def rate() -> float:
        with torch.inference_mode():
            net(x)
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                net(x)
                done += batch_size
        return done / (time.perf_counter() - t0)

    res = {"alone": rate()}
    for name, (catalog, workflow) in layouts.items():
        wf, batches = bp.shard_batches(catalog, workflow, batch_size)
        for mode in ("thread", "process"):
            stop = threading.Event()
            reader = threading.Thread(target=_read_forever, args=(wf, batches, mode, stop, batch_size))
            reader.start()
            time.sleep(1.0)  # the child process starts and opens its first files
            res[f"{name}_{mode}"] = rate()
            stop.set()
            reader.join()
    return res


def feed(model, layouts, batch_size: int, process_counts) -> dict:
    """Stamps/s through predict_rows with a network that costs nothing, per layout and reading mode."""
    import pandas as pd
    import torch

    from relabel.cutouts.reader_process import open_reader
    from relabel.model import load_checkpoint
    from relabel.run.inference import predict_rows

    torch.set_num_threads(1)
    _, meta = load_checkpoint(model)
    # A stand-in for a network on a GPU: it costs the host next to nothing.
    token = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(len(meta.bands), meta.n_classes))
    from relabel.cutouts import reader_process

    reader_process.prestart(max(process_counts))  # children start once per worker, before its first shard
    res = {}
    for name, (catalog, workflow) in layouts.items():
        wf, batches = bp.shard_batches(catalog, workflow, batch_size)
        rows = sum(len(part) for _, parts in batches for part in parts)
        for mode, count in [("thread", 1)] + [("process", k) for k in process_counts]:
            t0 = time.perf_counter()
            for image, parts in batches:
                shard = pd.concat(parts)
                with open_reader(wf, meta.size, len(meta.bands), image, batch_size, mode, count,
                                 meta.normalisation) as source:
                    predict_rows(shard, source, token, meta, batch_size)
            res[f"{name}_{mode}{count if mode == 'process' else ''}"] = rows / (time.perf_counter() - t0)
    return res


def runs(paths, model, layouts, batch_size: int) -> dict:
    """`relabel run` per layout, mode and worker count, and the bare forward limit beside them."""
    from relabel.catalog import open_catalog
    from relabel.config import load_workflow
    from relabel.cutouts import open_cutout_source

    wf = load_workflow(paths.workflow)
    with open_cutout_source(wf) as source:
        sample = source.read(open_catalog(paths.catalog).read(list(wf.cutouts.columns), 0, batch_size)).images
    res = {"limit": sd.forward_rate(model, sample, batch_size, threads=os.cpu_count() or 2)}
    edge = ("ok", "partial_edge")
    for workers in (1, 2):
        for name, (catalog, workflow) in layouts.items():
            for mode in ("thread", "process"):  # side by side, so that a slow spell hits both
                res[f"{name}_{workers}w_{mode}"] = bp.relabel_rate(
                    catalog, workflow, model, sd.DATA / "runs" / f"reading-{name}", batch_size, workers,
                    env={"DASK_RELABEL__CUTTING": mode}, statuses=edge)["rate"]
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-runs", action="store_true")
    args = parser.parse_args()
    paths = sd.survey(args.n)
    model = sd.checkpoint(paths, args.width)
    layouts = _layouts(paths)
    reps = []
    for _ in range(args.repeats):
        rep = {"load": os.getloadavg()[0],
               "stall": stall(model, layouts, args.batch_size),
               "feed": feed(model, layouts, args.batch_size, range(1, (os.cpu_count() or 2) + 1))}
        if not args.skip_runs:
            rep["runs"] = runs(paths, model, layouts, args.batch_size)
        reps.append(rep)
        print(json.dumps({k: ({kk: round(vv) for kk, vv in v.items()} if isinstance(v, dict) else v)
                          for k, v in rep.items()}), flush=True)
    res = {"machine": sd.machine(), "n": args.n, "batch_size": args.batch_size, "width": args.width,
           "repetitions": reps}
    med = lambda part, key: float(np.median([r[part][key] for r in reps]))  # noqa: E731
    print(f"\n{args.n} galaxies, batch {args.batch_size}, width {args.width}; {res['machine']}; medians")
    print(f"forward pass, 1 thread, alone: {med('stall', 'alone'):.0f} images/s; beside continuous reading:")
    for name in layouts:
        print(f"  {name:7} thread {med('stall', f'{name}_thread'):6.0f}   "
              f"child process {med('stall', f'{name}_process'):6.0f}")
    print("stamps/s fed to a network that costs nothing:")
    for name in layouts:
        keys = [k for k in reps[0]["feed"] if k.startswith(name + "_")]
        print(f"  {name:7} " + "   ".join(f"{k.split('_', 1)[1]} {med('feed', k):6.0f}" for k in keys))
    if not args.skip_runs:
        ratio = lambda a, b: float(np.median([r["runs"][a] / r["runs"][b] for r in reps]))  # noqa: E731
        print(f"  forward limit (1 process, all cores, in-memory tensors): {med('runs', 'limit'):.0f} images/s")
        for workers in (1, 2):
            for name in layouts:
                t, p = f"{name}_{workers}w_thread", f"{name}_{workers}w_process"
                print(f"  relabel run {workers}w {name:7} thread {med('runs', t):6.0f}  process {med('runs', p):6.0f}"
                      f"  process/thread {ratio(p, t):.2f}  vs tiles: thread {ratio(t, f'tiles_{workers}w_thread'):.2f}"
                      f" process {ratio(p, f'tiles_{workers}w_process'):.2f}  vs limit: thread {ratio(t, 'limit'):.2f}"
                      f" process {ratio(p, 'limit'):.2f}")
    sd.RESULTS.mkdir(exist_ok=True)
    (sd.RESULTS / "bench_reading.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
