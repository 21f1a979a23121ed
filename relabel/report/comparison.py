"""The comparison of relabel's models with the field's baselines: one figure and one table.

Both draw the plain data of :func:`relabel.evaluate.compare_methods` (or the JSON that
``relabel evaluate --compare ... --truth T --json`` prints): per method, true accuracy
and class fractions per quartile of the first observable against the truth, reliability
diagrams, excess L and the expected calibration error.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from relabel.errors import OutputError
from relabel.report.figures import report_figure

#: Keys a comparison must hold to be drawn (what :func:`relabel.evaluate.compare_methods` returns).
REQUIRED = ("rows", "true_fraction_by_quartile", "reliability", "quartile_observable", "classes", "n", "bins")


def read_comparison(path: str | Path) -> dict:
    """The comparison saved by ``relabel evaluate --compare ... --truth T --json > FILE``, checked.

    Parameters
    ----------
    path : str or Path
        JSON file holding one :func:`relabel.evaluate.compare_methods` result.

    Returns
    -------
    dict

    Raises
    ------
    OutputError
        The file is missing, is not JSON, or lacks a comparison's keys (naming them).
    """
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"comparison file {path} does not exist (write it with `relabel evaluate CATALOG --model M "
                          f"--truth T --compare NAME=MODEL --json > {path.name}`)")
    try:
        comparison = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OutputError(f"comparison file {path} is not JSON: {exc}") from None
    missing = [k for k in REQUIRED if not isinstance(comparison, dict) or k not in comparison]
    if missing:
        raise OutputError(f"comparison file {path} lacks {', '.join(missing)}: it is not the output of "
                          "`relabel evaluate --compare ... --truth T --json`")
    return comparison


def plot_comparison(comparison: dict, path: Path) -> str:
    """Four panels on the same held-out galaxies: accuracy and class fraction per quartile, reliability, L and ECE.

    Parameters
    ----------
    comparison : dict
        :func:`relabel.evaluate.compare_methods`' result (or :func:`read_comparison`'s).
    path : Path
        PNG file to write.

    Returns
    -------
    str
        The figure's caption.
    """
    rows = comparison["rows"]
    colours = {row["method"]: f"C{i % 10}" for i, row in enumerate(rows)}
    target = comparison["classes"][-1]
    with report_figure(path, figsize=(13.0, 9.5)) as fig:
        (acc, frac), (rel, bars) = fig.subplots(2, 2)
        quarters = [1, 2, 3, 4]
        for row in rows:
            style = dict(color=colours[row["method"]], marker="o", ms=4, label=row["method"])
            acc.plot(quarters, _numbers(row["accuracy_by_quartile"]), **style)
            frac.plot(quarters, _numbers(row["fraction_by_quartile"][target]), **style)
            diagram = comparison["reliability"][row["method"]]
            rel.plot(_numbers(diagram["confidence"]), _numbers(diagram["accuracy"]), **style)
        truth_line = frac.plot(quarters, _numbers(comparison["true_fraction_by_quartile"][target]), color="black",
                               lw=3, label="truth")
        observable = comparison["quartile_observable"]
        for ax, name in ((acc, "true accuracy"), (frac, f"fraction {target}")):
            ax.set_xticks(quarters, _quartile_ticks(comparison))
            ax.set_xlabel(f"quartile of {observable} (worst observed first)")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        acc.legend(loc="best", fontsize=8)  # one legend: the colours are the same in every panel
        frac.legend(handles=truth_line, loc="best", fontsize=8)
        rel.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        lowest = 1.0 / len(comparison["classes"])  # the top probability is never below 1/K
        rel.set_xlim(lowest - 0.05, 1.0)
        rel.set_ylim(lowest - 0.15, 1.02)
        rel.set_xlabel("mean confidence (top probability) in the bin")
        rel.set_ylabel("share whose top class is the true one")
        rel.grid(alpha=0.3)
        _excess_and_ece(bars, rows, colours, (comparison.get("truth_L") or {}).get("excess_L"))
        fig.tight_layout()
    return (f"The methods on the same {comparison['n']} held-out galaxies ({comparison['bins']} bins). Top left: the "
            f"share whose label is the true class, per quartile of {observable} from the worst observed (1) to the "
            f"best (4); the catalog's labels count only the galaxies they classify confidently. Top right: the "
            f"share labelled {target}; black, the true share: a de-biased label set follows it. Bottom left: "
            f"reliability diagram against the truth (equal-width bins of the top probability; on the dashed line "
            f"a probability of p is right a fraction p of the time); the labels' and the catalog-level "
            f"correction's probabilities are their vote fractions normalised over the classes, the models' are "
            f"calibrated by their checkpoint's temperature. Bottom right: excess L (L minus the null L of shuffled "
            f"observables: 0 is the noise floor; error bars: the bootstrap spreads of L and of the null L in "
            f"quadrature) and the expected calibration error (ECE) against the truth; the dotted line is the true "
            f"classes' own excess L on the same galaxies, what an unbiased classifier keeps.")


def _excess_and_ece(ax, rows: list[dict], colours: dict, truth_excess: float | None = None) -> None:
    """Horizontal bars: excess L (filled) and ECE (hatched) per method; a dotted line at the truth's own excess L."""
    import numpy as np

    y = np.arange(len(rows))
    # The bootstrap spreads of L and of the null L, in quadrature (absent from comparisons made before they existed).
    spread = np.hypot(_numbers([r.get("L_std") for r in rows]), _numbers([r.get("null_L_std") for r in rows]))
    ax.barh(y - 0.2, _numbers([r["excess_L"] for r in rows]), height=0.38, color=[colours[r["method"]] for r in rows],
            xerr=np.nan_to_num(spread), capsize=3, label="excess L (bootstrap spread)")
    ax.barh(y + 0.2, _numbers([r["ece"] for r in rows]), height=0.38, color="white", hatch="//",
            edgecolor=[colours[r["method"]] for r in rows], label="ECE vs truth")
    ax.set_yticks(y, [r["method"] for r in rows])
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", lw=0.8)
    if truth_excess is not None:  # comparisons written before it was measured have none
        ax.axvline(truth_excess, color="black", lw=1.2, ls=":", label="true classes' excess L")
    ax.set_xlabel("excess L  /  expected calibration error")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3, axis="x")


def _numbers(values) -> list[float]:
    """None (an empty quartile or bin) as NaN, which matplotlib leaves as a gap."""
    return [math.nan if v is None else float(v) for v in values]


def _quartile_ticks(comparison: dict) -> list[str]:
    """"1\n0.21-0.62" and so on: each quartile's range of the observable, in quartile order."""
    edges = comparison.get("quartile_edges")
    if not edges or len(edges) != 5:
        return ["1", "2", "3", "4"]
    return [f"{q + 1}\n{edges[q]:.3g}-{edges[q + 1]:.3g}" for q in range(4)]


def comparison_html(comparison: dict | None) -> list[str]:
    """The comparison table as HTML (nothing without a comparison): a row per method, as the figure shows them.

    Parameters
    ----------
    comparison : dict or None
        :func:`relabel.evaluate.compare_methods`' result.

    Returns
    -------
    list of str
        HTML fragments: a heading, the table and a note on how to read it.
    """
    if not comparison:
        return []
    target = comparison["classes"][-1]
    head = ["method", "coverage", "excess L", "accuracy", *[f"acc. Q{q}" for q in range(1, 5)],
            *[f"{target} Q{q}" for q in range(1, 5)], "max fraction error", "ECE"]
    parts = ["<h2>Comparison with the field's baselines</h2><table>",
             "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in comparison["rows"]:
        cells = [html.escape(row["method"]), _fmt(row["coverage"], 2), _fmt(row["excess_L"], 4),
                 _fmt(row["accuracy"]), *[_fmt(v) for v in row["accuracy_by_quartile"]],
                 *[_fmt(v) for v in row["fraction_by_quartile"][target]], _fmt(row["fraction_error"]),
                 _fmt(row["ece"])]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    truth = comparison["true_fraction_by_quartile"][target]
    truth_excess = _fmt(comparison.get("truth_L", {}).get("excess_L"), 4)
    parts.append(f"<tr><td>truth</td><td></td><td>{truth_excess}</td>" + "<td></td>" * 5
                 + "".join(f"<td>{_fmt(v)}</td>" for v in truth)
                 + "<td></td>" * 2 + "</tr></table>")
    parts.append(f"<p>All methods on the same {comparison['n']} held-out galaxies and {html.escape(comparison['bins'])}"
                 f" bins. Quartiles of {html.escape(comparison['quartile_observable'])}, worst observed first. The "
                 "catalog's labels are measured on the galaxies they classify confidently (coverage); the "
                 "catalog-level correction (Hart et al. 2016 style) labels every galaxy by its largest corrected "
                 "fraction. Accuracy, fractions and ECE are against the truth. The truth's own excess L is "
                 "what an unbiased classifier keeps (the true classes vary with the observables inside the "
                 "intrinsic bins too): a method below it has removed real dependence, not only bias.</p>")
    return parts


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
