"""Cost of test-time augmentation (the 8 symmetries of the square) against the plain forward pass.

    OMP_NUM_THREADS=1 python benchmarks/bench_tta.py --survey scratch/s7/survey_default_20000 \\
        --model catalog_inputs=scratch/s8/models_default_seed0/debiased_automatic.pt \\
        --model images_only=scratch/s7/models_default_seed0/debiased_automatic.pt \\
        --threads 1 2 --repeats 5 --out benchmarks/results/tta_cost.json

Issue 16's bar: TTA costs at most 8.5x the plain forward time per galaxy. For each
torch thread count and each model (alternated, so that both see the same machine),
:func:`bench_baselines.tta_cost` times ``relabel.run.inference.symmetric_probabilities``
with and without TTA on ``--galaxies`` held-out galaxies of the survey, batch 256, the two modes
alternated ``--repeats`` times. It reports the median CPU-time ratio, the ratio of the
fastest repeats (the code's own cost: load only ever adds time) and the wall-clock
ratio, with the load average before and after, since the ratio moves with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_baselines import tta_cost

from relabel.config import load_workflow
from relabel.model import read_checkpoint
from relabel.train import load_labelled_cutouts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", type=Path, required=True, help="a simulated survey folder (workflow.yaml)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT",
                        help="a checkpoint trained on that survey (repeatable)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--galaxies", type=int, default=2048,
                        help="held-out galaxies per timing (more: less noise from a short plain pass)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "tta_cost.json")
    args = parser.parse_args(argv)
    models = dict(item.split("=", 1) for item in args.model)
    _, first = read_checkpoint(next(iter(models.values())))
    workflow = load_workflow(args.survey / "workflow.yaml")
    data = load_labelled_cutouts(args.survey / "catalog.fits", workflow, first.split["seed"],
                                 first.split["val_fraction"], progress=False)
    report = {"command": " ".join(sys.argv), "platform": platform.platform(), "torch": torch.__version__,
              "cpus": os.cpu_count(), "models": models, "runs": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        load = os.getloadavg()[0]
        run = {name: tta_cost(Path(path), data, repeats=args.repeats, galaxies=args.galaxies)
               for name, path in models.items()}
        run["load_average"] = {"before": load, "after": os.getloadavg()[0]}
        report["runs"][f"{threads}_threads"] = run
        for name in models:
            r = run[name]
            print(f"{threads} thread(s), {name}: TTA {r['ratio']:.2f}x (median CPU), {r['ratio_min']:.2f}x "
                  f"(fastest repeats), {r['ratio_wall']:.2f}x (median wall); load {load:.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
