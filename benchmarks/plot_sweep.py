"""Test accuracy against labeled examples, one line per arm, from `dvc exp show --json`.

Run after a `data.labeled` sweep (README, "The limited-data study"):
    python benchmarks/plot_sweep.py --out sweep.csv [--png sweep.png]
Writes a wide CSV (labeled, <arm>...), prints it as a table, and draws a PNG when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ARMS = ("gold", "logit_kd", "cloze_kd", "probe_kd", "hld", "oracle")
SUMMARY = "data/summary/metrics.json"


def runs(node: object) -> Iterator[dict]:
    """Every experiment/commit record in DVC 3's nested `exp show --json` output."""
    if isinstance(node, dict):
        if isinstance(node.get("data"), dict) and "params" in node["data"]:
            yield node["data"]
        for value in node.values():
            yield from runs(value)
    elif isinstance(node, list):
        for value in node:
            yield from runs(value)


def sweep_table(exp_show: object) -> dict[int, dict[str, float]]:
    """{labeled: {arm: test accuracy}} (the last run seen wins for a repeated labeled size)."""
    table: dict[int, dict[str, float]] = defaultdict(dict)
    for run in runs(exp_show):
        params = run["params"].get("params.yaml", {}).get("data", {})
        metrics = (run.get("metrics") or {}).get(SUMMARY, {}).get("data", {})
        labeled = params.get("data", {}).get("labeled")
        if labeled is None or not metrics:
            continue
        table[int(labeled)].update({arm: metrics[f"{arm}_test_acc"] for arm in ARMS if f"{arm}_test_acc" in metrics})
    return dict(sorted(table.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("sweep.csv"))
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=True)
    table = sweep_table(json.loads(shown.stdout))
    if not table:
        sys.exit("no experiment with data.labeled and summary metrics found (run the sweep first)")
    with args.out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["labeled", *ARMS])
        for labeled, accuracies in table.items():
            writer.writerow([labeled, *(accuracies.get(arm, "") for arm in ARMS)])
    print(args.out.read_text())
    if args.png:
        import matplotlib.pyplot as plt  # optional: only for the picture

        for arm in ARMS:
            points = [(n, acc[arm]) for n, acc in table.items() if arm in acc]
            plt.plot(*zip(*points, strict=True), marker="o", label=arm)
        plt.xscale("log", base=2)
        plt.xlabel("labeled examples")
        plt.ylabel("test accuracy")
        plt.legend()
        plt.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()
