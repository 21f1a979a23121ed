"""Acceptance study of de-biased training on a simulated survey, against the true classes.

Run from the repository root (minutes per model on two CPU cores; be kind to shared machines):

    nice python benchmarks/bench_train.py --survey scratch/survey24k --simulate 24000
    nice python benchmarks/bench_train.py --preset sdss --simulate 6000 --lambdas 10 --name bench_train_sdss_seed0
    nice python benchmarks/bench_train.py --preset deep --simulate 6000 --lambda-mode automatic

Simulates the survey when the folder does not exist yet (with ``--preset``: that
survey kind of ``relabel simulate --preset``, in its own layout, e.g. sdss's
one FITS file per galaxy), reads its cutouts once, trains one biased model and
de-biased ones on the same training rows, evaluates each on the held-out rows
with ``relabel.evaluate`` (L of the labels, of the models and of the truth with
their null L; accuracy against the labels and the truth per quartile of the
workflow's first observable, worst first; class fractions) and checks the
acceptance criteria of issue 15, item 3 (see :func:`acceptance`).

``--lambda-mode fixed`` (default) trains one de-biased model per ``--lambdas``
and checks the criteria at ``--main-lambda``; ``--lambda-mode automatic`` lets
:func:`relabel.train.lambda_path.select_lambda` choose lambda from the path
``--lambdas`` (default 1 3 10) without the truth, and checks the model it picked.

Writes, under ``--out`` (default benchmarks/results), ``<name>.json`` (every
number, every model's training history, the lambda path's table) and
``<name>.md`` (the tables of docs/training.md), ``--name`` defaulting to
bench_train; the figures go to ``--figures`` (default docs/img):
``training_tradeoff.png`` (excess L and true accuracy against lambda, fixed mode
with several lambdas) and ``training_quartiles.png`` (true accuracy and spiral
fraction per quartile).

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
FIXED_LAMBDAS = [1.0, 3.0, 10.0, 30.0, 100.0]
"""The lambdas of ``--lambda-mode fixed`` when ``--lambdas`` is not given."""


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; ``--survey`` and ``--lambdas`` get their defaults from ``--preset`` and ``--lambda-mode``."""
    from relabel.simulate import PRESETS
    from relabel.train.lambda_path import DEFAULT_PATH

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", type=Path, default=None,
                        help="survey folder (default scratch/survey24k, or scratch/survey_<preset>_<n> with --preset)")
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help="survey kind to simulate when --survey is missing (relabel simulate --preset)")
    parser.add_argument("--simulate", type=int, default=24000, help="galaxies to simulate when --survey is missing")
    parser.add_argument("--survey-seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="bench_train", help="stem of the json and md files written to --out")
    parser.add_argument("--models", type=Path, default=Path("scratch/bench_train_models"))
    parser.add_argument("--figures", type=Path, default=HERE.parent / "docs" / "img")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lambda-mode", choices=["fixed", "automatic"], default="fixed",
                        help="fixed: one model per --lambdas; automatic: select_lambda chooses from the path --lambdas")
    parser.add_argument("--lambdas", type=float, nargs="+", default=None,
                        help=f"default {' '.join(f'{x:g}' for x in FIXED_LAMBDAS)} (fixed), "
                             f"{' '.join(f'{x:g}' for x in DEFAULT_PATH)} (automatic)")
    parser.add_argument("--main-lambda", type=float, default=10.0,
                        help="the lambda the criteria are checked at (fixed mode)")
    parser.add_argument("--val-fraction", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--catalog-inputs", choices=["none", "intrinsic"], default=None,
                        help="the network also takes the intrinsic columns (default: the workflow's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="evaluate existing checkpoints instead of retraining")
    parser.add_argument("--timing-repeats", type=int, default=2,
                        help="one-epoch runs of each method, alternated, for issue 4's time-per-epoch row (0: none)")
    args = parser.parse_args(argv)
    if args.survey is None:
        default = "survey24k" if args.preset is None else f"survey_{args.preset}_{args.simulate}"
        args.survey = Path("scratch") / default
    if args.lambdas is None:
        args.lambdas = list(FIXED_LAMBDAS if args.lambda_mode == "fixed" else DEFAULT_PATH)
    if args.lambda_mode == "fixed" and args.main_lambda not in args.lambdas:
        parser.error(f"--main-lambda {args.main_lambda:g} is not among --lambdas")
    return args


def main(argv=None) -> int:
    """Simulate if needed, train, evaluate, check the criteria, write json, markdown and figures."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    prepare_survey(args.survey, args.preset, args.simulate, args.survey_seed, args.threads)
    catalog, truth = args.survey / "catalog.fits", args.survey / "truth.parquet"
    workflow = load_workflow(args.survey / "workflow.yaml")
    args.models.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    loader = CutoutLoader(catalog, workflow, args.seed, args.val_fraction)
    trained = train_fixed(catalog, workflow, loader, args) if args.lambda_mode == "fixed" else \
        train_automatic(catalog, workflow, loader, args)
    results = {name: evaluated(path, catalog, truth, lam) for name, (path, lam) in trained.items()}
    main_name = "debiased_automatic" if args.lambda_mode == "automatic" else f"debiased_lambda{args.main_lambda:g}"
    checked = ["biased", main_name]
    predictions = {name: held_out_predictions(catalog, workflow, trained[name][0], args.seed, args.val_fraction)
                   for name in checked}
    agreement = confident_best_half(predictions, workflow, truth)
    timing = epoch_timing(catalog, workflow, loader.get(), args, args.models) if args.timing_repeats else None
    criteria = acceptance(results["biased"], results[main_name], agreement, timing)
    report = run_record(args, argv, results, main_name, criteria, agreement, timing, time.perf_counter() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    markdown = tables(results, criteria, main_name, report)
    markdown += leaf_residuals(predictions, workflow, truth)
    (args.out / f"{args.name}.md").write_text(markdown)
    args.figures.mkdir(parents=True, exist_ok=True)
    figures(results, args.figures)
    print(markdown)
    return 0


def prepare_survey(survey: Path, preset: str | None, n: int, seed: int, workers: int) -> None:
    """Simulate ``survey`` with ``preset`` when it does not exist; refuse an existing one of another preset.

    The simulator names its workflow ``simulated-survey`` (default preset) or
    ``simulated-survey-<preset>``, which is how an existing folder is checked.
    """
    from relabel.simulate import simulate_survey

    if survey.exists():
        name = load_workflow(survey / "workflow.yaml").name
        expected = "simulated-survey" if preset == "default" else f"simulated-survey-{preset}"
        if preset is not None and name != expected:
            raise SystemExit(f"{survey} holds survey {name!r}, not preset {preset!r}: choose another --survey")
        return
    t0 = time.perf_counter()
    simulate_survey(survey, n=n, seed=seed, workers=workers, preset=preset)
    print(f"simulated {n} galaxies ({preset or 'default'} preset) in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)


class CutoutLoader:
    """The training and validation cutouts, read once and only when a model is actually trained."""

    def __init__(self, catalog: Path, workflow, seed: int, val_fraction: float):
        self.catalog, self.workflow, self.seed, self.val_fraction = catalog, workflow, seed, val_fraction
        self.data = None

    def get(self):
        """The :class:`relabel.train.LabelledCutouts` (read on the first call)."""
        if self.data is None:
            t0 = time.perf_counter()
            self.data = load_labelled_cutouts(self.catalog, self.workflow, self.seed, self.val_fraction)
            print(f"read {len(self.data)} cutouts in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return self.data


def train_fixed(catalog: Path, workflow, loader: CutoutLoader, args) -> dict[str, tuple[Path, float]]:
    """Train (or, with ``--reuse``, find) the biased model and one de-biased model per lambda.

    Returns
    -------
    dict
        Model name -> (checkpoint path, lambda), the biased model first.
    """
    out = {"biased": (_train_one(catalog, workflow, loader, args, "biased", 0.0), 0.0)}
    for lam in args.lambdas:
        out[f"debiased_lambda{lam:g}"] = (_train_one(catalog, workflow, loader, args, "debiased", lam), lam)
    return out


def _train_one(catalog: Path, workflow, loader: CutoutLoader, args, method: str, lam: float) -> Path:
    """One model's checkpoint under ``--models``, trained unless ``--reuse`` finds it."""
    path = args.models / ("biased.pt" if method == "biased" else f"debiased_lambda{lam:g}.pt")
    if not (args.reuse and path.exists()):
        train_model(catalog, workflow, method, path, epochs=args.epochs, batch_size=args.batch_size, lam=lam,
                    seed=args.seed, val_fraction=args.val_fraction, device="auto", width=args.width,
                    # --reuse off: the benchmark retrains on purpose
                    data=loader.get(), overwrite=True, catalog_inputs=args.catalog_inputs)
    return path


def train_automatic(catalog: Path, workflow, loader: CutoutLoader, args) -> dict[str, tuple[Path, float]]:
    """The biased model and the de-biased model :func:`select_lambda` picks from the path ``--lambdas``.

    The biased model, trained first for the criteria, is also ``select_lambda``'s
    reference (as ``relabel demo`` passes its own); only the chosen de-biased
    checkpoint is kept. The chosen lambda is printed and recorded.

    Returns
    -------
    dict
        ``{"biased": (path, 0), "debiased_automatic": (path, chosen lambda)}``.
    """
    from relabel.train.lambda_path import select_lambda

    out = {"biased": (_train_one(catalog, workflow, loader, args, "biased", 0.0), 0.0)}
    path = args.models / "debiased_automatic.pt"
    if not (args.reuse and path.exists()):
        select_lambda(catalog, workflow, path, path=args.lambdas, epochs=args.epochs, batch_size=args.batch_size,
                      seed=args.seed, val_fraction=args.val_fraction, device="auto", width=args.width,
                      overwrite=True, reference_model=out["biased"][0], data=loader.get(),
                      catalog_inputs=args.catalog_inputs)
    chosen = read_checkpoint(path)[1].metrics["chosen_lambda"]
    print(f"select_lambda picked lambda {chosen:g} from the path {' '.join(f'{x:g}' for x in args.lambdas)}",
          file=sys.stderr)
    out["debiased_automatic"] = (path, float(chosen))
    return out


def evaluated(path: Path, catalog: Path, truth: Path, lam: float) -> dict:
    """One model's held-out evaluation against labels and truth, with its training record."""
    _, meta = read_checkpoint(path)
    evaluation = evaluate_model(catalog, path, truth=truth)
    print(f"{path.stem} (lambda {lam:g}): excess L {evaluation['excess_L_model']:.4f}, "
          f"true accuracy {evaluation['accuracy_truth']:.4f}", file=sys.stderr)
    return {"method": meta.method, "lambda": lam, "evaluation": evaluation, "training": meta.metrics,
            "split": meta.split}


def held_out_predictions(catalog: Path, workflow, model_path: Path, seed: int, val_fraction: float):
    """The held-out rows and one model's argmax class name for each.

    Returns
    -------
    table : pandas.DataFrame
        The held-out catalog rows (as :func:`relabel.train.read_table` reads them).
    predicted : numpy.ndarray of str
        The model's class per row.
    """
    from relabel.cutouts import open_cutout_source
    from relabel.model import load_checkpoint
    from relabel.run.inference import predict_rows
    from relabel.train import read_table, validation_mask

    table, _ = read_table(catalog, workflow)
    table = table[validation_mask(table[workflow.catalog.id].to_numpy(), seed, val_fraction)].reset_index(drop=True)
    model, meta = load_checkpoint(model_path)
    with open_cutout_source(workflow) as source:
        probs = predict_rows(table, source, model, meta).probabilities
    return table, np.asarray(meta.classes)[probs.argmax(axis=1)]


def confident_best_half(predictions: dict, workflow, truth: Path) -> dict:
    """Agreement with the truth on the confidently labelled held-out galaxies of the best-observed half.

    The best-observed half is quartiles 3-4 of the workflow's first observable (the
    quartiles of the evaluation); there the labels are mostly right, and a de-biased
    model should change hardly any of them (issue 15).

    Returns
    -------
    dict
        ``observable``, ``n`` (galaxies), ``labels`` (share of their confident labels
        that are true) and, per model name, the share of its predictions that are true
        and ``flips`` (how many confident labels it changed, and how many of those were wrong).
    """
    import pandas as pd

    from relabel.catalog.labels import table_labels
    from relabel.quartiles import observable_quartiles

    table = next(iter(predictions.values()))[0]
    codes, names = table_labels(table, workflow.labels)
    quartile, _ = observable_quartiles(table[workflow.observable_columns[0]].to_numpy(), workflow.observables[0].best)
    chosen = (quartile >= 2) & (codes >= 0)
    true = table[workflow.catalog.id].map(pd.read_parquet(truth).set_index("OBJID")["TRUE_CLASS"]).to_numpy()[chosen]
    labels = np.asarray(names)[codes[chosen]]
    out = {"observable": workflow.observable_columns[0], "n": int(chosen.sum()),
           "labels": float((labels == true).mean())}
    for name, (_, predicted) in predictions.items():
        mine = predicted[chosen]
        flipped = mine != labels
        out[name] = {"accuracy": float((mine == true).mean()), "flips": int(flipped.sum()),
                     "wrong_flips": int((flipped & (mine != true)).sum())}
    return out


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


def acceptance(biased: dict, debiased: dict, agreement: dict, timing: dict | None = None) -> list[dict]:
    """Issue 15 item 3's criteria (and issue 4's time per epoch when timed), each with its numbers and verdict.

    Quartiles are those of the workflow's first observable, worst first.
    """
    b, d = biased["evaluation"], debiased["evaluation"]
    labels_excess, q = b["excess_L_labels"], b["quartile_observable"]
    true_q = b["true_fraction_by_quartile"]
    frac_diff = max(abs(p - t) for name in d["fraction_by_quartile"]
                    for p, t in zip(d["fraction_by_quartile"][name], true_q[name]))
    a_lab, a_deb = agreement["labels"], agreement[_debiased_key(agreement)]["accuracy"]
    rows = [
        ("bias transfer: biased model's excess L >= 0.3 x labels'",
         f"{b['excess_L_model']:.4f} vs 0.3 x {labels_excess:.4f} = {0.3 * labels_excess:.4f}",
         b["excess_L_model"] >= 0.3 * labels_excess),
        ("de-biased excess L <= 0.35 x biased model's",
         f"{d['excess_L_model']:.4f} vs {0.35 * b['excess_L_model']:.4f}",
         d["excess_L_model"] <= 0.35 * b["excess_L_model"]),
        ("de-biased excess L <= 0.2 x labels'",
         f"{d['excess_L_model']:.4f} vs {0.2 * labels_excess:.4f}", d["excess_L_model"] <= 0.2 * labels_excess),
        (f"true accuracy, worst {q} quartile: >= biased + 5 points",
         f"{d['accuracy_truth_by_quartile'][0]:.4f} vs {b['accuracy_truth_by_quartile'][0]:.4f} + 0.05",
         d["accuracy_truth_by_quartile"][0] >= b["accuracy_truth_by_quartile"][0] + 0.05),
        ("true accuracy overall: >= biased",
         f"{d['accuracy_truth']:.4f} vs {b['accuracy_truth']:.4f}", d["accuracy_truth"] >= b["accuracy_truth"]),
        (f"true accuracy, best {q} quartile: >= biased - 1 point",
         f"{d['accuracy_truth_by_quartile'][3]:.4f} vs {b['accuracy_truth_by_quartile'][3]:.4f} - 0.01",
         d["accuracy_truth_by_quartile"][3] >= b["accuracy_truth_by_quartile"][3] - 0.01),
        (f"predicted class fractions per {q} quartile within 0.05 of the truth",
         f"largest difference {frac_diff:.4f}", frac_diff <= 0.05),
        (f"confident labels, best {q} half: de-biased agrees with the truth >= labels - 0.5 point",
         f"{a_deb:.4f} vs {a_lab:.4f} - 0.005 ({agreement['n']} galaxies)", a_deb >= a_lab - 0.005),
    ]
    if timing is not None:
        t_b, t_d = timing["biased"]["seconds_per_epoch"], timing["debiased"]["seconds_per_epoch"]
        rows.append(("issue 4: time per epoch, de-biased <= 1.5 x biased",
                     f"{t_d:.1f} s vs {t_b:.1f} s (ratio {t_d / t_b:.2f})", t_d <= 1.5 * t_b))
    return [{"criterion": c, "measured": m, "passed": bool(p)} for c, m, p in rows]


def _debiased_key(agreement: dict) -> str:
    """The de-biased model's entry in :func:`confident_best_half`'s result."""
    return next(k for k in agreement if k.startswith("debiased"))


def run_record(args, argv, results: dict, main_name: str, criteria: list[dict], agreement: dict,
               timing: dict | None, seconds: float) -> dict:
    """Everything the json file holds: command, survey, machine, settings, criteria, models."""
    biased = results["biased"]
    chosen = results[main_name]["training"].get("lambda_selection")
    return {
        "command": " ".join(["python", "benchmarks/bench_train.py", *(argv if argv is not None else sys.argv[1:])]),
        "survey": str(args.survey), "preset": args.preset or load_workflow(args.survey / "workflow.yaml").name,
        "n_catalog": int(results[main_name]["split"]["n_train"] + results[main_name]["split"]["n_val"]),
        "quartile_observable": biased["evaluation"]["quartile_observable"],
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                    "device": biased["training"]["device"]},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "checked_model": main_name, "checked_lambda": results[main_name]["lambda"],
        "lambda_selection": chosen,
        "criteria": criteria, "passed": sum(c["passed"] for c in criteria), "of": len(criteria),
        "confident_best_half": agreement,
        "timing": timing,
        "models": results,
        "seconds_total": seconds,
    }


def tables(results: dict, criteria: list[dict], main_name: str, report: dict) -> str:
    """The markdown of one run: summary, criteria, L, accuracy and fractions per quartile, confident best half."""
    first = next(iter(results.values()))["evaluation"]
    q = first["quartile_observable"]
    settings = report["settings"]
    lines = [f"Survey {report['survey']} ({report['preset']}, {report['n_catalog']} galaxies), seed "
             f"{settings['seed']}, {settings['epochs']} epochs, width {settings['width']};"
             f" quartiles of {q} (the workflow's first observable), worst first.", ""]
    lines += lambda_path_table(report["lambda_selection"], results[main_name]["lambda"])
    lines += [f"### Acceptance criteria ({main_name}, lambda {results[main_name]['lambda']:g}): "
              f"{report['passed']} of {report['of']} pass", "",
              "| criterion | measured | passed |", "|---|---|---|"]
    lines += [f"| {c['criterion']} | {c['measured']} | {'yes' if c['passed'] else 'NO'} |" for c in criteria]
    lines += L_table(results, first)
    lines += ["", f"### Accuracy against the true classes, per {q} quartile (worst first)", "",
              "| model | lambda | overall | Q1 | Q2 | Q3 | Q4 | vs labels | best epoch | settled | median s / epoch |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    lab = first["accuracy_truth_labels_by_quartile"]
    lines.append(f"| catalog labels (confident subset) | - | {first['accuracy_truth_labels']:.4f} | "
                 + " | ".join(f"{v:.4f}" for v in lab) + " | - | - | - | - |")
    for name, r in results.items():
        e, t = r["evaluation"], r["training"]
        lines.append(f"| {name} | {r['lambda']:g} | {e['accuracy_truth']:.4f} | "
                     + " | ".join(f"{v:.4f}" for v in e["accuracy_truth_by_quartile"])
                     + f" | {e['accuracy_labels']:.4f} | {t['best_epoch']} | {t.get('settled', '-')} | "
                     f"{median_epoch_seconds(t):.1f} |")
    lines += fraction_table(results, first)
    lines += agreement_table(report["confident_best_half"])
    return "\n".join(lines) + "\n"


def lambda_path_table(selection: dict | None, chosen: float) -> list[str]:
    """The lambda path select_lambda walked (automatic mode), as markdown lines; none in fixed mode."""
    if not selection:
        return []
    ref = selection["biased"]
    lines = [f"### lambda chosen without truth: {chosen:g}", "",
             f"Rule: {selection['rule']} (tolerance {selection['tolerance']:g}, "
             f"{selection['n_reference_objects']} best-observed validation objects; biased model: accuracy vs labels "
             f"{ref['ref_accuracy']:.4f}, soft L {ref['val_L_soft']:.4f}).", "",
             "| lambda | best-observed accuracy vs labels | validation soft L | settled | accepted |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['lambda']:g} | {r['ref_accuracy']:.4f} | {r['val_L_soft']:.4f} | {r['settled']} | "
              f"{'yes' if r['accepted'] else 'no'} |" for r in selection["path"]]
    return lines + [""]


def L_table(results: dict, first: dict) -> list[str]:
    """L, null L and excess of the labels, the truth and every model on the held-out objects."""
    lines = ["", f"### L on the {first['n']} held-out objects ({first['bins']} bins, bootstrap mean; "
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
    return lines


def fraction_table(results: dict, first: dict) -> list[str]:
    """Spiral fraction per quartile: truth, catalog labels, every model."""
    lines = ["", f"### Spiral fraction per {first['quartile_observable']} quartile (worst first)", "",
             "| label set | Q1 | Q2 | Q3 | Q4 |", "|---|---|---|---|---|"]
    true = first["true_fraction_by_quartile"]["spiral"]
    lines.append("| true classes | " + " | ".join(f"{v:.4f}" for v in true) + " |")
    lines.append("| catalog labels: spiral / no confident label | " + " | ".join(
        f"{s:.3f} / {u:.3f}" for s, u in zip(first["label_fraction_by_quartile"]["spiral"],
                                             first["label_fraction_by_quartile"]["no confident label"])) + " |")
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in r["evaluation"]["fraction_by_quartile"]["spiral"])
                     + " |")
    return lines


def agreement_table(agreement: dict) -> list[str]:
    """The confident labels of the best-observed half against the truth, and each model's changes to them."""
    lines = ["", f"### Confidently labelled held-out galaxies of the best-observed {agreement['observable']} half "
             f"({agreement['n']})", "",
             "| label set | agreement with the truth | confident labels changed | of which wrongly |",
             "|---|---|---|---|",
             f"| catalog labels | {agreement['labels']:.4f} | - | - |"]
    lines += [f"| {name} | {v['accuracy']:.4f} | {v['flips']} | {v['wrong_flips']} |"
              for name, v in agreement.items() if isinstance(v, dict)]
    return lines


def leaf_residuals(predictions: dict, workflow, truth: Path) -> str:
    """Where the models' remaining bias sits: predicted minus true spiral fraction per intrinsic leaf and bin."""
    import pandas as pd

    from relabel.bias import bin_fractions

    table = next(iter(predictions.values()))[0]
    true_class = pd.read_parquet(truth).set_index("OBJID")["TRUE_CLASS"]
    spiral = (table[workflow.catalog.id].map(true_class) == "spiral").to_numpy().astype(int)
    ends = [o.best for o in workflow.observables]
    intrinsic, observables = table[workflow.intrinsic], table[workflow.observable_columns]
    depth, bins = workflow.bias["log2_bins_int"], workflow.bias["bins_obs"]

    def spiral_fraction(values):
        return bin_fractions(intrinsic, observables, values, 2, depth, bins, ends).fractions[0, :, :, 1]

    true_f = spiral_fraction(spiral)
    residual = {name: spiral_fraction((predicted == "spiral").astype(int)) - true_f
                for name, (_, predicted) in predictions.items()}
    names = list(predictions)
    lines = ["", f"### Predicted minus true spiral fraction per intrinsic leaf, {workflow.observable_columns[0]} bins "
             "(held-out, argmax; worst bin first)", "",
             "| leaf | true spiral fraction | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for leaf in range(true_f.shape[0]):
        step = 1 if ends[0] == "high" else -1
        cells = [" ".join(f"{v:+.2f}" for v in residual[name][leaf][::step]) for name in names]
        lines.append(f"| {leaf} | {true_f[leaf].mean():.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figures(results: dict, out: Path) -> None:
    """Write training_tradeoff.png and training_quartiles.png to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    tradeoff_figure(results, out / "training_tradeoff.png")
    quartile_figure(results, out / "training_quartiles.png")


def tradeoff_figure(results: dict, path: Path) -> None:
    """Excess L and true accuracy of the de-biased models against lambda, the biased model as lines."""
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
    ax2.plot(lams, [e["accuracy_truth_by_quartile"][0] for _, e in deb], "s--", label="de-biased, worst quartile")
    ax2.axhline(biased["accuracy_truth"], color="C3", label="biased, all")
    ax2.axhline(biased["accuracy_truth_by_quartile"][0], color="C3", ls="--", label="biased, worst quartile")
    ax2.set_xscale("log")
    ax2.set_xlabel("lambda")
    ax2.set_ylabel("accuracy against the true classes")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quartile_figure(results: dict, path: Path) -> None:
    """True accuracy and spiral fraction per quartile of the first observable: truth, labels, every model."""
    import matplotlib.pyplot as plt

    biased = results["biased"]["evaluation"]
    quartile_label = f"{biased['quartile_observable']} quartile (1 = worst observed)"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    q = np.arange(1, 5)
    ax2.plot(q, biased["true_fraction_by_quartile"]["spiral"], "k-", lw=3, alpha=0.4, label="true classes")
    ax2.plot(q, biased["label_fraction_by_quartile"]["spiral"], "k:", label="catalog labels (confident spiral)")
    for i, (name, r) in enumerate(results.items()):
        e = r["evaluation"]
        ax1.plot(q, e["accuracy_truth_by_quartile"], "o-", color=f"C{i}", label=name)
        ax2.plot(q, e["fraction_by_quartile"]["spiral"], "o-", color=f"C{i}", label=name)
    ax1.plot(q, biased["accuracy_truth_labels_by_quartile"], "k:", label="catalog labels (confident subset)")
    ax1.set_xlabel(quartile_label)
    ax1.set_ylabel("accuracy against the true classes")
    ax2.set_xlabel(quartile_label)
    ax2.set_ylabel("spiral fraction")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
