"""Speed of the labeling-bias metric L, and its null checked against docs/bias.md's noise-floor formula.

Run from the repository root (it takes a minute or two; be kind to shared machines):

    nice python benchmarks/bench_bias.py

Table: 1,000,000 rows, 3 float32 intrinsic columns, 2 float32 observables
(RESOLUTION best high, REDSHIFT best low), 2 classes whose share depends on
the intrinsic columns and on RESOLUTION; 2^9 intrinsic bins x 8 observable bins.
Measures one evaluation, 100 bootstrap repetitions (1 and 2 threads), the
null L (single evaluations and bootstrap repetitions) against the formula, and
the plain loop implementation of tests/test_bias.py on a smaller table for a
speed ratio. Prints a short table; writes benchmarks/results/bench_bias.json.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from relabel.bias import bias_with_errors, bin_fractions, labeling_bias

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "bias"))
from test_metric import reference_L  # noqa: E402  (the plain implementation lives with the tests)

N = 1_000_000
DEPTH = 9
BINS = 8
N_BOOT = 100
N_REF = 200_000
BEST = ["high", "low"]


def survey_table(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mag = rng.normal(-20.5, 1.0, n).astype(np.float32)
    size = rng.lognormal(1.0, 0.35, n).astype(np.float32)
    colour = rng.normal(0.6, 0.2, n).astype(np.float32)
    redshift = rng.uniform(0.01, 0.12, n).astype(np.float32)
    resolution = (size / (0.03 + 8 * redshift) * rng.lognormal(0, 0.2, n)).astype(np.float32)
    # Spirals are bluer and bigger; the biased labels lose them at poor resolution.
    p_spiral = 0.55 - 0.6 * (colour - 0.6) + 0.05 * (size - 2.9) - 0.12 * np.exp(-resolution / 3)
    labels = (rng.uniform(size=n) < np.clip(p_spiral, 0.02, 0.98)).astype(np.int64)
    return [mag, size, colour], [resolution, redshift], labels


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start


def timed_cpu(func, *args, **kwargs):
    """Wall and CPU seconds: on a shared machine the CPU time shows the code's own cost."""
    cpu = time.process_time()
    out, wall = timed(func, *args, **kwargs)
    return out, wall, time.process_time() - cpu


def noise_floor(intrinsic, observables, labels, n_objects: int) -> float:
    """docs/bias.md: sqrt(2 (B-1)/B * p(1-p) / n_bin), p per leaf and class, averaged as L averages."""
    bf = bin_fractions(intrinsic, observables, labels, 2, DEPTH, BINS, BEST)
    n_leaf = bf.n_leaf.astype(float)
    p = bf.counts[0].sum(axis=1) / np.maximum(n_leaf, 1)[:, None]  # (leaves, K): bins of one observable
    n_bin = n_leaf * (n_objects / n_leaf.sum()) / BINS
    var = 2 * (BINS - 1) / BINS * p * (1 - p) / np.maximum(n_bin, 1)[:, None]
    return math.sqrt(var.mean())


def main() -> None:
    intrinsic, observables, labels = survey_table(N)
    args = (intrinsic, observables, labels, 2, DEPTH, BINS, BEST)
    figures: dict[str, object] = {
        "rows": N, "intrinsic_bins": 2**DEPTH, "observable_bins": BINS, "observables": 2, "classes": 2,
        "n_boot": N_BOOT, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "numpy": np.__version__,
        "load_average_at_start": os.getloadavg()[0],
    }

    L, t_eval = timed(labeling_bias, *args)
    figures.update(L=L, eval_s=t_eval)

    boot1, t_boot1, cpu_boot1 = timed_cpu(bias_with_errors, *args, n_boot=N_BOOT, n_null=0, seed=0, workers=1)
    boot2, t_boot2, cpu_boot2 = timed_cpu(bias_with_errors, *args, n_boot=N_BOOT, n_null=0, seed=0, workers=2)
    assert boot1.L == boot2.L
    figures.update(L_boot=boot1.L, L_std=boot1.L_std, boot_1_thread_s=t_boot1, boot_1_thread_cpu_s=cpu_boot1,
                   boot_2_threads_s=t_boot2, boot_2_threads_cpu_s=cpu_boot2,
                   per_repetition_1_thread_s=t_boot1 / N_BOOT)

    single_null, t_null = timed(bias_with_errors, *args, n_boot=0, n_null=10, seed=0, workers=2)
    boot_null, _ = timed(bias_with_errors, *args, n_boot=1, n_null=10, seed=0, workers=2)
    floor = noise_floor(*args[:3], N)
    figures.update(null_single=single_null.null_L, null_single_std=single_null.null_L_std,
                   null_boot=boot_null.null_L, null_boot_std=boot_null.null_L_std, noise_floor=floor,
                   null_10_single_s=t_null)

    small = [c[:N_REF] for c in intrinsic], [o[:N_REF] for o in observables], labels[:N_REF]
    expected, t_ref = timed(reference_L, *small, 2, DEPTH, BINS, BEST)
    got, t_fast = timed(labeling_bias, *small, 2, DEPTH, BINS, BEST)
    figures.update(ref_rows=N_REF, ref_s=t_ref, fast_s_at_ref_rows=t_fast, speed_ratio=t_ref / t_fast,
                   ref_abs_diff=abs(got - expected))

    rows = [
        ("one evaluation, 1M rows (incl. sorting)", f"{t_eval:.2f} s", f"L = {L:.4f}"),
        (f"{N_BOOT} bootstrap repetitions, 1 thread", f"{t_boot1:.1f} s",
         f"L = {boot1.L:.4f} +- {boot1.L_std:.4f}  (CPU {cpu_boot1:.1f} s)"),
        (f"{N_BOOT} bootstrap repetitions, 2 threads", f"{t_boot2:.1f} s", f"same numbers  (CPU {cpu_boot2:.1f} s)"),
        ("null, 10 shuffles, single evaluations", f"{t_null:.1f} s",
         f"{single_null.null_L:.4f} +- {single_null.null_L_std:.4f}"),
        ("null, 10 shuffles, bootstrap repetitions", "", f"{boot_null.null_L:.4f} +- {boot_null.null_L_std:.4f}"),
        ("noise floor formula (x sqrt 2)", "", f"{floor:.4f} ({floor * math.sqrt(2):.4f})"),
        (f"plain loops, {N_REF} rows", f"{t_ref:.2f} s", f"vectorised {t_fast * 1e3:.0f} ms: x{t_ref / t_fast:.0f}, "
         f"|diff| {abs(got - expected):.1e}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"load average at start: {figures['load_average_at_start']:.2f}")
    for name, seconds, value in rows:
        print(f"{name:<{width}}  {seconds:>8}  {value}")
    out = HERE / "results" / "bench_bias.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
