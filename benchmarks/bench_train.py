"""Acceptance study of de-biased training on a simulated survey, against the true classes.

Run from the repository root (minutes per model on two CPU cores; be kind to shared machines):

    nice python benchmarks/bench_train.py --survey scratch/survey24k --simulate 24000

Simulates the survey when the folder does not exist yet, reads its cutouts once,
trains one biased model and one de-biased model per lambda on the same
training rows, evaluates each on the held-out rows with ``relabel.evaluate``
(L of the labels, of the models and of the truth with their null L; accuracy
against the labels and the truth per resolution quartile; class fractions),
checks the acceptance criteria of issue 4 and writes, under ``--out``
(default benchmarks/results):

- ``bench_train.json``: every number, every model's training history;
- ``bench_train.md``: the tables of docs/training.md;

and the figures of docs/training.md to ``--figures`` (default docs/img):
``training_tradeoff.png`` (excess L and true accuracy against lambda) and
``training_quartiles.png`` (true accuracy and spiral fraction per resolution quartile).

Checkpoints go to ``--models`` (default scratch/bench_train_models, git-ignored);
with ``--reuse`` an existing checkpoint there is evaluated instead of trained again
(to finish an interrupted study, or to redo the tables).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from relabel.config import load_workflow
from relabel.evaluate import evaluate_model
from relabel.model import read_checkpoint
from relabel.train import load_labelled_cutouts, train_model

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", type=Path, default=Path("scratch/survey24k"))
    parser.add_argument("--simulate", type=int, default=24000, help="galaxies to simulate when --survey is missing")
    parser.add_argument("--survey-seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--models", type=Path, default=Path("scratch/bench_train_models"))
    parser.add_argument("--figures", type=Path, default=HERE.parent / "docs" / "img")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 3.0, 10.0, 30.0, 100.0])
    parser.add_argument("--main-lambda", type=float, default=10.0, help="the lambda the criteria are checked at")
    parser.add_argument("--val-fraction", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints instead of retraining")
    parser.add_argument("--timing-repeats", type=int, default=2,
                        help="one-epoch runs of each method, alternated, for the time-per-epoch criterion")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if not args.survey.exists():
        from relabel.simulate import simulate_survey

        t0 = time.perf_counter()
        simulate_survey(args.survey, n=args.simulate, seed=args.survey_seed, workers=args.threads)
        print(f"simulated {args.simulate} galaxies in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    catalog, truth = args.survey / "catalog.fits", args.survey / "truth.parquet"
    workflow = load_workflow(args.survey / "workflow.yaml")
    models_dir = args.models
    models_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    data = None
    runs = [("biased", 0.0)] + [("debiased", lam) for lam in args.lambdas]
    results = {}
    for method, lam in runs:
        name = "biased" if method == "biased" else f"debiased_lambda{lam:g}"
        path = models_dir / f"{name}.pt"
        if not (args.reuse and path.exists()):
            if data is None:
                data = load_labelled_cutouts(catalog, workflow, args.seed, args.val_fraction)
                print(f"read {len(data)} cutouts in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            train_model(catalog, workflow, method, path, epochs=args.epochs, batch_size=args.batch_size, lam=lam,
                        seed=args.seed, val_fraction=args.val_fraction, device="auto", width=args.width, data=data,
                        overwrite=True)  # --reuse off: the benchmark retrains on purpose
        _, meta = read_checkpoint(path)
        evaluation = evaluate_model(catalog, path, truth=truth)
        results[name] = {"method": method, "lambda": lam, "evaluation": evaluation, "training": meta.metrics,
                         "split": meta.split}
        print(f"{name}: excess L {evaluation['excess_L_model']:.4f}, true accuracy {evaluation['accuracy_truth']:.4f}",
              file=sys.stderr)

    main_name = f"debiased_lambda{args.main_lambda:g}"
    if data is None and args.timing_repeats:
        data = load_labelled_cutouts(catalog, workflow, args.seed, args.val_fraction)
    timing = epoch_timing(catalog, workflow, data, args, models_dir) if args.timing_repeats else None
    criteria = acceptance(results["biased"], results[main_name], timing)
    report = {
        "command": " ".join(["python", "benchmarks/bench_train.py", *(argv if argv is not None else sys.argv[1:])]),
        "survey": str(args.survey), "n_catalog": int(results["biased"]["split"]["n_train"]
                                                      + results["biased"]["split"]["n_val"]),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                    "device": results["biased"]["training"]["device"]},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "criteria": criteria,
        "timing": timing,
        "models": results,
        "seconds_total": time.perf_counter() - t0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_train.json").write_text(json.dumps(report, indent=1))
    markdown = tables(results, criteria, main_name)
    markdown += leaf_residuals(catalog, truth, workflow, models_dir, ["biased", main_name], args.seed,
                               args.val_fraction)
    (args.out / "bench_train.md").write_text(markdown)
    args.figures.mkdir(parents=True, exist_ok=True)
    figures(results, args.figures)
    print(markdown)
    return 0


def epoch_timing(catalog, workflow, data, args, models_dir) -> dict:
    """Seconds per training epoch and per step of both methods, one-epoch runs alternated back to back.

    The epochs of the full runs are timed too, but on a machine shared with other work
    a single epoch can take ten times longer; alternating short runs gives both methods
    the same conditions.
    """
    runs = {"biased": [], "debiased": []}
    for _ in range(args.timing_repeats):
        for method in runs:
            result = train_model(catalog, workflow, method, models_dir / f"timing_{method}.pt", epochs=1,
                                 batch_size=args.batch_size, lam=args.main_lambda, seed=args.seed,
                                 val_fraction=args.val_fraction, width=args.width, data=data, progress=False,
                                 overwrite=True)  # repeated timing runs rewrite one scratch checkpoint
            runs[method].append((result.history[0]["seconds"], result.meta.metrics["seconds_per_step"],
                                 result.meta.split["n_train"]))
    out = {}
    for method, values in runs.items():
        out[method] = {"seconds_per_epoch": float(np.median([v[0] for v in values])),
                       "seconds_per_step": float(np.median([v[1] for v in values])),
                       "objects_per_epoch": values[0][2], "runs": values}
    return out


def median_epoch_seconds(training: dict) -> float:
    """Median over a run's epochs: on a shared machine one epoch can take ten times longer while others compute."""
    return float(np.median([h["seconds"] for h in training["history"]]))


def acceptance(biased: dict, debiased: dict, timing: dict | None = None) -> list[dict]:
    """Issue 4's criteria, each with the measured numbers and whether it holds."""
    b, d = biased["evaluation"], debiased["evaluation"]
    labels_excess = b["excess_L_labels"]
    true_q = b["true_fraction_by_quartile"]
    frac_diff = max(abs(p - t) for name in d["fraction_by_quartile"]
                    for p, t in zip(d["fraction_by_quartile"][name], true_q[name]))
    both = all(min(d["fraction_by_quartile"][name]) > 0 for name in d["fraction_by_quartile"])
    if timing is not None:
        t_b, t_d = timing["biased"]["seconds_per_epoch"], timing["debiased"]["seconds_per_epoch"]
        s_b, s_d = timing["biased"]["seconds_per_step"], timing["debiased"]["seconds_per_step"]
    else:
        t_b, t_d = median_epoch_seconds(biased["training"]), median_epoch_seconds(debiased["training"])
        s_b, s_d = biased["training"]["seconds_per_step"], debiased["training"]["seconds_per_step"]
    rows = [
        ("bias transfer: biased model's excess L >= 0.3 x labels' excess L",
         f"{b['excess_L_model']:.4f} vs 0.3 x {labels_excess:.4f} = {0.3 * labels_excess:.4f}",
         b["excess_L_model"] >= 0.3 * labels_excess),
        ("de-biasing: de-biased excess L <= 0.35 x biased model's",
         f"{d['excess_L_model']:.4f} vs {0.35 * b['excess_L_model']:.4f}",
         d["excess_L_model"] <= 0.35 * b["excess_L_model"]),
        ("de-biasing: de-biased excess L <= 0.2 x labels'",
         f"{d['excess_L_model']:.4f} vs {0.2 * labels_excess:.4f}", d["excess_L_model"] <= 0.2 * labels_excess),
        ("true accuracy, lowest-resolution quartile: >= biased + 5 points",
         f"{d['accuracy_truth_by_quartile'][0]:.4f} vs {b['accuracy_truth_by_quartile'][0]:.4f} + 0.05",
         d["accuracy_truth_by_quartile"][0] >= b["accuracy_truth_by_quartile"][0] + 0.05),
        ("true accuracy overall: >= biased",
         f"{d['accuracy_truth']:.4f} vs {b['accuracy_truth']:.4f}", d["accuracy_truth"] >= b["accuracy_truth"]),
        ("true accuracy, highest-resolution quartile: >= biased - 1 point",
         f"{d['accuracy_truth_by_quartile'][3]:.4f} vs {b['accuracy_truth_by_quartile'][3]:.4f} - 0.01",
         d["accuracy_truth_by_quartile"][3] >= b["accuracy_truth_by_quartile"][3] - 0.01),
        ("both classes predicted in every resolution quartile",
         "smallest share per quartile: " + ", ".join(f"{k} {min(v):.3f}" for k, v in d["fraction_by_quartile"].items()),
         both),
        ("predicted class fractions per quartile within 0.05 of the true ones",
         f"largest difference {frac_diff:.4f}", frac_diff <= 0.05),
        ("time per epoch: de-biased <= 1.5 x biased",
         f"{t_d:.1f} s vs {t_b:.1f} s (ratio {t_d / t_b:.2f}); per step of equal batch size {s_d * 1e3:.0f} ms vs "
         f"{s_b * 1e3:.0f} ms (ratio {s_d / s_b:.2f})", t_d <= 1.5 * t_b),
    ]
    return [{"criterion": c, "measured": m, "passed": bool(p)} for c, m, p in rows]


def tables(results: dict, criteria: list[dict], main_name: str) -> str:
    first = next(iter(results.values()))["evaluation"]
    lines = ["### Acceptance criteria (de-biased model: " + main_name + ")", "",
             "| criterion | measured | passed |", "|---|---|---|"]
    lines += [f"| {c['criterion']} | {c['measured']} | {'yes' if c['passed'] else 'NO'} |" for c in criteria]
    lines += ["", f"### L on the {first['n']} held-out objects ({first['bins']} bins, bootstrap mean; "
              "excess = L - null L)", "",
              "| label set | objects | L | null L | excess |", "|---|---|---|---|---|"]

    def row(label, e, key, n):
        return (f"| {label} | {n} | {e['L_' + key]:.4f} ± {e['L_' + key + '_std']:.4f} | {e['null_L_' + key]:.4f} | "
                f"{e['excess_L_' + key]:.4f} |")

    lines.append(row("catalog labels (thresholds, uncertain dropped)", first, "labels", first["n_confident"]))
    lines.append(row("true classes, same confident subset", first, "truth_confident", first["n_confident"]))
    lines.append(row("true classes, all objects", first, "truth", first["n"]))
    for name, r in results.items():
        e = r["evaluation"]
        lines.append(row(f"{name} (argmax)", e, "model", e["n"]))
        lines.append(row(f"{name} (probabilities)", e, "model_soft", e["n"]))
    lines += ["", "### Accuracy against the true classes, per RESOLUTION quartile (lowest first)", "",
              "| model | lambda | overall | Q1 | Q2 | Q3 | Q4 | vs labels | best epoch | median s / epoch |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lab = first["accuracy_truth_labels_by_quartile"]
    lines.append(f"| catalog labels (confident subset) | - | {first['accuracy_truth_labels']:.4f} | "
                 + " | ".join(f"{v:.4f}" for v in lab) + " | - | - | - |")
    for name, r in results.items():
        e, t = r["evaluation"], r["training"]
        lines.append(f"| {name} | {r['lambda']:g} | {e['accuracy_truth']:.4f} | "
                     + " | ".join(f"{v:.4f}" for v in e["accuracy_truth_by_quartile"])
                     + f" | {e['accuracy_labels']:.4f} | {t['best_epoch']} | "
                     f"{median_epoch_seconds(t):.1f} |")
    lines += ["", "### Spiral fraction per RESOLUTION quartile (lowest first)", "",
              "| label set | Q1 | Q2 | Q3 | Q4 |", "|---|---|---|---|---|"]
    lines.append("| true classes | " + " | ".join(f"{v:.4f}" for v in first["true_fraction_by_quartile"]["spiral"]) + " |")
    lines.append("| catalog labels: spiral / no confident label | " + " | ".join(
        f"{s:.3f} / {u:.3f}" for s, u in zip(first["label_fraction_by_quartile"]["spiral"],
                                             first["label_fraction_by_quartile"]["no confident label"])) + " |")
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in r["evaluation"]["fraction_by_quartile"]["spiral"])
                     + " |")
    return "\n".join(lines) + "\n"


def leaf_residuals(catalog, truth, workflow, models_dir, names, seed, val_fraction) -> str:
    """Where the models' remaining bias sits: predicted minus true spiral fraction per intrinsic leaf and bin."""
    import pandas as pd

    from relabel.bias import bin_fractions
    from relabel.cutouts import open_cutout_source
    from relabel.run.inference import predict_rows
    from relabel.model import load_checkpoint
    from relabel.train import read_table, validation_mask

    table, _ = read_table(catalog, workflow)
    table = table[validation_mask(table[workflow.catalog.id].to_numpy(), seed, val_fraction)].reset_index(drop=True)
    true_class = pd.read_parquet(truth).set_index("OBJID")["TRUE_CLASS"]
    spiral = (table[workflow.catalog.id].map(true_class) == "spiral").to_numpy().astype(int)
    ends = [o.best for o in workflow.observables]
    intrinsic, observables = table[workflow.intrinsic], table[workflow.observable_columns]
    depth, bins = workflow.bias["log2_bins_int"], workflow.bias["bins_obs"]
    true_f = bin_fractions(intrinsic, observables, spiral, 2, depth, bins, ends).fractions[0, :, :, 1]
    residual = {}
    for name in names:
        model, meta = load_checkpoint(models_dir / f"{name}.pt")
        with open_cutout_source(workflow) as source:
            probs = predict_rows(table, source, model, meta).probabilities
        spiral_k = meta.classes.index("spiral")
        predicted = (probs.argmax(axis=1) == spiral_k).astype(int)
        residual[name] = bin_fractions(intrinsic, observables, predicted, 2, depth, bins, ends).fractions[0, :, :, 1] - true_f
    lines = ["", f"### Predicted minus true spiral fraction per intrinsic leaf, {workflow.observable_columns[0]} bins "
             "(held-out, argmax; worst bin first)", "",
             "| leaf | true spiral fraction | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for leaf in range(true_f.shape[0]):
        cells = [" ".join(f"{v:+.2f}" for v in residual[name][leaf][::1 if ends[0] == "high" else -1]) for name in names]
        lines.append(f"| {leaf} | {true_f[leaf].mean():.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figures(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    biased = results["biased"]["evaluation"]
    deb = [(r["lambda"], r["evaluation"]) for r in results.values() if r["method"] == "debiased"]
    deb.sort(key=lambda item: item[0])
    lams = [lam for lam, _ in deb]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(lams, [e["excess_L_model"] for _, e in deb], "o-", label="de-biased (argmax)")
    ax1.plot(lams, [e["excess_L_model_soft"] for _, e in deb], "s--", label="de-biased (probabilities)")
    ax1.axhline(biased["excess_L_model"], color="C3", label="biased model")
    ax1.axhline(biased["excess_L_labels"], color="k", ls=":", label="catalog labels")
    ax1.set_xscale("log")
    ax1.set_xlabel("lambda")
    ax1.set_ylabel("excess L (L - null L), held-out")
    ax1.legend(fontsize=8)
    ax2.plot(lams, [e["accuracy_truth"] for _, e in deb], "o-", label="de-biased, all")
    ax2.plot(lams, [e["accuracy_truth_by_quartile"][0] for _, e in deb], "s--", label="de-biased, lowest-res quartile")
    ax2.axhline(biased["accuracy_truth"], color="C3", label="biased, all")
    ax2.axhline(biased["accuracy_truth_by_quartile"][0], color="C3", ls="--", label="biased, lowest-res quartile")
    ax2.set_xscale("log")
    ax2.set_xlabel("lambda")
    ax2.set_ylabel("accuracy against the true classes")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "training_tradeoff.png", dpi=110)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    q = np.arange(1, 5)
    ax2.plot(q, biased["true_fraction_by_quartile"]["spiral"], "k-", lw=3, alpha=0.4, label="true classes")
    ax2.plot(q, biased["label_fraction_by_quartile"]["spiral"], "k:", label="catalog labels (confident spiral)")
    for i, (name, r) in enumerate(results.items()):
        e = r["evaluation"]
        ax1.plot(q, e["accuracy_truth_by_quartile"], "o-", color=f"C{i}", label=name)
        ax2.plot(q, e["fraction_by_quartile"]["spiral"], "o-", color=f"C{i}", label=name)
    ax1.plot(q, biased["accuracy_truth_labels_by_quartile"], "k:", label="catalog labels (confident subset)")
    ax1.set_xlabel("RESOLUTION quartile (1 = lowest)")
    ax1.set_ylabel("accuracy against the true classes")
    ax2.set_xlabel("RESOLUTION quartile (1 = lowest)")
    ax2.set_ylabel("spiral fraction")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "training_quartiles.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
