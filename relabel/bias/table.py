"""L of a table on disk: a FITS catalog or a Parquet file or dataset, mapped by a workflow and options.

This is what ``relabel bias TABLE`` runs: it reads only the used columns, turns the
label columns into classes as the workflow says, drops (and counts) rows it cannot
use, and hands the arrays to :func:`relabel.bias.bias_with_errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relabel.bias.metric import BiasError, BiasResult, bias_with_errors, repetition_options
from relabel.catalog.base import Catalog
from relabel.catalog.labels import NO_CLASS, check_threshold, table_labels
from relabel.catalog.missing import as_numpy_columns, drop_missing
from relabel.catalog.reader import open_catalog
from relabel.config import BEST_ENDS, BIAS_DEFAULTS, LabelSpec, ProbabilityLabel, load_workflow
from relabel.errors import CatalogError, ConfigError


def bias_of_table(
    path: Any,
    workflow: Any = None,
    overrides: Mapping[str, Any] | None = None,
) -> BiasResult:
    """L of a FITS or Parquet table (file or dataset folder), mapped by a workflow and options.

    Parameters
    ----------
    path
        The table (a file or folder, a pandas DataFrame or an astropy Table); None takes the
        workflow's ``catalog.path``.
    workflow
        A :class:`relabel.config.Workflow`, a path to a workflow file, or None
        (then ``overrides`` must name labels, intrinsic and observable columns).
    overrides
        Options that replace the workflow's, keyed like the ``relabel bias``
        options (None or absent = keep the workflow's): ``labels`` (probability
        columns), ``thresholds`` (one per column, or one for all),
        ``classes`` (class names for ``labels``, or the values of
        ``label_column``), ``label_column``, ``keep_uncertain`` (True turns it
        on), ``intrinsic``, ``observables``, ``best`` (one per observable, or
        one for all), ``log2_bins_int``, ``bins_obs``, ``n_boot``,
        ``n_per_bin``, ``seed``, ``null`` (or ``n_null``), ``mc_error`` (0: exactly
        ``n_boot`` and ``null`` repetitions), ``hdu``, ``workers``.

    Rows missing a used value (:mod:`relabel.catalog.missing`: nulls, NaN, inf, the workflow's
    ``catalog.missing`` codes), and, with probability columns,
    rows passing no threshold (unless ``keep_uncertain``), are dropped; the
    counts are in the result's ``dropped`` and :func:`format_result` prints them.

    Raises
    ------
    ConfigError
        Options that contradict each other or are missing (e.g. probability
        columns without thresholds).
    CatalogError
        The table or a column cannot be read, probabilities outside [0, 1],
        label values not among the classes.
    BiasError
        As :func:`bias_with_errors`.
    """
    opts = {k: v for k, v in (overrides or {}).items() if v is not None}
    if isinstance(path, (str, Path)) and not Path(path).exists():
        # Said first: a missing file is the problem, not the options that would map it.
        raise CatalogError(f"table {path} does not exist")
    if workflow is not None and not hasattr(workflow, "labels"):
        workflow = load_workflow(workflow)
    label_spec = _label_spec(workflow, opts)
    intrinsic = list(opts.get("intrinsic") or (workflow.intrinsic if workflow is not None else []))
    observables, best = _observable_spec(workflow, opts)
    if not intrinsic:
        raise ConfigError("relabel bias needs intrinsic columns: a workflow file (--config) or --intrinsic")
    params = _bias_params(workflow, opts)
    catalog = _open_table(path, workflow, opts.get("hdu"))
    path = catalog.path
    numeric = list(dict.fromkeys(intrinsic + observables + [p.column for p in label_spec.probabilities]))
    columns = list(dict.fromkeys(numeric + label_spec.columns))
    catalog.require(columns, numeric=numeric, what="relabel bias")
    frame = catalog.read_all(columns)
    n_table = len(frame)
    frame, codes, class_names, dropped = _labelled_rows(frame, columns, label_spec, workflow)
    if len(frame) == 0:
        raise BiasError(f"{path}: no rows left after dropping {dropped} of {n_table}")

    result = bias_with_errors(
        frame[intrinsic], frame[observables], codes, len(class_names), params["log2_bins_int"], params["bins_obs"],
        best, n_per_bin=params["n_per_bin"], **repetition_options(params), classes=class_names,
        workers=opts.get("workers"),
    )
    result.table = str(path)
    result.n_table = n_table
    result.dropped = dropped
    return result


def _labelled_rows(
    frame: pd.DataFrame, columns: list[str], label_spec: LabelSpec, workflow: Any
) -> tuple[pd.DataFrame, np.ndarray, list[str], dict[str, int]]:
    """The rows L can use, their class codes and names, and the count of rows dropped per reason."""
    # one missing-value rule (relabel.catalog.missing): nulls, NaN, inf and the workflow's codes
    frame, dropped = drop_missing(frame, columns, workflow.catalog.missing if workflow is not None else {})
    frame = as_numpy_columns(frame, columns)
    codes, class_names = table_labels(frame, label_spec)
    unlabelled = codes == NO_CLASS
    if unlabelled.any():
        dropped["passing no threshold"] = int(unlabelled.sum())
        frame, codes = frame[~unlabelled], codes[~unlabelled]
    return frame, codes, class_names, dropped


def _bias_params(workflow: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """Binning and repetition settings: the defaults, then the workflow's ``bias`` section, then the options.

    ``opts["null"]`` is copied to ``opts["n_null"]`` (the command's name for it).
    """
    params = dict(BIAS_DEFAULTS)
    if workflow is not None:
        params.update(workflow.bias)
    if "null" in opts:
        opts["n_null"] = opts["null"]
    for key in ("log2_bins_int", "bins_obs", "n_boot", "n_per_bin", "n_null", "seed", "mc_error"):
        if key in opts:
            params[key] = opts[key]
    return params


def _open_table(path: Any, workflow: Any, hdu: Any) -> Catalog:
    """The table to measure: ``path``, or the workflow's catalog (with its HDU when it is the same file)."""
    if path is None:
        if workflow is None or workflow.catalog.path is None:
            raise ConfigError("relabel bias needs a table: give TABLE or a workflow with catalog.path")
        path = workflow.catalog.path
    if isinstance(path, (str, Path)):  # else a DataFrame or astropy Table in memory
        path = Path(path)
        if (hdu is None and workflow is not None and workflow.catalog.path is not None
                and path.resolve() == Path(workflow.catalog.path).resolve()):
            hdu = workflow.catalog.hdu
    return open_catalog(path, hdu)


#: Options that choose the label set; without any of them ``relabel bias RUN_DIR`` measures both label sets.
LABEL_OPTIONS = ("labels", "thresholds", "classes", "label_column")


def is_run_folder(path: str | Path) -> bool:
    """True when ``path`` is the output folder of ``relabel run`` (it holds the run record).

    Parameters
    ----------
    path : str or pathlib.Path
        Any path; a file or a missing path gives False.

    Returns
    -------
    bool
    """
    from relabel.run.output import RUN_RECORD

    return Path(path).is_dir() and (Path(path) / RUN_RECORD).is_file()


def run_workflow(out_dir: str | Path) -> tuple[Any, list[str]]:
    """The workflow a run recorded in its folder, and the classes of its new labels.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        The output folder of ``relabel run``.

    Returns
    -------
    workflow : relabel.config.Workflow
        The workflow the run used.
    classes : list of str
        The class names of the run's ``p_<class>`` columns, in code order.

    Raises
    ------
    CatalogError
        ``out_dir`` has no readable run record.
    """
    import json

    from relabel.config import Workflow
    from relabel.run.output import RUN_RECORD

    record_path = Path(out_dir) / RUN_RECORD
    try:
        record = json.loads(record_path.read_text())
        workflow = Workflow.from_dict(record["workflow"], base_dir=record.get("workflow_base", out_dir),
                                      source=record_path)
        return workflow, [str(c) for c in record["classes"]]
    except (OSError, ValueError, KeyError) as exc:
        raise CatalogError(f"{record_path}: not a readable relabel run record ({exc})") from None


def bias_of_run(out_dir: str | Path, workflow: Any = None,
                overrides: Mapping[str, Any] | None = None) -> dict[str, BiasResult]:
    """L of a run's original labels and of its new labels, on the same output rows.

    Parameters
    ----------
    out_dir : str or Path
        Output folder of ``relabel run``.
    workflow
        Workflow (object or file) to map the columns; default the one the run recorded.
    overrides
        As :func:`bias_of_table`, except the label options (:data:`LABEL_OPTIONS`).

    Returns
    -------
    dict
        ``{"original": BiasResult, "new": BiasResult}``; the new labels are the ``label`` column
        with the run's classes.
    """
    recorded, classes = run_workflow(out_dir)
    workflow = recorded if workflow is None else workflow
    opts = {k: v for k, v in (overrides or {}).items() if k not in LABEL_OPTIONS}
    return {"original": bias_of_table(out_dir, workflow, opts),
            "new": bias_of_table(out_dir, workflow, {**opts, "label_column": "label", "classes": classes})}


def format_run_result(results: Mapping[str, BiasResult]) -> str:
    """``relabel bias RUN_DIR``'s lines: one per label set, aligned, then any dropped rows.

    Parameters
    ----------
    results : mapping of str to BiasResult
        Label-set name (e.g. ``"original"``, ``"new"``) -> its result, in display order.

    Returns
    -------
    str
        One line per label set as :func:`format_result`, names padded to one width.
    """
    width = max(len(k) for k in results) + len(" labels:")
    lines = []
    for key, result in results.items():
        text = format_result(result).splitlines()
        lines.append(f"{key + ' labels:':<{width}} {text[0]}")
        lines.extend(f"{'':<{width}} {more}" for more in text[1:])
    return "\n".join(lines)


def _label_spec(workflow: Any, opts: Mapping[str, Any]) -> Any:
    """The workflow's ``labels`` section with the command-line options applied."""
    base = workflow.labels if workflow is not None else LabelSpec()
    keep = bool(opts.get("keep_uncertain")) or base.keep_uncertain
    if opts.get("labels") and opts.get("label_column"):
        raise ConfigError("give either --labels (probability columns) or --label-column (categorical), not both")
    if opts.get("label_column") or (not opts.get("labels") and base.label_column):
        column = opts.get("label_column") or base.label_column
        classes = opts.get("classes") or (base.classes if column == base.label_column else None)
        if not classes:
            raise ConfigError(f"--label-column {column} needs --classes: the values of {column} in code order")
        return LabelSpec(label_column=column, classes=[str(c) for c in classes])
    known = {p.column: p for p in base.probabilities}
    columns = list(opts.get("labels") or known)
    if not columns:
        raise ConfigError(
            "relabel bias needs labels: a workflow file (--config), --labels with --thresholds, "
            "or --label-column with --classes"
        )
    thresholds = _given_or_workflow(
        _one_per(opts.get("thresholds"), columns, "--thresholds"), columns,
        {c: p.threshold for c, p in known.items()},
        "give --thresholds for probability column(s) {}: the workflow has none")
    names = _one_per(opts.get("classes"), columns, "--classes", broadcast=False)
    if names is None:
        names = [known[c].name if c in known else c for c in columns]
    for column, t in zip(columns, thresholds):
        check_threshold(t, column)
    items = [ProbabilityLabel(c, str(name), float(t)) for c, name, t in zip(columns, names, thresholds)]
    compare = opts.get("compare") or base.compare
    return LabelSpec(probabilities=items, keep_uncertain=keep, compare=compare)


def _observable_spec(workflow: Any, opts: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Observable columns and their best ends, from the options or the workflow."""
    base = {o.column: o.best for o in workflow.observables} if workflow is not None else {}
    columns = list(opts.get("observables") or base)
    if not columns:
        raise ConfigError(
            "relabel bias needs observable columns: a workflow file (--config) or --observables with --best"
        )
    best = _given_or_workflow(
        _one_per(opts.get("best"), columns, "--best"), columns, base,
        "give --best (low or high) for observable(s) {}: which end is the best quality")
    bad = [b for b in best if b not in BEST_ENDS]
    if bad:
        raise ConfigError(f"--best takes low or high for each observable, got {bad}")
    return columns, list(best)


def _given_or_workflow(given: list | None, columns: list[str], workflow_values: Mapping[str, Any],
                       missing_message: str) -> list:
    """The option's values when given, else each column's value in the workflow.

    Raises :class:`ConfigError` with ``missing_message`` (``{}`` stands for the
    columns) when the option is absent and the workflow lacks some columns.
    """
    if given is not None:
        return given
    missing = [c for c in columns if c not in workflow_values]
    if missing:
        raise ConfigError(missing_message.format(", ".join(missing)))
    return [workflow_values[c] for c in columns]


def _one_per(values: Any, columns: list[str], option: str, broadcast: bool = True) -> list | None:
    if values is None:
        return None
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(values) == len(columns):
        return values
    if broadcast and len(values) == 1:
        return values * len(columns)
    one = " or one for all" if broadcast else ""
    raise ConfigError(f"{option} gives {len(values)} value(s) for {len(columns)} column(s) ({', '.join(columns)}): "
                      f"give one per column{one}")


def format_result(result: BiasResult) -> str:
    """The plain-text line of ``relabel bias``, plus one line on dropped rows when there were any.

    Parameters
    ----------
    result : BiasResult
        The measurement to print.

    Returns
    -------
    str
        L, its bootstrap std, the null L, N and the bins; a second line with the dropped rows by reason.

    Examples
    --------
    >>> r = BiasResult(L=0.12344, L_std=0.0021, null_L=0.031, null_L_std=0.0015, excess=0.09244,
    ...                n_objects=123456, n_sample=123456, log2_bins_int=9, bins_obs=8, classes=["a", "b"],
    ...                intrinsic=["M"], observables=["z"], best=["low"], n_boot=20, n_per_bin=None,
    ...                n_null=10, seed=0)
    >>> print(format_result(r))
    L = 0.1234 +- 0.0021 (null 0.0310 +- 0.0015, N = 123456, 512 x 8 bins)
    """
    main = f"L = {result.L:.4f}" + (f" +- {result.L_std:.4f}" if result.L_std is not None else "")
    inside = []
    if result.null_L is not None:
        null = f"null {result.null_L:.4f}"
        if result.null_L_std is not None:
            null += f" +- {result.null_L_std:.4f}"
        inside.append(null)
    inside.append(f"N = {result.n_objects}")
    inside.append(f"{1 << result.log2_bins_int} x {result.bins_obs} bins")
    line = f"{main} ({', '.join(inside)})"
    if result.mc_error:
        line += (f"\nMonte-Carlo error of the excess {result.mc_error:.4f} "
                 f"({result.n_boot} bootstrap, {result.n_null} null")
        if result.dropped_repetitions:
            k = result.dropped_repetitions
            line += f"; {k} added repetition{'s' if k != 1 else ''} dropped: a leaf with fewer objects than bins"
        line += ")"
    if result.dropped:
        total = (result.n_table - result.n_objects) if result.n_table is not None else sum(result.dropped.values())
        reasons = ", ".join(f"{count} {reason}" for reason, count in result.dropped.items())
        of = f" of {result.n_table}" if result.n_table is not None else ""
        line += f"\ndropped {total}{of} rows: {reasons}"
    return line
