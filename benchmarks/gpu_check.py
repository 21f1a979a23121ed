"""GPU check: CUDA predictions agree with CPU float32 ones, and how fast the GPU is.

    python benchmarks/gpu_check.py [--survey DIR] [--model MODEL] [--out DIR]

On a CUDA machine, in under 5 minutes on one H200:
  (a) the same cutouts through the model on the CPU in float32 and on CUDA under
      bf16 and fp16 autocast: largest absolute difference of the probabilities and
      the share of identical labels;
  (b) the bare forward pass in images/s at several batch sizes (inputs already on the GPU,
      and with the host-to-device copy), and `relabel run` with one GPU worker
      (LocalCluster, GPU=1 resource) on the survey;
  (c) the same for the images layout: the survey's stamps pasted into 2048^2 survey images
      (g and r files with their own WCS, every other one RICE-compressed; made at check
      time from the tiles, not carried), cut on the fly: the cut stamps are first checked
      against the tiles' (identical on uncompressed images, within the quantisation on
      compressed ones), then `relabel run` with one GPU worker on them;
  (d) the stamps/s the cutting alone feeds to a network that costs nothing (tiles and images,
      a reading thread against 1 .. cores-1 reading processes; benchmarks/bench_reading.py);
  (e) one table, also written as JSON.
The survey must be made beforehand (it travels with the code; keep it under 50 MB):
    python benchmarks/gpu_check.py --prepare     # 1200 galaxies (g, r), ~40 MB, under benchmarks/data/gpu-survey
The pipeline rate is measured on a catalog repeating those rows (``--pipeline-rows``,
made at check time; the page cache then serves the tiles, as in bench_growth.py).
Without CUDA it says so and runs (a) on the CPU against itself, and (c) on the CPU with a
short run (``--cpu-rows``), to check the script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import survey_data as sd

SURVEY = sd.DATA / "gpu-survey"


def prepare() -> None:
    from relabel.simulate import simulate_survey

    # Two bands of 64x64 float32 are 32 kB a galaxy: 1200 keep the carried folder under 50 MB.
    paths = simulate_survey(SURVEY, n=1200, seed=3, overwrite=True)
    sd.checkpoint(paths, 16)
    size = sum(p.stat().st_size for p in SURVEY.rglob("*") if p.is_file()) / 1e6
    print(f"prepared {SURVEY} ({size:.1f} MB)")


def load_images(survey: Path, n: int):
    from relabel.catalog import open_catalog
    from relabel.config import load_workflow
    from relabel.cutouts import open_cutout_source

    wf = load_workflow(survey / "workflow.yaml")
    cat = open_catalog(survey / "catalog.fits")
    with open_cutout_source(wf) as source:
        return source.read(cat.read(list(wf.cutouts.columns), 0, min(n, cat.nrows))).images


def agreement(model_path: Path, images: np.ndarray, device: str) -> list[dict]:
    import torch

    from relabel.model import load_checkpoint, normalise

    x = torch.from_numpy(normalise(images, load_checkpoint(model_path)[1].normalisation))
    cpu_model, _ = load_checkpoint(model_path, "cpu")
    with torch.inference_mode():
        ref = torch.softmax(cpu_model(x).float(), 1).numpy()
    rows = []
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16} if device == "cuda" else {"fp32 (cpu)": None}
    model, _ = load_checkpoint(model_path, device)
    for name, dtype in dtypes.items():
        with torch.inference_mode():
            if dtype is None:
                p = torch.softmax(model(x).float(), 1).numpy()
            else:
                with torch.autocast("cuda", dtype=dtype):
                    p = torch.softmax(model(x.to(device)).float(), 1).cpu().numpy()
        rows.append({"precision": name, "max_abs_diff": float(np.abs(p - ref).max()),
                     "label_agreement": float((p.argmax(1) == ref.argmax(1)).mean()), "n": len(x)})
    return rows


def forward_rates(model_path: Path, images: np.ndarray, batch_sizes, seconds: float = 5.0) -> list[dict]:
    import torch

    from relabel.model import autocast_for, load_checkpoint, normalise

    model, meta = load_checkpoint(model_path, "cuda")
    host = torch.from_numpy(normalise(images, meta.normalisation))
    out = []
    for bs in batch_sizes:
        reps = -(-bs // len(host))
        batch_host = host.repeat(reps, 1, 1, 1)[:bs].pin_memory()
        batch_dev = batch_host.cuda()
        row = {"batch_size": bs}
        for key, copy in (("on_gpu", False), ("with_copy", True)):
            with torch.inference_mode(), autocast_for(torch.device("cuda")):
                for _ in range(3):
                    model(batch_dev)
                torch.cuda.synchronize()
                done, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    model(batch_host.cuda(non_blocking=True) if copy else batch_dev)
                    done += bs
                torch.cuda.synchronize()
            row[key] = done / (time.perf_counter() - t0)
        out.append(row)
    return out


def image_survey(survey: Path) -> Path:
    """The survey's stamps in survey images (layout "images"), made beside it on first use; its folder."""
    from types import SimpleNamespace

    from bench_pipeline import survey_images

    paths = SimpleNamespace(root=survey, catalog=survey / "catalog.fits", workflow=survey / "workflow.yaml")
    return survey_images(paths)[0].parent


def images_agree(survey: Path, images: Path) -> dict:
    """Stamps cut from the survey images against the same galaxies' tile stamps."""
    from relabel.catalog import open_catalog
    from relabel.config import load_workflow
    from relabel.cutouts import open_cutout_source
    from relabel.simulate.drawing import BAND_NOISE

    got = {}
    for name, root in (("tiles", survey), ("images", images)):
        wf = load_workflow(root / "workflow.yaml")
        cat = open_catalog(root / "catalog.fits")
        with open_cutout_source(wf) as source:
            got[name] = source.read(cat.read_all(list(dict.fromkeys([wf.catalog.ra, wf.catalog.dec, *wf.cutouts.columns]))))
        if name == "images":
            compressed = np.char.endswith(cat.read_all([wf.cutouts.image_column])[wf.cutouts.image_column]
                                          .to_numpy().astype(str), ".fz")
    whole = got["images"].status == "ok"
    diff = np.abs(got["images"].images - got["tiles"].images).reshape(len(whole), -1).max(axis=1)
    sky = np.sqrt(BAND_NOISE["r"][1]) / BAND_NOISE["r"][0]
    return {"rows": int(len(whole)), "whole_stamps": int(whole.sum()),
            "partial_edge": int((got["images"].status == "partial_edge").sum()),
            "max_abs_diff_uncompressed": float(diff[whole & ~compressed].max()),
            "max_abs_diff_compressed_over_sky": float(diff[whole & compressed].max() / sky)}


def pipeline_rate(survey: Path, model_path: Path, out: Path, batch_size: int, rows: int) -> dict:
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import run_catalog

    catalog = sd.grown_catalog(survey / "catalog.fits", rows)
    result = run_catalog(catalog, model_path, out, workflow=survey / "workflow.yaml",
                         batch_size=batch_size, overwrite=True, progress=False, bias=False, echo=lambda s: None,
                         cluster=ClusterOptions(kind="local", workers=1, dashboard_address="127.0.0.1:0"))
    s = result.summary
    return {"rows": s["rows_out"], "seconds": s["run_seconds"], "rate": s["rows_out"] / s["run_seconds"],
            "task_seconds": s["task_seconds"], "devices": sorted({r["device"] for r in result.shard_results}),
            "reading_processes": sorted({r["reading_processes"] for r in result.shard_results})}


def feed_rates(survey: Path, images: Path, model_path: Path) -> dict:
    """Stamps/s the cutting feeds to a network that costs nothing, by reading mode and child processes."""
    import os

    from bench_reading import feed

    cores = os.cpu_count() or 2
    counts = sorted({1, 2, 4, max(1, cores // 2), max(1, cores - 1)})
    layouts = {"tiles": (survey / "catalog.fits", survey / "workflow.yaml"),
               "images": (images / "catalog.fits", images / "workflow.yaml")}
    return feed(model_path, layouts, 1024, counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true", help="make the small survey to carry to the GPU machine")
    parser.add_argument("--survey", type=Path, default=SURVEY)
    parser.add_argument("--model", type=Path, help="checkpoint (default: an untrained one made by --prepare)")
    parser.add_argument("--out", type=Path, default=sd.RESULTS)
    parser.add_argument("--pipeline-rows", type=int, default=200_000)
    parser.add_argument("--cpu-rows", type=int, default=2400, help="rows of the images-layout run without CUDA")
    args = parser.parse_args()
    if args.prepare:
        prepare()
        return
    import torch

    model = args.model or args.survey / "untrained-w16.pt"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"machine": sd.machine(), "device": torch.cuda.get_device_name(0) if device == "cuda" else "no CUDA"}
    images = load_images(args.survey, 1024)
    res["agreement"] = agreement(model, images, device)
    if device == "cuda":
        res["forward"] = forward_rates(model, images, [256, 1024, 4096, 16384])
        res["pipeline"] = pipeline_rate(args.survey, model, sd.DATA / "runs" / "gpu", batch_size=1024,
                                        rows=args.pipeline_rows)
    images = image_survey(args.survey)
    res["images_agree"] = images_agree(args.survey, images)
    res["feed"] = feed_rates(args.survey, images, model)
    res["pipeline_images"] = pipeline_rate(images, model, sd.DATA / "runs" / "gpu-images",
                                           batch_size=1024 if device == "cuda" else 256,
                                           rows=args.pipeline_rows if device == "cuda" else args.cpu_rows)
    print(f"\n{res['device']}; {res['machine']}")
    for row in res["agreement"]:
        print(f"  {row['precision']:>10} vs CPU fp32: max |dp| {row['max_abs_diff']:.2e}, labels agree "
              f"{100 * row['label_agreement']:.2f}% of {row['n']}")
    for row in res.get("forward", []):
        print(f"  forward, batch {row['batch_size']:>6}: {row['on_gpu']:10.0f} img/s on GPU, "
              f"{row['with_copy']:10.0f} img/s with host copy")
    if "pipeline" in res:
        p = res["pipeline"]
        print(f"  relabel run, 1 GPU worker: {p['rate']:.0f} img/s over {p['rows']} rows ({p['devices']})")
    else:
        print("  no CUDA device: forward and tile pipeline rates not measured (this is the CPU self-check)")
    a, p = res["images_agree"], res["pipeline_images"]
    print(f"  images layout: {a['whole_stamps']} whole stamps of {a['rows']} ({a['partial_edge']} partial_edge) "
          f"vs tiles: max |diff| {a['max_abs_diff_uncompressed']:.1e} uncompressed, "
          f"{a['max_abs_diff_compressed_over_sky']:.2f} sky sigma compressed")
    print(f"  relabel run, images layout, 1 worker: {p['rate']:.0f} img/s over {p['rows']} rows ({p['devices']}, "
          f"{p['reading_processes']} reading processes)")
    print("  stamps/s the cutting feeds (no network): " + ", ".join(f"{k} {v:.0f}" for k, v in res["feed"].items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
