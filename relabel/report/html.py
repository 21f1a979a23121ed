"""The report as one static, self-contained HTML page: tables, definitions, figures with captions."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from relabel.report.columns import DEFINITIONS, axis_label
from relabel.report.comparison import comparison_html

STYLE = ("body{font-family:Georgia,serif;font-size:17px;line-height:1.45;max-width:1150px;margin:auto;padding:1em}"
         "table{border-collapse:collapse;margin:0.5em 0}td,th{padding:3px 10px;text-align:right;"
         "border-bottom:1px solid #ccc}td:first-child,th:first-child{text-align:left}"
         "figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:15px;color:#333;max-width:60em}"
         ".note{background:#fff6e0;padding:0.5em 1em;border-left:4px solid #e0a000}"
         ".warning{background:#fde8e8;padding:0.5em 1em;border-left:4px solid #c00000}")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _mc(res: dict) -> str:
    """The excess's Monte-Carlo error and repetition counts, for results that carry them."""
    if not res.get("mc_error"):
        return ""
    return (f" &plusmn; {_fmt(res['mc_error'], 4)} <small>(Monte-Carlo; {res['n_boot']} bootstrap, "
            f"{res['n_null']} null)</small>")


def _bias_table(bias: dict) -> list[str]:
    parts = ["<table><tr><th>labels</th><th>L</th><th>null L</th><th>excess L</th><th>galaxies</th></tr>"]
    for key, res in bias.items():
        if "L" in res:
            parts.append(f"<tr><td>{html.escape(key)}</td><td>{_fmt(res['L'], 4)} &plusmn; {_fmt(res['L_std'], 4)}</td>"
                         f"<td>{_fmt(res['null_L'], 4)} &plusmn; {_fmt(res['null_L_std'], 4)}</td>"
                         f"<td>{_fmt(res['excess'], 4)}{_mc(res)}</td><td>{res['n_objects']}</td></tr>")
        else:
            parts.append(f"<tr><td>{html.escape(key)}</td><td colspan=4>{html.escape(res.get('error', ''))}</td></tr>")
    parts.append("</table>")
    return parts


def _comparison(table: dict) -> list[str]:
    target = html.escape(table["target"])
    with_truth = any(r["accuracy"] for r in table["rows"])
    head = (f"<tr><th>galaxies</th><th>N</th><th>original uncertain</th><th>{target} fraction: original</th>"
            f"<th>new</th>" + ("<th>truth</th><th>accuracy: original</th><th>new</th>" if with_truth else "") + "</tr>")
    parts = ["<table>", head]
    for r in table["rows"]:
        cells = [html.escape(r["subset"]), str(r["n"]), _fmt(r["uncertain_original"]),
                 _fmt(r["fraction"]["original"]), _fmt(r["fraction"]["new"])]
        if with_truth:
            acc = r["accuracy"] or {}
            cells += [_fmt(r["fraction"].get("truth")), _fmt(acc.get("original")), _fmt(acc.get("new"))]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    parts.append(f"<p>Every line compares the label sets on the same galaxies. Fractions are shares of all galaxies of "
                 f"the line, so the original labels' {target} fraction counts their uncertain galaxies as not "
                 f"{target}; the accuracy counts them as wrong. Quartiles of "
                 f"{html.escape(axis_label(table['observable']))} run from the worst observed (1) to the best (4).</p>")
    return parts


def _trends(trends: list[dict], target: str) -> list[str]:
    if not trends:
        return []
    items = []
    for t in trends:
        ranges = ", ".join(f"{c} {lo:.3g} to {hi:.3g}" for c, (lo, hi) in t["ranges"].items())
        items.append(f"<li>intrinsic bin {t['leaf'] + 1} ({html.escape(ranges)}): the true {html.escape(target)} "
                     f"fraction goes from {t['from']:.2f} to {t['to']:.2f} across {html.escape(t['observable'])} "
                     f"({abs(t['to'] - t['from']) / t['sigma']:.1f} sigma)</li>")
    return ["<div class='note'><p><b>The truth itself changes with the observables inside these intrinsic bins.</b> "
            "A coarse bin mixes galaxies of different intrinsic properties, and those differ in how they are "
            "observed; such a slope is real, not labeling bias, and a de-biased label set should follow it:</p><ul>",
            *items, "</ul></div>"]


def _calibration(temperature: float | None, calibration: dict | None) -> str:
    """One sentence: the probabilities' temperature and the galaxies it was fitted on."""
    if temperature is None:
        return ""
    text = f"<p>Probabilities are divided by the temperature T = {temperature:.3g} before the softmax"
    if not calibration or calibration.get("views") == "none":
        return text + ".</p>"
    text += (f", fitted on {calibration['n_galaxies']} best-observed confident validation galaxies "
             f"{html.escape(calibration['views'])}")
    if calibration.get("share_shift") is not None:
        text += (f" (their predicted class shares moved by {calibration['share_shift']:.3f} when they were shown "
                 f"at the survey's conditions; T there {calibration['temperature_conditions']:.3g}, as observed "
                 f"{calibration['temperature_observed']:.3g})")
    return text + ".</p>"


def _training(training: dict) -> list[str]:
    """How the run's model was trained (lambda, its path, soft L) and the over-correction check."""
    check = training["over_correction"]
    parts = ["<h2>Training of the model, and over-correction</h2>"]
    if check["warning"]:
        parts.append(f"<p class='warning'><b>{html.escape(check['text'])}</b></p>")
    parts.append(f"<p>Checkpoint {html.escape(str(training['checkpoint']))} (sha256 "
                 f"{html.escape(str(training['checkpoint_sha256'])[:12])}).")
    if "error" in training:
        parts.append(f" {html.escape(training['error'])}.</p>")
    else:
        selection, soft = training["lambda_selection"], training["soft_L"]
        how = "as given"
        if selection:
            how = ("the path's smallest, kept although the path rejected it (below)" if selection.get("kept_rejected")
                   else "chosen from the data (the lambda path below)")
        parts.append(f" Method {html.escape(training['method'])}, lambda {training['lambda']:g} {how}; training "
                     f"{'settled' if training['settled'] else 'had not settled'} when it stopped. Soft L: "
                     f"{_fmt(soft['before'], 4)} without the bias term, {_fmt(soft['after'], 4)} with it "
                     f"({html.escape(soft['source'])}).</p>")
        parts.append(_calibration(training.get("temperature"), training.get("calibration")))
        inputs = training.get("catalog_inputs") or []
        parts.append("<p>The network sees the cutouts only.</p>" if not inputs else
                     f"<p>The network sees the cutouts and the catalog's {html.escape(', '.join(inputs))} (the "
                     "catalog gives the prior, the image the evidence).</p>")
        if selection:
            parts += _lambda_path(selection)
    parts += _agreement(training["agreement"], training.get("lambda_selection"))
    if not check["warning"]:
        parts.append(f"<p>{html.escape(check['text'])}.</p>")
    return parts


def _lambda_path(selection: dict) -> list[str]:
    parts = [f"<p>The lambda path: {html.escape(selection['rule'])}; tolerance {selection['tolerance']:g}, on "
             f"{selection['n_reference_objects']} best-observed validation objects.</p><table><tr><th>lambda</th>"
             "<th>best-observed accuracy vs labels</th><th>soft L</th><th>settled</th><th>accepted</th></tr>"]
    ref = selection["biased"]
    parts.append(f"<tr><td>biased</td><td>{_fmt(ref['ref_accuracy'], 4)}</td><td>{_fmt(ref['val_L_soft'], 4)}</td>"
                 "<td></td><td></td></tr>")
    for row in selection["path"]:
        parts.append(f"<tr><td>{row['lambda']:g}</td><td>{_fmt(row['ref_accuracy'], 4)}</td>"
                     f"<td>{_fmt(row['val_L_soft'], 4)}</td><td>{'yes' if row['settled'] else 'no'}</td>"
                     f"<td>{'yes' if row['accepted'] else 'no'}</td></tr>")
    for lam in selection.get("untried", []):
        parts.append(f"<tr><td>{lam:g}</td><td colspan=4>not trained: a smaller lambda was rejected</td></tr>")
    parts.append("</table>")
    return parts


def _agreement(agreement: dict, selection: dict | None) -> list[str]:
    if "error" in agreement:
        return [f"<p>Agreement with the confident labels: {html.escape(agreement['error'])}</p>"]
    biased = {r["observable"]: r["agreement"] for r in
              ((selection or {}).get("biased", {}).get("best_bin_agreement") or {}).get("by_observable", [])}
    parts = [f"<p>Agreement of the new labels with the confident original labels in the best-observed bin of each "
             f"observable (L's cells: 2^{agreement['log2_bins_int']} intrinsic bins x {agreement['bins_obs']}), on "
             f"{html.escape(agreement['rows'])}:</p><table><tr><th>observable</th><th>confident labels</th>"
             "<th>kept by the new labels</th><th>by the biased model (validation)</th></tr>"]
    for row in agreement["by_observable"]:
        parts.append(f"<tr><td>{html.escape(row['observable'])}</td><td>{row['n']}</td>"
                     f"<td>{_fmt(row['agreement'])}</td><td>{_fmt(biased.get(row['observable']))}</td></tr>")
    parts.append("</table>")
    return parts


def write_html(path: Path, numbers: dict, figures: list[tuple[str, str, str]], report_dir: Path) -> None:
    """Write the page; ``figures`` are (title, PNG file name in ``report_dir``, caption).

    Parameters
    ----------
    path : Path
        The HTML file to write (self-contained: figures embedded as base64 PNG).
    numbers : dict
        The report's numbers (:func:`relabel.report.page.make_report`): L, comparison table, trends, statuses.
    figures : list of (str, str, str)
        Title, PNG file name in ``report_dir`` and caption of each figure, in page order.
    report_dir : Path
        Folder holding the PNG files.
    """
    classes = ", ".join(map(html.escape, numbers["classes"]))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>relabel report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Labeling bias before and after re-labelling</h1><p>Run: {html.escape(numbers['out_dir'])}; "
        f"{numbers['rows']} catalog rows; classes {classes}.</p>",
        *(_training(numbers["training"]) if "training" in numbers else []),
        "<h2>Labeling bias L</h2>", *_bias_table(numbers["labeling_bias"]),
        f"<p>{html.escape(DEFINITIONS['L'])}</p>",
        "<h2>Original labels, new labels and the truth on the same galaxies</h2>",
        *_comparison(numbers["comparison"]),
        *_trends(numbers.get("truth_trends") or [], numbers["classes"][-1]),
        *comparison_html(numbers.get("methods")),
        "<h2>Columns</h2><ul>",
        *[f"<li>{html.escape(axis_label(c))}</li>" for c in numbers["columns"]],
        "</ul>",
    ]
    if "RESOLUTION" in numbers["columns"]:
        parts.append(f"<p>{html.escape(DEFINITIONS['RESOLUTION'])}</p>")
    for title, name, caption in figures:
        data = base64.b64encode((report_dir / name).read_bytes()).decode()
        parts.append(f"<figure><h2>{html.escape(title)}</h2><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
