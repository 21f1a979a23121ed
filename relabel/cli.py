"""The `relabel` command: parses arguments and calls the library; nothing else happens here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from relabel import __version__
from relabel.errors import RelabelError


def main(argv: list[str] | None = None) -> int:
    """The ``relabel`` command: parse ``argv``, run the chosen subcommand, turn errors into messages.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 for an unexpected error (a bug), 2 for a user
        error (a :class:`relabel.errors.RelabelError` or an ``OSError``, shown once without a
        traceback unless ``--debug``), 130 after Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    _setup_logging(args.verbose - args.quiet)
    try:
        return int(args.func(args) or 0)
    except RelabelError as exc:
        if args.debug:
            raise
        return _error(exc)
    except OSError as exc:
        # Disk full, permission denied, a path through a file: the user's environment, not a bug.
        if args.debug:
            raise
        return _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except KeyboardInterrupt:
        print("relabel: interrupted; files already written are complete (rerun with --resume to go on)",
              file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"relabel: error: unexpected {type(exc).__name__}: {exc} (this is a bug in relabel; "
              "rerun with --debug for the traceback and report it)", file=sys.stderr)
        return 1


def _error(message) -> int:
    print(f"relabel: error: {message}", file=sys.stderr)
    return 2


#: Name of the handlers main() installs, so that a second call replaces them rather than adding more.
_CLI_HANDLER = "relabel-cli"


def _setup_logging(level: int) -> None:
    """The ``relabel`` logger: progress lines on stdout, warnings on stderr; -q warnings only, -v/-vv more detail."""
    import logging

    logger = logging.getLogger("relabel")
    for h in [h for h in logger.handlers if h.get_name() == _CLI_HANDLER]:
        logger.removeHandler(h)  # main() called again in one process (tests): streams may have changed
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler, fmt in ((out, "%(message)s"), (err, "relabel: %(levelname)s: %(message)s")):
        handler.setFormatter(logging.Formatter(fmt))
        handler.set_name(_CLI_HANDLER)
        logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(level, logging.ERROR if level < 0 else logging.DEBUG))
    _show_warnings_through(logger)


def _show_warnings_through(logger) -> None:
    """Warnings as one ``relabel: WARNING:`` line each on stderr.

    Not ``logging.captureWarnings``: libraries give its ``py.warnings`` logger a NullHandler,
    which silently swallowed every warning (a -9999 redshift used as a real value, a model
    that had not settled) in the command's output.
    """
    import warnings

    from relabel.errors import RelabelWarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, RelabelWarning):
            logger.warning(str(message))
        else:  # another library's: say whose, and where
            logger.warning(f"{category.__name__}: {message} ({filename}:{lineno})")

    warnings.showwarning = show


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand, each bound to the function it calls (``func``)."""
    parser = argparse.ArgumentParser(
        prog="relabel",
        description="Measure and remove the labeling bias of galaxy morphology catalogs.",
    )
    parser.add_argument("--version", action="version", version=f"relabel {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="fewer log lines (-q: warnings only)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_simulate(sub)
    _add_bias(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_debias_catalog(sub)
    _add_run(sub)
    _add_report(sub)
    _add_demo(sub)
    return parser


def _command(sub, name: str, help: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    # SUPPRESS keeps a top-level `relabel --debug CMD` from being reset by the subcommand's default.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks for errors")
    p.set_defaults(func=func)
    return p


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None, default=_json_default))


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- simulate ---------------------------------------------------------------------------

def _add_simulate(sub) -> None:
    p = _command(sub, "simulate", "simulate a survey with GalSim: catalog, cutouts, truth, workflow", _simulate)
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--n", type=int, default=2000, help="number of galaxies (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the population, labels and images (default 0)")
    p.add_argument("--preset", choices=["default", "sdss", "deep"], default="default",
                   help="survey kind: default (g+r 64x64 tiles, 0.396\"/px), sdss (r only, 72x72 "
                        "per-galaxy files, seeing 1.0-1.8\"), deep (g, r, i, 0.2\"/px, seeing 0.6-1.0\", "
                        "fainter galaxies); see docs/simulator.md")
    p.add_argument("--layout", choices=["tiles", "files", "images"], default=None,
                   help="cutouts packed in tile cubes, one FITS file per galaxy, or galaxies drawn into "
                        "2048^2 survey images with a WCS (stamps cut at run time; default preset only); "
                        "default: the preset's (tiles, sdss: files)")
    p.add_argument("--size", type=int, default=None, help="cutout size in pixels (default: the preset's, 64 / 72 / 80)")
    p.add_argument("--tile-size", type=int, default=1000, help="cutouts per tile file (default 1000)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty OUT_DIR")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars; a terminal gets bars, a log file a count line every 30 s")


def _simulate(args) -> int:
    from relabel.destination import check_output_dir
    from relabel.simulate.survey import simulate_survey

    check_output_dir(args.out_dir, args.overwrite, "survey folder")
    paths = simulate_survey(args.out_dir, n=args.n, seed=args.seed, layout=args.layout, size=args.size,
                            tile_size=args.tile_size, workers=args.workers, overwrite=args.overwrite,
                            progress=not args.no_progress, preset=args.preset)
    print(f"catalog:  {paths.catalog}\ntruth:    {paths.truth}\nworkflow: {paths.workflow}")
    return 0


# --- bias -------------------------------------------------------------------------------

def _add_bias(sub) -> None:
    p = _command(sub, "bias", "the labeling-bias metric L of a label column (FITS or Parquet)", _bias)
    p.add_argument("table", type=Path, metavar="TABLE",
                   help="FITS table, Parquet file, or a relabel run's output folder (then L of the original and "
                        "the new labels, mapped by the workflow the run recorded unless --config)")
    p.add_argument("--config", type=Path, help="workflow file with the column mapping (options below override it)")
    p.add_argument("--labels", nargs="+", metavar="COL", help="label probability columns")
    p.add_argument("--thresholds", nargs="+", type=float, metavar="T", help="one threshold per column, or one for all")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="class names (of --labels, or --label-column's values)")
    p.add_argument("--label-column", metavar="COL", help="a categorical label column instead of probabilities")
    p.add_argument("--intrinsic", nargs="+", metavar="COL", help="intrinsic-property columns")
    p.add_argument("--observables", nargs="+", metavar="COL", help="observable columns")
    p.add_argument("--best", nargs="+", choices=["low", "high"],
                   help="best-quality end, one per observable or one for all")
    p.add_argument("--log2-bins-int", type=int, metavar="L", help="depth of the intrinsic k-d tree (2^L bins)")
    p.add_argument("--bins-obs", type=int, metavar="B", help="observable bins per intrinsic bin")
    p.add_argument("--n-boot", type=int, metavar="R", help="bootstrap repetitions")
    p.add_argument("--n-per-bin", type=int, metavar="N", help="subsample N x 2^L x B objects per repetition")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the subsamples, bootstrap and null shuffles")
    p.add_argument("--null", type=int, metavar="R", help="shuffles for the null L")
    p.add_argument("--mc-error", type=float, metavar="E",
                   help="add repetitions until the Monte-Carlo error of the excess L is under E "
                        "(default: the workflow's bias.mc_error, 0.0005; 0: exactly --n-boot and --null)")
    p.add_argument("--compare", choices=[">=", ">"],
                   help="a vote fraction passes its threshold when P >= t (default, or the workflow's "
                        "labels.compare) or P > t (Galaxy Zoo 1's flags)")
    p.add_argument("--keep-uncertain", action="store_true", default=None,
                   help="objects passing no threshold form an extra class instead of being dropped")
    p.add_argument("--hdu", help="FITS extension (number or name)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


BIAS_OPTIONS = ("labels", "thresholds", "classes", "label_column", "intrinsic", "observables", "best", "log2_bins_int",
                "bins_obs", "n_boot", "n_per_bin", "seed", "null", "mc_error", "keep_uncertain", "hdu", "compare")


def _bias(args) -> int:
    from relabel.bias.table import (
        LABEL_OPTIONS,
        bias_of_run,
        bias_of_table,
        format_result,
        format_run_result,
        is_run_folder,
    )

    overrides = {k: getattr(args, k) for k in BIAS_OPTIONS}
    if is_run_folder(args.table) and all(overrides[k] is None for k in LABEL_OPTIONS):
        results = bias_of_run(args.table, args.config, overrides)
        if args.json:
            _print_json({k: r.to_dict() for k, r in results.items()})
        else:
            print(format_run_result(results))
        return 0
    result = bias_of_table(args.table, args.config, overrides)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(format_result(result))
    return 0


# --- train / evaluate -------------------------------------------------------------------

def _add_train(sub) -> None:
    p = _command(sub, "train", "train a biased or de-biased classifier on a catalog's labels", _train)
    p.add_argument("catalog", type=Path, metavar="CATALOG")
    p.add_argument("--config", type=Path, required=True, help="workflow file")
    p.add_argument("--method", choices=["biased", "debiased"], required=True,
                   help="biased: cross-entropy on the labels; debiased: plus lambda x the soft labeling bias")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--epochs", type=int, help="at most this many epochs (default: workflow train.epochs)")
    p.add_argument("--batch-size", type=int, help="cutouts per optimisation step (default: workflow train.batch_size)")
    p.add_argument("--lambda", dest="lam", type=_lambda_value,
                   help="weight of the bias term (debiased), or 'automatic': chosen from the data over a short "
                        "path (see docs/training.md); default the workflow's train.lambda, itself automatic")
    p.add_argument("--reference-model", type=Path, metavar="BIASED_MODEL",
                   help="automatic lambda: a biased checkpoint of this catalog and split, the path's reference "
                        "(default: the path trains one)")
    p.add_argument("--seed", type=int, help="seed of the split, initial weights and batch order (default: workflow)")
    p.add_argument("--val-fraction", type=float, help="share of objects held out for validation")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--width", type=int, default=16, help="network width (16: ~0.3 M parameters)")
    p.add_argument("--log2-bins-int", type=int, help="intrinsic bins of the bias term (default: workflow bias)")
    p.add_argument("--bins-obs", type=int, help="observable bins of the bias term (default: workflow bias)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (the per-epoch validation lines are still printed)")
    p.add_argument("--augment", choices=["none", "degrade"], default=None,
                   help="degrade: also train on well-observed galaxies made to look worse-observed, keeping their "
                        "labels (default: workflow train.augment)")
    p.add_argument("--catalog-inputs", choices=["none", "intrinsic"], default=None,
                   help="intrinsic: the network also takes each galaxy's intrinsic columns, the catalog giving the "
                        "prior where the image shows little (default: workflow train.catalog_inputs)")


def _lambda_value(text: str):
    """A float lambda, or ``automatic``."""
    return "automatic" if text == "automatic" else float(text)


def _train(args) -> int:
    from relabel.destination import check_output_file
    from relabel.train.lambda_path import select_or_train

    check_output_file(args.out, overwrite=args.overwrite, what="checkpoint")
    common = dict(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, val_fraction=args.val_fraction,
                  device=args.device, progress=not args.no_progress, log2_bins_int=args.log2_bins_int,
                  bins_obs=args.bins_obs, width=args.width, augment=args.augment,
                  catalog_inputs=args.catalog_inputs)
    if args.reference_model is not None:
        common["reference_model"] = args.reference_model
    result = select_or_train(args.catalog, args.config, args.method, args.out, lam=args.lam,
                             overwrite=args.overwrite, **common)
    if "lambda_selection" in result.meta.metrics:
        from relabel.train.lambda_path import format_path

        print(format_path(result.meta.metrics))
    print(f"checkpoint: {result.path} (epoch {result.best_epoch} kept; {result.stop_reason}; "
          f"{result.seconds_per_epoch:.1f} s/epoch)")
    return 0


def _add_evaluate(sub) -> None:
    p = _command(sub, "evaluate", "L and accuracy of a model on its held-out rows", _evaluate)
    p.add_argument("catalog", type=Path, metavar="CATALOG")
    p.add_argument("--model", type=Path, required=True, help="checkpoint from `relabel train`")
    p.add_argument("--truth", type=Path, help="table with the id column and TRUE_CLASS (the simulator's truth.parquet)")
    p.add_argument("--config", type=Path, help="workflow file (default: the mapping recorded in the checkpoint)")
    p.add_argument("--all", dest="all_rows", action="store_true", help="every row, not only the held-out ones")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=MODEL", type=_named_checkpoint,
                   help="another checkpoint of the same split, compared on the same held-out galaxies with --model "
                        "(named after its file), the catalog's labels and the catalog-level correction (repeatable; "
                        "needs --truth; --json output is what `relabel report --comparison` reads)")
    p.add_argument("--correct-along", action="append", default=None, metavar="OBSERVABLE",
                   help="with --compare: the observable the catalog-level correction maps along (default the "
                        "workflow's first; repeatable, one row each; Hart et al. 2016 use redshift)")
    p.add_argument("--figure", type=Path, metavar="PNG",
                   help="draw the comparison figure (accuracy and class fractions per quartile, reliability "
                        "diagrams, excess L and ECE) to this file (needs --truth)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --figure file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _named_checkpoint(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` as (name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL (e.g. debiased=model.pt), got {text!r}")
    return name.strip(), Path(path)


def _evaluate(args) -> int:
    from relabel.evaluate import evaluate_model, format_evaluation

    if args.compare or args.figure:
        return _evaluate_comparison(args)
    if args.correct_along:
        from relabel.errors import ConfigError

        raise ConfigError("--correct-along belongs to a comparison: add --compare NAME=MODEL or --figure")
    result = evaluate_model(args.catalog, args.model, truth=args.truth, all_rows=args.all_rows,
                            workflow=args.config, device=args.device)
    if args.json:
        _print_json(result)
    else:
        print(format_evaluation(result))
    return 0


def _evaluate_comparison(args) -> int:
    from relabel.destination import check_output_file
    from relabel.errors import ConfigError
    from relabel.evaluate import compare_methods, format_comparison
    from relabel.optional import require

    if args.truth is None:
        raise ConfigError("--compare and --figure need --truth: the comparison is against the true classes")
    if args.all_rows:
        raise ConfigError("--compare measures every method on the models' held-out rows; drop --all")
    models = {args.model.stem: args.model}
    for name, path in args.compare:
        if name in models:
            raise ConfigError(f"two models named {name!r} in the comparison: give each --compare a new NAME")
        models[name] = path
    if args.figure:  # checked before the models run, so that a bad path fails at once
        require("matplotlib", "report", "the comparison figure")
        check_output_file(args.figure, overwrite=args.overwrite, what="figure")
    result = compare_methods(args.catalog, models, args.truth, workflow=args.config, device=args.device,
                             correction_observables=args.correct_along)
    if args.figure:
        from relabel.report.comparison import plot_comparison

        result["figure"] = str(args.figure)
        result["caption"] = plot_comparison(result, args.figure)
    if args.json:
        _print_json(result)
    else:
        print(format_comparison(result) + (f"\nfigure: {args.figure}" if args.figure else ""))
    return 0


def _add_debias_catalog(sub) -> None:
    p = _command(sub, "debias-catalog", "the field's catalog-level correction of vote fractions (Hart et al. 2016 "
                 "style), as a baseline; Parquet out", _debias_catalog)
    p.add_argument("catalog", type=Path, metavar="CATALOG")
    p.add_argument("--config", type=Path, required=True, help="workflow file")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    p.add_argument("--observable", metavar="COL", help="observable to correct along (default: the workflow's first)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _debias_catalog(args) -> int:
    from relabel.baselines import debias_catalog

    result = debias_catalog(args.catalog, args.config, args.out, overwrite=args.overwrite,
                            observable=args.observable)
    if args.json:
        _print_json(result.summary)
    else:
        s = result.summary
        print(f"corrected {s['corrected']} of {s['rows']} rows along {s['observable']} ({s['bins']} bins); "
              f"labels {s['label_counts']} (before {s['label_original_counts']}); output: {s['out']}")
    return 0


# --- run --------------------------------------------------------------------------------

def _add_run(sub) -> None:
    p = _command(sub, "run", "re-label a catalog with a model on a Dask cluster; Parquet out", _run)
    p.add_argument("catalog", type=Path, metavar="CATALOG", help="FITS (or Parquet) catalog")
    p.add_argument("--model", type=Path, required=True, help="checkpoint from `relabel train`")
    p.add_argument("--out", type=Path, required=True, help="output folder (a Parquet dataset)")
    p.add_argument("--config", type=Path, help="workflow file (default: the mapping recorded in the checkpoint)")
    p.add_argument("--cluster", choices=["local", *JOB_QUEUES_CLI, "none"], default=None,
                   help="local: a LocalCluster (default, or the workflow's cluster.kind); slurm, pbs, sge, lsf, "
                        "htcondor: workers as batch jobs (dask-jobqueue); none: in this process, plain tracebacks")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="attach to a running Dask scheduler (tcp://host:port)")
    where.add_argument("--scheduler-file", metavar="PATH",
                       help="attach to the scheduler that `dask scheduler --scheduler-file PATH` started")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: 2 on CPU, 1 per GPU)")
    p.add_argument("--threads-per-worker", type=int, help="tasks each worker runs at once (default 1)")
    p.add_argument("--dashboard-address", default=None,
                   help="where the dashboard listens (default: dask config relabel.dashboard-address, 127.0.0.1:8787)")
    p.add_argument("--worker-timeout", type=float,
                   help="seconds to wait for the first workers before saying why "
                        "(default: relabel.worker-timeout, 300)")
    p.add_argument("--shard-size", type=int,
                   help="rows per shard (default: workflow run.shard_size; --resume: the run's)")
    p.add_argument("--batch-size", type=int, help="cutouts per forward pass (default: workflow run.batch_size)")
    p.add_argument("--resume", action="store_true", help="complete an interrupted run: skip shards already written")
    p.add_argument("--overwrite", action="store_true", help="replace the output of an earlier run")
    p.add_argument("--no-bias", action="store_true", help="skip L of the original and new labels in the summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tta", action="store_true",
                   help="average the 8 symmetries of the square per galaxy; adds p_<class>_std columns")
    s = p.add_argument_group("job queues (--cluster slurm|pbs|sge|lsf|htcondor; over the workflow's cluster.<queue> "
                             "and dask's jobqueue.<queue>)")
    # The arguments added here are the job-queue options handed to the cluster: no second list to keep in step.
    added: list[str] = []

    def queue_option(*flags: str, **kwargs) -> None:
        added.append(s.add_argument(*flags, **kwargs).dest)

    queue_option("--jobs", type=int, help="fixed number of jobs (default 1; the way for GPU pools)")
    queue_option("--min-jobs", type=int, help="adaptive CPU pool: at least this many jobs")
    queue_option("--max-jobs", type=int, help="adaptive CPU pool: at most this many jobs")
    queue_option("--queue", "--partition", dest="queue", help="queue / SLURM partition")
    queue_option("--account", help="account / project to charge")
    queue_option("--walltime", help="job walltime, e.g. 02:00:00 (workers retire before it)")
    queue_option("--cores", type=int, help="cores per job (default: a node's, from sinfo; else 4)")
    queue_option("--memory", help="memory per job, e.g. 32GB")
    queue_option("--gpus-per-job", type=int, help="GPUs per job: one worker process per GPU, each GPU=1")
    queue_option("--interface", help="network interface the workers listen on (e.g. ib0)")
    queue_option("--scheduler-interface", help="interface the scheduler listens on, reachable from compute nodes")
    queue_option("--scheduler-host", help="address the scheduler listens on (default: this host's routable one)")
    queue_option("--python", help="Python on the compute nodes (default: `python` after a prologue)")
    queue_option("--prologue", action="append", dest="job_script_prologue", metavar="LINE",
                 help="shell line run before the worker starts (repeatable): module load, source activate, ...")
    queue_option("--log-dir", dest="log_directory", help="worker job logs (default OUT/_logs/QUEUE)")
    queue_option("--no-tls", dest="tls", action="store_false", default=None,
                 help="plain TCP scheduler (only on a cluster where nobody else can reach its port)")
    p.set_defaults(queue_options=tuple(added))
    s.add_argument("--dry-run", action="store_true", help="print the job script that would be submitted and exit")


JOB_QUEUES_CLI = ("slurm", "pbs", "sge", "lsf", "htcondor")


def _run(args) -> int:
    from relabel.destination import check_output_dir
    from relabel.run.clusters import ClusterOptions
    from relabel.run.pipeline import dry_run, run_catalog

    # Before any cluster starts: a file in the way must not surface as a traceback after the work.
    check_output_dir(args.out, overwrite=args.overwrite, what="output folder", allow_existing=True)
    opts = ClusterOptions(kind=args.cluster, scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                          workers=args.workers, threads_per_worker=args.threads_per_worker,
                          dashboard_address=args.dashboard_address, worker_timeout=args.worker_timeout,
                          queue_settings={k: getattr(args, k) for k in args.queue_options})
    if args.dry_run:
        print(dry_run(args.catalog, args.model, args.out, workflow=args.config, cluster=opts))
        return 0
    run_catalog(args.catalog, args.model, args.out, workflow=args.config, cluster=opts, shard_size=args.shard_size,
                batch_size=args.batch_size, resume=args.resume, overwrite=args.overwrite,
                progress=not args.no_progress, bias=not args.no_bias, tta=args.tta)
    return 0


# --- report / demo ----------------------------------------------------------------------

def _add_report(sub) -> None:
    p = _command(sub, "report", "figures and numbers of a run: bias before and after", _report)
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder of `relabel run`")
    p.add_argument("--truth", type=Path, help="true classes (the simulator's truth.parquet)")
    p.add_argument("--truth-column", default="TRUE_CLASS",
                   help="column of --truth with the true class (default TRUE_CLASS)")
    p.add_argument("--out", type=Path, help="report folder (default OUT_DIR/_report)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    p.add_argument("--comparison", type=Path, metavar="JSON",
                   help="show the comparison with the baselines: the output of `relabel evaluate --compare ... --json`")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object on stdout")


def _report(args) -> int:
    from relabel.report.page import make_report

    numbers = make_report(args.out_dir, truth=args.truth, report_dir=args.out, truth_column=args.truth_column,
                          overwrite=args.overwrite, comparison=args.comparison)
    if args.json:
        _print_json(numbers)
    else:
        print(f"report: {numbers['html']}")
    return 0


def _add_demo(sub) -> None:
    p = _command(sub, "demo", "simulate, train, run and report, small, on a LocalCluster", _demo)
    p.add_argument("dir", type=Path, nargs="?", default=Path("relabel-demo"), metavar="DIR")
    p.add_argument("--n", type=int, default=None, help="galaxies to simulate (default 10000)")
    p.add_argument("--epochs", type=int, default=None, help="at most this many training epochs per model (default 12)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    p.add_argument("--dashboard-address", default="127.0.0.1:8787",
                   help="where the Dask dashboard listens (default 127.0.0.1:8787; a busy port picks another)")
    p.add_argument("--overwrite", action="store_true", help="start again in a non-empty DIR")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars; a terminal gets bars, a log file a count line every 30 s")


def _demo(args) -> int:
    from relabel.demo import run_demo

    run_demo(args.dir, n=args.n, epochs=args.epochs, workers=args.workers,
             dashboard_address=args.dashboard_address, overwrite=args.overwrite,
             progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
