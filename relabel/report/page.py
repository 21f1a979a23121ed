"""`relabel report`: figures and numbers that show how much labeling bias a run removed.

Reads a run's output folder (only the columns it needs) and writes PNG figures, one
self-contained HTML page embedding them, and ``report.json``: class fractions against
each observable in intrinsic bins (original labels, new labels, and the truth when
given), L with its errors and null, accuracy against the truth per quartile, counts
per status, and example cutouts at low and high quality.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from relabel import status as st
from relabel.bias.metric import fraction_curves
from relabel.bias.table import bias_of_table
from relabel.catalog.missing import drop_missing
from relabel.config import Workflow
from relabel.errors import OutputError, RelabelError
from relabel.run.output import RUN_RECORD

#: Intrinsic bins in the fraction figures: 2^2 panels stay readable; L itself uses the workflow's depth.
PLOT_LOG2_BINS_INT = 2


def make_report(out_dir: str | Path, truth: str | Path | None = None, report_dir: str | Path | None = None,
                truth_column: str = "TRUE_CLASS", n_examples: int = 4) -> dict:
    """Write the report of run ``out_dir`` into ``report_dir`` (default ``OUT_DIR/_report``); return its numbers."""
    out_dir = Path(out_dir)
    record_path = out_dir / RUN_RECORD
    if not record_path.is_file():
        raise OutputError(f"{out_dir} is not a relabel run output (no {RUN_RECORD})")
    record = json.loads(record_path.read_text())
    wf = Workflow.from_dict(record["workflow"], base_dir=record.get("workflow_base", out_dir), source=record_path)
    classes = list(record["classes"])
    report_dir = Path(report_dir) if report_dir else out_dir / "_report"
    report_dir.mkdir(parents=True, exist_ok=True)

    frame = _read_output(out_dir, wf, classes)
    if truth is not None:
        frame = _join_truth(frame, Path(truth), wf.catalog.id, truth_column)
    predicted = frame["status"].isin(st.PREDICTED).to_numpy()
    numbers = {
        "out_dir": str(out_dir.resolve()),
        "rows": int(len(frame)),
        "status": {k: int(v) for k, v in frame["status"].value_counts().sort_index().items()},
        "classes": classes,
        "labeling_bias": _bias_numbers(out_dir, wf, classes, frame, predicted),
        "accuracy": _accuracy(frame, wf, classes, predicted) if "true_label" in frame else None,
    }
    figures = {}
    target = classes[-1]
    for obs in wf.observables:
        name = f"fraction_{obs.column.lower()}.png"
        _plot_fractions(frame, wf, obs.column, classes, predicted, report_dir / name)
        figures[f"{target} fraction against {obs.column}"] = name
    _plot_bias(numbers["labeling_bias"], report_dir / "bias.png")
    figures["labeling bias L"] = "bias.png"
    _plot_status(numbers["status"], report_dir / "status.png")
    figures["rows per status"] = "status.png"
    if _plot_examples(frame, wf, predicted, report_dir / "examples.png", n_examples):
        figures["example cutouts"] = "examples.png"
    numbers["figures"] = {k: str(report_dir / v) for k, v in figures.items()}
    (report_dir / "report.json").write_text(json.dumps(numbers, indent=2) + "\n")
    _write_html(report_dir / "report.html", numbers, figures, report_dir)
    numbers["html"] = str(report_dir / "report.html")
    return numbers


def _read_output(out_dir: Path, wf: Workflow, classes: list[str]) -> pd.DataFrame:
    columns = [wf.catalog.id, *wf.intrinsic, *wf.observable_columns, *[f"p_{c}" for c in classes],
               "label", "label_original", "status", *wf.cutouts.columns]
    return pd.read_parquet(out_dir, columns=list(dict.fromkeys(columns)))


def _join_truth(frame: pd.DataFrame, truth: Path, id_column: str, truth_column: str) -> pd.DataFrame:
    if not truth.exists():
        raise OutputError(f"truth table {truth} does not exist")
    table = pd.read_parquet(truth)
    missing = [c for c in (id_column, truth_column) if c not in table.columns]
    if missing:
        raise OutputError(f"truth table {truth} lacks column(s) {', '.join(missing)}; it has {', '.join(table.columns)}")
    table = table[[id_column, truth_column]].rename(columns={truth_column: "true_label"})
    merged = frame.merge(table, on=id_column, how="left", validate="many_to_one")
    if merged["true_label"].isna().any():
        raise OutputError(f"truth table {truth} has no {truth_column} for {int(merged['true_label'].isna().sum())} output rows")
    return merged


def _bias_numbers(out_dir: Path, wf: Workflow, classes: list[str], frame: pd.DataFrame, predicted: np.ndarray) -> dict:
    """L as ``relabel bias OUT_DIR`` gives it for the original and the new labels, and for the truth."""
    out = {}
    sets = {"original": {}, "new": {"label_column": "label", "classes": classes}}
    for key, overrides in sets.items():
        try:
            out[key] = bias_of_table(out_dir, wf, overrides).to_dict()
        except RelabelError as exc:
            out[key] = {"error": str(exc)}
    if "true_label" in frame:
        from relabel.bias.metric import bias_with_errors

        rows, _ = drop_missing(frame[predicted], [*wf.intrinsic, *wf.observable_columns], wf.catalog.missing)
        codes = pd.Categorical(rows["true_label"], categories=classes).codes
        try:
            opts = wf.bias
            out["truth"] = bias_with_errors(
                rows[wf.intrinsic], rows[wf.observable_columns], codes.astype(np.int64), len(classes),
                opts["log2_bins_int"], opts["bins_obs"], wf.best_ends, n_boot=opts["n_boot"],
                n_per_bin=opts["n_per_bin"], seed=opts["seed"], n_null=opts["n_null"], classes=classes,
            ).to_dict()
        except RelabelError as exc:
            out["truth"] = {"error": str(exc)}
    return out


def _quartiles(values: np.ndarray) -> np.ndarray:
    edges = np.quantile(values, [0.25, 0.5, 0.75])
    return np.searchsorted(edges, values, side="right")


def _accuracy(frame: pd.DataFrame, wf: Workflow, classes: list[str], predicted: np.ndarray) -> dict:
    """Agreement with the truth, overall and per quartile of the first observable (worst quality first)."""
    obs = wf.observables[0]
    rows = frame[predicted]
    q = _quartiles(rows[obs.column].to_numpy(np.float64))
    if obs.best == "low":
        q = 3 - q
    new_ok = (rows["label"] == rows["true_label"]).to_numpy()
    confident = (rows["label_original"].notna() & (rows["label_original"] != "uncertain")).to_numpy()  # null: missing
    orig_ok = (rows["label_original"] == rows["true_label"]).to_numpy()
    return {
        "observable": obs.column,
        "new_labels": float(new_ok.mean()) if len(rows) else None,
        "original_labels_confident": float(orig_ok[confident].mean()) if confident.any() else None,
        "original_confident_fraction": float(confident.mean()) if len(rows) else None,
        "new_by_quartile": [float(new_ok[q == i].mean()) if (q == i).any() else None for i in range(4)],
        "original_by_quartile": [float(orig_ok[(q == i) & confident].mean()) if ((q == i) & confident).any() else None
                                 for i in range(4)],
        "quartile_order": "worst quality first",
    }


def _curves(rows: pd.DataFrame, label_column: str, wf: Workflow, classes: list[str], obs: str) -> pd.DataFrame | None:
    rows = rows[rows[label_column].isin(classes)]
    depth = min(PLOT_LOG2_BINS_INT, wf.bias["log2_bins_int"])
    bins = wf.bias["bins_obs"]
    if len(rows) < bins * 2**depth * 2:
        return None
    codes = pd.Categorical(rows[label_column], categories=classes).codes.astype(np.int64)
    best = wf.best_ends[wf.observable_columns.index(obs)]
    try:
        return fraction_curves(rows[wf.intrinsic], rows[[obs]], codes, len(classes), depth, bins, [best],
                               classes=classes)
    except RelabelError:
        return None


def _plot_fractions(frame, wf, obs, classes, predicted, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = classes[-1]
    sets = [("original labels (confident)", frame, "label_original", "tab:red"),
            ("new labels", frame[predicted], "label", "tab:blue")]
    if "true_label" in frame:
        sets.append(("truth", frame[predicted], "true_label", "black"))
    n_panels = 2 ** min(PLOT_LOG2_BINS_INT, wf.bias["log2_bins_int"])
    cols = min(n_panels, 2)
    fig, axes = plt.subplots((n_panels + cols - 1) // cols, cols, figsize=(5 * cols, 3.6 * ((n_panels + cols - 1) // cols)),
                             squeeze=False, sharey=True)
    for label, rows, column, colour in sets:
        curves = _curves(rows, column, wf, classes, obs)
        if curves is None:
            continue
        curves = curves[curves["class"] == target]
        for leaf, part in curves.groupby("leaf"):
            ax = axes.flat[int(leaf)]
            f, n = part["fraction"].to_numpy(), part["n"].to_numpy()
            ax.errorbar(part["obs_centre"], f, yerr=np.sqrt(f * (1 - f) / np.maximum(n, 1)), marker="o", ms=3,
                        capsize=2, color=colour, label=label)
            if label.startswith("new"):
                ranges = [f"{c}: {part[c + '_min'].iloc[0]:.3g}..{part[c + '_max'].iloc[0]:.3g}" for c in wf.intrinsic]
                ax.set_title("\n".join(ranges), fontsize=7)
    for ax in axes.flat:
        ax.set_xlabel(obs)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"fraction {target}")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{target} fraction against {obs}, in {n_panels} intrinsic bins (binomial errors)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_bias(numbers: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, v in numbers.items() if "L" in v]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = np.arange(len(keys))
    ax.bar(x, [numbers[k]["L"] for k in keys], yerr=[numbers[k]["L_std"] or 0 for k in keys], capsize=4,
           color=["tab:red", "tab:blue", "grey"][: len(keys)], label="L")
    nulls = [numbers[k].get("null_L") for k in keys]
    if all(v is not None for v in nulls):
        ax.errorbar(x, nulls, yerr=[numbers[k]["null_L_std"] or 0 for k in keys], fmt="k_", ms=20, capsize=4,
                    label="null L (noise floor)")
    ax.set_xticks(x, [f"{k} labels" for k in keys])
    ax.set_ylabel("labeling bias L")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_status(counts: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 0.5 + 0.4 * max(len(counts), 1)))
    names = list(counts)
    ax.barh(names, [counts[n] for n in names], color=["tab:green" if n in st.PREDICTED else "tab:orange" for n in names])
    for i, n in enumerate(names):
        ax.text(counts[n], i, f" {counts[n]}", va="center", fontsize=8)
    ax.set_xlabel("rows")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def display_image(image: np.ndarray) -> np.ndarray:
    """One cutout (bands, h, w) as a picture: grey for one band, else a colour composite.

    Two or more bands become a Lupton et al. (2004) arcsinh composite (astropy),
    the bluest band blue, the reddest red, their mean green, all in units of the
    reddest band's sky noise so faint structure shows the same in every cutout.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> display_image(rng.normal(size=(2, 8, 8)).astype("f4")).shape
    (8, 8, 3)
    >>> display_image(rng.normal(size=(1, 8, 8)).astype("f4")).shape
    (8, 8)
    """
    from astropy.visualization import make_lupton_rgb

    from relabel.model.normalisation import estimate_normalisation

    # The sky noise of the reddest band, measured as training measures it (border frame, MAD).
    sigma = max(estimate_normalisation(np.asarray(image)[None])["scale"][-1], 1e-12)
    image = np.nan_to_num(np.asarray(image, dtype=np.float64))
    red, blue = image[-1], image[0]
    if image.shape[0] == 1:
        return np.arcsinh(red / sigma)
    return make_lupton_rgb(red / sigma, 0.5 * (red + blue) / sigma, blue / sigma, minimum=0.0, stretch=5.0, Q=8.0)


def _plot_examples(frame, wf, predicted, path: Path, n: int) -> bool:
    """Cutouts at the worst and the best end of the first observable, titled with their labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relabel.cutouts.sources import open_cutout_source

    rows = frame[predicted]
    if len(rows) < 2 * n:
        return False
    obs = wf.observables[0]
    order = np.argsort(rows[obs.column].to_numpy(), kind="stable")
    worst, best = (order[:n], order[-n:]) if obs.best == "high" else (order[-n:], order[:n])
    picks = rows.iloc[np.concatenate([worst, best])]
    with open_cutout_source(wf) as source:
        cut = source.read(picks)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 6.2))
    for ax, (_, row), image, ok in zip(axes.flat, picks.iterrows(), cut.images, cut.usable):
        ax.imshow(display_image(image) if ok else np.zeros_like(image[0]), cmap="gray", origin="lower")
        title = f"{obs.column}={row[obs.column]:.2f}\norig {row['label_original']}\nnew {row['label']}"
        if "true_label" in row:
            title += f"\ntrue {row['true_label']}"
        ax.set_title(title, fontsize=7)
        ax.set_axis_off()
    fig.suptitle(f"worst {obs.column} (top) and best (bottom)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _write_html(path: Path, numbers: dict, figures: dict, report_dir: Path) -> None:
    def fmt(v):
        return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else html.escape(str(v)))

    rows = []
    for key, res in numbers["labeling_bias"].items():
        if "L" in res:
            rows.append(f"<tr><td>{key}</td><td>{fmt(res['L'])} &plusmn; {fmt(res['L_std'])}</td>"
                        f"<td>{fmt(res['null_L'])} &plusmn; {fmt(res['null_L_std'])}</td><td>{fmt(res['excess'])}</td>"
                        f"<td>{res['n_objects']}</td></tr>")
        else:
            rows.append(f"<tr><td>{key}</td><td colspan=4>{html.escape(res.get('error', ''))}</td></tr>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>relabel report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>relabel report</h1><p>{html.escape(numbers['out_dir'])}: {numbers['rows']} rows, classes "
        f"{', '.join(map(html.escape, numbers['classes']))}</p>",
        "<h2>Labeling bias L</h2><table><tr><th>labels</th><th>L</th><th>null L</th><th>excess</th><th>N</th></tr>",
        *rows, "</table>",
    ]
    acc = numbers.get("accuracy")
    if acc:
        parts.append(f"<h2>Accuracy against the truth</h2><p>new labels {fmt(acc['new_labels'])}; original labels "
                     f"(confident ones, {fmt(acc['original_confident_fraction'])} of rows) "
                     f"{fmt(acc['original_labels_confident'])}. By quartile of {html.escape(acc['observable'])}, "
                     f"worst first: new {', '.join(fmt(v) for v in acc['new_by_quartile'])}; original "
                     f"{', '.join(fmt(v) for v in acc['original_by_quartile'])}</p>")
    for title, name in figures.items():
        data = base64.b64encode((report_dir / name).read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
