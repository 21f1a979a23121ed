"""Print the measured tables of docs/simulator.md from the simulator itself.

Catalog rows only (no images), so it takes a minute: ``python docs/simulator_tables.py``.
Every figure in the sections "Measured labeling bias" and "Measured label bias per
preset" comes from here; rerun it after any change to the population or the volunteers.
"""

from __future__ import annotations

import numpy as np

from relabel.bias.metric import bias_with_errors
from relabel.simulate import PRESETS, simulate_galaxies
from relabel.simulate.measure import INTRINSIC, confident_labels, preset_label_bias

OBSERVABLES = ["RESOLUTION", "REDSHIFT", "PSF_FWHM"]


def quartile_table(table) -> str:
    """Labels against the truth per RESOLUTION quartile of the whole survey, worst first."""
    labels = confident_labels(table)
    spiral = (table["TRUE_CLASS"] == "spiral").to_numpy()
    seen = table["ARMS_SEEN"].to_numpy()
    res = table["RESOLUTION"].to_numpy()
    edges = np.quantile(res, [0, 0.25, 0.5, 0.75, 1])
    quartile = np.clip(np.searchsorted(edges, res, side="right") - 1, 0, 3)
    lines = ["| quartile | RESOLUTION | true spiral | arms seen / true spirals | labelled spiral / all "
             "| labelled spiral / confidently labelled | uncertain | true spirals -> spiral | -> elliptical "
             "| -> uncertain |", "|---" * 10 + "|"]
    for q in range(4):
        on = quartile == q
        sp = on & spiral
        sure = on & (labels >= 0)
        lines.append(
            f"| {q + 1} | {edges[q]:.2f}-{edges[q + 1]:.2f} | {spiral[on].mean():.3f} | {seen[sp].mean():.3f} "
            f"| {(labels[on] == 1).mean():.3f} | {(labels[sure] == 1).mean():.3f} | {(labels[on] < 0).mean():.3f} "
            f"| {(labels[sp] == 1).mean():.3f} | {(labels[sp] == 0).mean():.3f} | {(labels[sp] < 0).mean():.3f} |")
    return "\n".join(lines)


def within_bins(table) -> tuple[np.ndarray, np.ndarray]:
    """True and labelled spiral fraction per RESOLUTION quartile inside 16 intrinsic bins, pooled."""
    leaf = np.zeros(len(table), dtype=int)
    for column in ["ABS_MAG", "R50_KPC", "COLOR_GR", "R50_KPC"]:
        values = table[column].to_numpy()
        split = leaf * 2
        for k in np.unique(leaf):
            inside = leaf == k
            split[inside & (values >= np.median(values[inside]))] += 1
        leaf = split
    spiral = (table["TRUE_CLASS"] == "spiral").to_numpy()
    labelled = confident_labels(table) == 1
    res = table["RESOLUTION"].to_numpy()
    quartile = np.zeros(len(table), dtype=int)
    for k in np.unique(leaf):
        inside = np.flatnonzero(leaf == k)
        quartile[inside] = np.searchsorted(np.quantile(res[inside], [0.25, 0.5, 0.75]), res[inside], side="right")
    return (np.array([spiral[quartile == q].mean() for q in range(4)]),
            np.array([labelled[quartile == q].mean() for q in range(4)]))


def metric(table, labels) -> tuple[float, float, float]:
    """L, its error and its null for ``labels`` with the workflow's bins (16 x 5, three observables)."""
    result = bias_with_errors(table[INTRINSIC], table[OBSERVABLES], labels, 2, 4, 5, ["high", "low", "low"],
                              n_boot=20, n_null=20, seed=0)
    return result.L, result.L_std, result.null_L


def main() -> None:
    small, large = simulate_galaxies(4000, 0), simulate_galaxies(100_000, 0)
    print("## default, 4000 galaxies, seed 0\n")
    print(quartile_table(small))
    print("\n100 000 rows:\n")
    print(quartile_table(large))
    for name, table in (("4000", small), ("100 000", large)):
        true, labelled = within_bins(table)
        print(f"\nwithin intrinsic bins ({name}): true {np.round(true, 3)}  labelled {np.round(labelled, 3)}")
    for name, table in (("4000", small), ("100 000", large)):
        truth = (table["TRUE_CLASS"] == "spiral").to_numpy().astype(int)
        labels = confident_labels(table)
        sure = labels >= 0
        L, err, null = metric(table, truth)
        print(f"\nL ({name}): true classes {L:.3f} +- {err:.3f} null {null:.3f} excess {L - null:.3f}", end="")
        L, err, null = metric(table[sure], labels[sure])
        print(f"; labels {L:.3f} +- {err:.3f} null {null:.3f} excess {L - null:.3f}")
    print("\n## presets\n")
    print("| preset | L, seed 0 / 1 | null L | excess | confidently labelled | true spirals confidently labelled "
          "| arms seen / true spirals | lost to resolution | lost to S/N |")
    print("|---" * 9 + "|")
    for name in PRESETS:
        one, two = preset_label_bias(name, seed=0), preset_label_bias(name, seed=1)
        seen = simulate_galaxies(4000, 0, name)
        spiral = seen["TRUE_CLASS"] == "spiral"
        print(f"| {name} | {one.L:.3f} / {two.L:.3f} | {one.null_L:.3f} / {two.null_L:.3f} "
              f"| {one.L - one.null_L:.3f} / {two.L - two.null_L:.3f} | {one.n_labelled} / {one.n} "
              f"| {one.labelled_share_true_spiral:.2f} | {seen['ARMS_SEEN'][spiral].mean():.2f} "
              f"| {one.lost_to_resolution:.3f} | {one.lost_to_snr:.3f} |")
    print("\n| preset | observable | true | labelled | P_DK |\n|---|---|---|---|---|")
    for name in PRESETS:
        for column, frame in preset_label_bias(name, seed=0).quartiles.items():
            if column == "PSF_FWHM":
                continue
            cells = [" / ".join(f"{v:.2f}" for v in frame[key]) for key in ("true", "labelled", "dont_know")]
            print(f"| {name} | {column} | {cells[0]} | {cells[1]} | {cells[2]} |")


if __name__ == "__main__":
    main()
