"""Mean, sd and a 95% t-interval of each summary metric over experiments, from `dvc exp show --json`.

After a seed sweep (README, "Seeds"):
    for s in 0 1 2 3 4; do dvc exp run --queue -S seed=$s -n seed-$s; done
    dvc queue start -j 1                                   # one at a time on a CPU; wait for `dvc queue status`
    python benchmarks/seed_summary.py seed-0 seed-1 seed-2 seed-3 seed-4   # no names: every experiment
    python benchmarks/seed_summary.py --metrics '_test_acc$|_pgr$' --exp-json shown.json   # a saved `exp show`
    python benchmarks/seed_summary.py --study pre-seed-0 pre-seed-1 pre-seed-2   # the pre-training study's summary
Prints a markdown table: metric, n, mean, sd, the 95% t-interval of the mean, min and max. The interval treats the
experiments as independent draws (one seed each): it is about the spread over seeds, not over test questions,
which the per-run bootstrap intervals in data/summary/metrics.json describe.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SUMMARY = "data/summary/metrics.json"
DEFAULT_METRICS = r"_test_acc$|_test_cloze_acc$|_pgr$|^diff_[a-z_]+$"
STUDY_SUMMARY = "data/pretrain/summary/metrics.json"
STUDY_METRICS = r"_val_logppl$|_downstream_acc$|_train_flops$"
# Two-sided 95% quantiles of Student's t (0.975), df 1..30; beyond, a Cornish-Fisher expansion (error < 1e-4).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
         2.042)  # fmt: skip
Z_975 = 1.959964


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("a t-interval needs at least two experiments")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, sd, low, high): the 95% t-interval of the mean of `values` (sd with n - 1)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    half = t_quantile(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return mean, sd, mean - half, mean + half


def records(node: object, in_experiments: bool = False) -> Iterator[tuple[str, bool, dict]]:
    """(name or rev, is an experiment, data) of every record in DVC 3's nested `exp show --json` output."""
    if isinstance(node, dict):
        if isinstance(node.get("data"), dict):
            yield str(node.get("name") or node.get("rev")), in_experiments, node["data"]
        for key, value in node.items():
            yield from records(value, in_experiments or key == "experiments")
    elif isinstance(node, list):
        for value in node:
            yield from records(value, in_experiments)


def collect(
    exp_show: object, names: list[str], pattern: str, summary: str = SUMMARY
) -> tuple[list[str], dict[str, list[float]]]:
    """(experiments used, metric -> one value per experiment) for the metrics every used experiment has."""
    chosen: dict[str, dict] = {}
    for name, is_experiment, data in records(exp_show):
        metrics = (data.get("metrics") or {}).get(summary, {}).get("data")
        if metrics and ((name in names) if names else is_experiment):
            chosen.setdefault(name, metrics)
    missing = sorted(set(names) - set(chosen))
    if missing:
        sys.exit(f"no summary metrics for experiment(s) {', '.join(missing)} in `dvc exp show`")
    common = set.intersection(*(set(m) for m in chosen.values())) if chosen else set()
    keys = [key for key in next(iter(chosen.values()), {}) if key in common and re.search(pattern, key)]
    return list(chosen), {key: [float(chosen[name][key]) for name in chosen] for key in keys}


def table(values: dict[str, list[float]]) -> str:
    lines = ["| metric | n | mean | sd | 95% t-interval | min | max |", "|---|---|---|---|---|---|---|"]
    for key, series in values.items():
        mean, sd, low, high = t_interval(series)
        lines.append(f"| `{key}` | {len(series)} | {mean:.4f} | {sd:.4f} | [{low:.4f}, {high:.4f}] | "
                     f"{min(series):.4f} | {max(series):.4f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="experiment names or revs (default: every experiment)")
    parser.add_argument("--metrics", help=f"metric name regex (default {DEFAULT_METRICS}; --study: {STUDY_METRICS})")
    parser.add_argument("--study", action="store_true", help=f"the pre-training study's summary ({STUDY_SUMMARY})")
    parser.add_argument("--exp-json", type=Path, help="read this saved `dvc exp show --json` instead of running it")
    args = parser.parse_args()
    if args.exp_json:
        shown = json.loads(args.exp_json.read_text())
    else:
        done = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=True)
        shown = json.loads(done.stdout)
    pattern = args.metrics or (STUDY_METRICS if args.study else DEFAULT_METRICS)
    used, values = collect(shown, args.experiments, pattern, STUDY_SUMMARY if args.study else SUMMARY)
    if len(used) < 2:
        sys.exit(f"need at least two experiments with summary metrics; found {used or 'none'}")
    print(f"{len(used)} experiments: {', '.join(used)}\n")
    print(table(values))


if __name__ == "__main__":
    main()
