"""`relabel demo`: the whole job, small, on the embedded simulated survey.

Simulate a survey, train a biased and a de-biased model on its human-like labels,
re-label the survey with the de-biased one on a LocalCluster, and write the report;
then print where everything is and the headline numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from relabel.destination import check_output_dir
from relabel.run.clusters import ClusterOptions

DEMO_N = 10_000
DEMO_EPOCHS = 12
DEMO_WIDTH = 16
#: Below this many galaxies the held-out quarter fills 2^4 x 5 bins too thinly for L: use 2^2 x 4.
SMALL_SURVEY = 4000


def run_demo(directory: str | Path = "relabel-demo", n: int | None = None, epochs: int | None = None,
             workers: int = 2, dashboard_address: str = "127.0.0.1:8787", overwrite: bool = False,
             width: int = DEMO_WIDTH, progress: bool = True, echo=print) -> dict:
    """Run the demo in ``directory``; return the headline numbers (also printed).

    Parameters
    ----------
    directory : str or Path
        Folder for everything the demo writes; its parent must exist, and a non-empty folder needs ``overwrite``.
    n, epochs : int or None
        Galaxies to simulate (default 10000) and the most training epochs per model (default 12).
    workers : int
        LocalCluster worker processes for the re-labelling.
    dashboard_address : str
        Where the Dask dashboard listens.
    progress : bool
        Progress bars on a terminal, count lines in a log; False shows none.

    Raises
    ------
    OutputError
        ``directory`` is a file, non-empty without ``overwrite``, or cannot be created.
    """
    from relabel.evaluate import evaluate_model
    from relabel.report.page import make_report
    from relabel.run.pipeline import run_catalog
    from relabel.simulate.survey import simulate_survey

    root = check_output_dir(directory, overwrite, "demo folder")
    n = n or DEMO_N
    epochs = epochs or DEMO_EPOCHS
    t0 = time.perf_counter()
    step = _Steps(echo, 6)

    step("simulating", f"{n} galaxies with GalSim")
    survey = simulate_survey(root / "survey", n=n, seed=0, progress=progress, overwrite=True)
    if n < SMALL_SURVEY:
        _coarser_bins(survey.workflow)
    models = _train_models(survey, root, epochs, width, progress, step)
    step("evaluating both models", "on the held-out galaxies, against the true classes")
    evaluation = {m: evaluate_model(survey.catalog, p, truth=survey.truth) for m, p in models.items()}
    step("re-labelling the survey", "with the de-biased model on a LocalCluster")
    run = run_catalog(survey.catalog, models["debiased"], root / "relabelled", workflow=survey.workflow,
                      cluster=ClusterOptions(kind="local", workers=workers, dashboard_address=dashboard_address),
                      overwrite=True, progress=progress, echo=_run_echo(echo))
    step("writing the report", "")
    report = make_report(run.out_dir, truth=survey.truth, report_dir=root / "report", overwrite=True)

    headline = _headline(evaluation, report)
    minutes = (time.perf_counter() - t0) / 60
    echo("")
    echo(f"relabel demo finished in {minutes:.1f} min")
    echo(f"  survey:    {survey.root}  (catalog.fits, tiles/, truth.parquet, workflow.yaml)")
    echo(f"  models:    {models['biased']}  {models['debiased']}")
    echo(f"  relabelled: {run.out_dir}  (pandas.read_parquet)")
    echo(f"  report:    {report['html']}")
    for line in headline["lines"]:
        echo("  " + line)
    return headline


def _train_models(survey, root: Path, epochs: int, width: int, progress: bool, step) -> dict:
    """The biased model, then the de-biased one: lambda from the data, the biased model its path's reference.

    Both train on one load of the cutouts (same seed and split)."""
    from relabel.config import load_workflow
    from relabel.train.data import load_labelled_cutouts
    from relabel.train.lambda_path import DEFAULT_PATH, format_path, select_or_train
    from relabel.train.loop import train_model
    from relabel.train.options import resolve_options

    workflow = load_workflow(survey.workflow)
    opts = resolve_options(workflow, "biased")
    data = load_labelled_cutouts(survey.catalog, workflow, opts.seed, opts.val_fraction, None, progress=progress)
    common: dict[str, Any] = dict(epochs=epochs, progress=progress, width=width, overwrite=True, data=data)
    step("training the biased model", f"{epochs} epochs at most")
    biased = train_model(survey.catalog, workflow, "biased", root / "biased.pt", **common).path
    step("training the debiased model", f"{epochs} epochs at most per lambda of the path "
         f"{', '.join(f'{x:g}' for x in DEFAULT_PATH)} (stops at the first rejected)")
    result = select_or_train(survey.catalog, workflow, "debiased", root / "debiased.pt", reference_model=biased,
                             **common)
    if "lambda_selection" in result.meta.metrics:
        step.echo(format_path(result.meta.metrics))
    return {"biased": biased, "debiased": result.path}


def _coarser_bins(workflow_path: Path) -> None:
    import yaml

    data = yaml.safe_load(workflow_path.read_text())
    data["bias"] = {**data.get("bias", {}), "log2_bins_int": 2, "bins_obs": 4}
    workflow_path.write_text(yaml.safe_dump(data, sort_keys=False))


def _run_echo(echo):
    """The run's own lines go to the ``relabel`` logger; echo them too only where no handler shows them
    (the CLI installs one; a plain Python call does not), so each line is printed once."""
    import logging

    return None if logging.getLogger("relabel").handlers else echo


class _Steps:
    def __init__(self, echo, total: int):
        self.echo, self.total, self.i = echo, total, 0

    def __call__(self, what: str, detail: str) -> None:
        self.i += 1
        self.echo(f"[{self.i}/{self.total}] {what}" + (f": {detail}" if detail else ""))


def _headline(evaluation: dict, report: dict) -> dict:
    """L (excess over the null) and true accuracy of the labels and both models, on the held-out galaxies."""
    lines = ["held-out galaxies       excess L    accuracy vs truth (all / worst-resolution quartile)"]
    lab = evaluation["biased"]
    lines.append(f"  human-like labels     {_excess(lab, 'labels'):>8}    {_pct(lab.get('accuracy_truth_labels'))}"
                 " (confident ones only)")
    out: dict[str, object] = {"evaluation": evaluation}
    for method in ("biased", "debiased"):
        ev = evaluation[method]
        quartiles = ev.get("accuracy_truth_by_quartile") or [None]
        lines.append(f"  {method + ' model':<20}  {_excess(ev, 'model'):>8}    {_pct(ev.get('accuracy_truth'))} / "
                     f"{_pct(quartiles[0])}")
    bias = report["labeling_bias"]
    if "L" in bias.get("original", {}) and "L" in bias.get("new", {}):
        lines.append(f"whole survey: L original {bias['original']['L']:.4f} -> relabelled {bias['new']['L']:.4f}")
    lines += _training_lines(report.get("training") or {})
    out["lines"] = lines
    return out


def _training_lines(training: dict) -> list[str]:
    """The de-biased model's lambda and the report's over-correction check, from the report's numbers."""
    if "lambda" not in training:
        return []
    selection = training.get("lambda_selection")
    how = "as given"
    if selection:
        how = ("the smallest of the path, every lambda rejected" if selection.get("kept_rejected") else
               "chosen from the data over the path " + ", ".join(f"{x:g}" for x in selection["lambdas"]))
    biased = {r["observable"]: r["agreement"] for r in
              ((selection or {}).get("biased", {}).get("best_bin_agreement") or {}).get("by_observable", [])}
    kept = [f"{r['observable']} {_pct(r['agreement'])}" + (f" (biased model {_pct(biased[r['observable']])})"
                                                          if biased.get(r["observable"]) is not None else "")
            for r in training.get("agreement", {}).get("by_observable", []) if r["agreement"] is not None]
    check = training["over_correction"]
    return [f"de-biased model: lambda {training['lambda']:g}, {how}",
            "confident labels kept in the best-observed bin (held-out): " + (", ".join(kept) or "-"),
            "over-correction: " + ("WARNING, see the report" if check["warning"] else "none found")]


def _excess(ev: dict, key: str) -> str:
    L, null = ev.get(f"L_{key}"), ev.get(f"null_L_{key}")
    return "-" if L is None or null is None else f"{L - null:.4f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
