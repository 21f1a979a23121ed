"""The catalog-level correction against the acceptance study's models, on every preset.

    python benchmarks/baselines_on_presets.py --study scratch/s8 --surveys scratch/s7 \
        --out benchmarks/results/baselines_presets

For each run of the acceptance study (``bench_train.py``: survey
``SURVEYS/survey_PRESET_20000``, models ``STUDY/models_PRESET_seedS/{biased,debiased_automatic}.pt``,
trained with the workflow's defaults), compares the catalog's labels, the catalog-level
correction along each of the workflow's observables (Hart et al. 2016 use redshift) and
the two models on the same held-out galaxies (:func:`relabel.evaluate.compare_methods`).
No training: it reads the study's checkpoints. Writes ``baselines_presets.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from relabel.config import load_workflow
from relabel.evaluate import compare_methods, correction_row


def compare_run(study: Path, preset: str, seed: int, surveys: Path | None = None) -> dict | None:
    """:func:`compare_methods` of one study run, or None when its checkpoints are not there."""
    survey = (surveys or study) / f"survey_{preset}_20000"
    models = study / f"models_{preset}_seed{seed}"
    paths = {"biased": models / "biased.pt", "de-biased": models / "debiased_automatic.pt"}
    if not all(p.exists() for p in paths.values()):
        return None
    workflow = load_workflow(survey / "workflow.yaml")
    return compare_methods(survey / "catalog.fits", paths, survey / "truth.parquet", workflow=workflow, device="cpu",
                           correction_observables=workflow.observable_columns)


def markdown(results: dict) -> str:
    lines = ["| run | method | excess L | accuracy | acc. Q1 (worst) | Q2 | Q3 | Q4 | largest fraction error | ECE |",
             "|---" * 10 + "|"]
    for run, result in results.items():
        for row in result["rows"]:
            if row["method"] == "biased":
                continue
            spread = (row.get("L_std") ** 2 + row.get("null_L_std") ** 2) ** 0.5 if row.get("L_std") else float("nan")
            quartiles = " | ".join(f"{a:.3f}" for a in row["accuracy_by_quartile"])
            lines.append(f"| {run} | {row['method']} | {row['excess_L']:.4f} ± {spread:.4f} | {row['accuracy']:.3f} "
                         f"| {quartiles} | {row['fraction_error']:.3f} | {row['ece']:.3f} |")
        truth = result.get("truth_L")
        if truth:
            spread = (truth["L_std"] ** 2 + truth["null_L_std"] ** 2) ** 0.5
            lines.append(f"| {run} | true classes | {truth['excess_L']:.4f} ± {spread:.4f} | 1.000 | | | | | 0.000 | |")
    lines += ["", "| run | beats the correction along | worst quartile | excess L | truth's own excess L |",
              "|---|---|---|---|---|"]
    for run, result in results.items():
        rows = {r["method"]: r for r in result["rows"]}
        debiased = rows["de-biased"]
        for column in result["correction_observables"]:
            other = rows[correction_row(result["correction_observables"], column)]
            q1 = debiased["accuracy_by_quartile"][0] > other["accuracy_by_quartile"][0]
            lines.append(f"| {run} | {column} | {'yes' if q1 else 'NO'} ({debiased['accuracy_by_quartile'][0]:.3f} vs "
                         f"{other['accuracy_by_quartile'][0]:.3f}) | "
                         f"{'yes' if debiased['excess_L'] < other['excess_L'] else 'NO'} "
                         f"({debiased['excess_L']:.4f} vs {other['excess_L']:.4f}) | "
                         f"{result['truth_L']['excess_L'] if 'truth_L' in result else float('nan'):.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("scratch/s8"), help="folder of the study's models")
    parser.add_argument("--surveys", type=Path, default=None, help="folder of the surveys (default: --study)")
    parser.add_argument("--presets", nargs="+", default=["default", "sdss", "deep"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "baselines_presets")
    args = parser.parse_args(argv)
    results = {}
    for preset in args.presets:
        for seed in args.seeds:
            result = compare_run(args.study, preset, seed, args.surveys)
            if result is None:
                print(f"{preset} seed {seed}: no checkpoints under {args.study}, skipped", flush=True)
                continue
            results[f"{preset}_seed{seed}"] = result
            print(f"{preset} seed {seed}: compared on {result['n']} held-out galaxies", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "baselines_presets.json").write_text(json.dumps(results, indent=1, default=float))
    (args.out / "baselines_presets.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
