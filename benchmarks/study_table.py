"""The acceptance study's two tables (runs, criteria) from bench_train's JSON files.

    python benchmarks/study_table.py benchmarks/results/full_default_seed0.json ...

Prints markdown: one row per run (lambda path, the figures the criteria use), one
row per criterion (pass / FAIL per run), as docs/training.md shows them, and, for
results that carry them, the excess L values with their Monte-Carlo errors and
repetition counts (``bias.mc_error``, docs/bias.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _path_cell(selection: dict) -> str:
    return ", ".join(f"{row['lambda']:g}: {'yes' if row['accepted'] else 'no'}" for row in selection["path"])


def run_row(name: str, d: dict) -> str:
    """One run's line: lambda, excess L, true accuracy overall and per quartile, fractions, confident best half."""
    biased = d["models"]["biased"]["evaluation"]
    model = d["models"][d["checked_model"]]
    debiased, training = model["evaluation"], model["training"]
    edges = debiased["true_fraction_by_quartile"]
    target = debiased["classes"][-1]
    difference = max(abs(a - b) for a, b in zip(debiased["fraction_by_quartile"][target], edges[target]))
    half = d["confident_best_half"]
    lam = d["checked_lambda"]
    return (f"| {name} | {lam:g} ({_path_cell(d['lambda_selection'])}) "
            f"| {debiased['excess_L_labels']:.4f} / {biased['excess_L_model']:.4f} / {debiased['excess_L_model']:.4f} "
            f"| {biased['accuracy_truth']:.4f} / {debiased['accuracy_truth']:.4f} "
            f"| {biased['accuracy_truth_by_quartile'][0]:.4f} / {debiased['accuracy_truth_by_quartile'][0]:.4f} "
            f"| {biased['accuracy_truth_by_quartile'][-1]:.4f} / {debiased['accuracy_truth_by_quartile'][-1]:.4f} "
            f"| {difference:.4f} "
            f"| {half['labels']:.4f} / {half['biased']['accuracy']:.4f} / {half[d['checked_model']]['accuracy']:.4f} "
            f"({half['n']}) | {training['settled']}, {training['best_epoch']} | {d['passed']} / {d['of']} |")


def _excess(e: dict, name: str) -> str:
    mc, reps = e.get(f"excess_L_{name}_mc_error"), e.get(f"L_{name}_repetitions")
    if mc is None:
        return f"{e[f'excess_L_{name}']:.4f}"
    return f"{e[f'excess_L_{name}']:.4f} +- {mc:.4f} ({reps[0]} + {reps[1]})"


def excess_row(name: str, d: dict) -> str | None:
    """Labels', the 0.2x bar, the de-biased model's and the truth's excess L with their Monte-Carlo errors."""
    e = d["models"][d["checked_model"]]["evaluation"]
    if e.get("excess_L_model_mc_error") is None:
        return None
    return (f"| {name} | {_excess(e, 'labels')} | {0.2 * e['excess_L_labels']:.4f} | {_excess(e, 'model')} "
            f"| {_excess(e, 'truth')} |")


def main(paths: list[str]) -> None:
    runs = {Path(p).stem.removeprefix("full_"): json.loads(Path(p).read_text()) for p in paths}
    print("| run | lambda chosen (path: accepted?) | excess L: labels / biased / de-biased "
          "| true acc. overall: biased / de-biased | worst quartile: biased / de-biased "
          "| best quartile: biased / de-biased | largest fraction difference "
          "| confident best half: labels / biased / de-biased (n) | de-biased settled, best epoch | passed |")
    print("|---" * 10 + "|")
    for name, d in runs.items():
        print(run_row(name, d))
    print()
    print("| criterion | " + " | ".join(runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    first = next(iter(runs.values()))
    for k, criterion in enumerate(first["criteria"]):
        cells = ["pass" if d["criteria"][k]["passed"] else "**FAIL**" for d in runs.values()]
        print(f"| {criterion['criterion']} | " + " | ".join(cells) + " |")
    rows = [row for row in (excess_row(name, d) for name, d in runs.items()) if row]
    if rows:
        print()
        print("| run | excess L of the labels +- Monte-Carlo error (bootstrap + null repetitions) | 0.2 x labels' "
              "| de-biased model | true classes |")
        print("|---" * 5 + "|")
        print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
