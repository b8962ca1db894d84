"""Slot probe vs per-option probe, with one teacher, on several datasets: one markdown table.

For each dataset: `prepare`, `extract@{labeled,transfer,val,test}` (once: the stores hold the answer-position and
the per-option states), then `probe` once per kind; each row reads the probe's metrics.json (the best
cross-validated layer, as `probe.layer: auto` picks it) and the teacher's own letter accuracy on test. The teacher
(`models@teacher`) is resolved once. Runs the stage commands exactly as dvc.yaml does, with a params file per
dataset (the repo's params.yaml plus `--set` overrides and the dataset's sizes).

    python benchmarks/compare_probe_kinds.py --workdir /tmp/kinds --data ../shared/data \\
        --datasets builtin arc_easy arc_challenge aqua_rat [--set teacher.model=/path/to/model]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("labeled", "transfer", "val", "test")
KINDS = ("logistic", "per_option")
# Sizes per dataset; AQuA-RAT's public copy has no training split: labeled + transfer + val come out of dev (254).
SIZES = {
    "builtin": {"labeled": 128, "transfer": 64, "val": 256, "test": 512},
    "arc_easy": {"labeled": 256, "transfer": 64, "val": 256, "test": 1024},
    "arc_challenge": {"labeled": 256, "transfer": 64, "val": 256, "test": 1024},
    "aqua_rat": {"labeled": 128, "transfer": 30, "val": 96, "test": 254},
}
LOCAL = {"arc_easy": "arc/ARC-Easy", "arc_challenge": "arc/ARC-Challenge", "aqua_rat": "aqua_rat"}


def stage(*args: str, params: Path) -> None:
    command = [sys.executable, "-m", "stages", *args, "--params-file", str(params)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{result.stderr[-3000:]}")


def with_overrides(params: dict, overrides: list[str]) -> dict:
    params = copy.deepcopy(params)
    for override in overrides:
        key, value = override.split("=", 1)
        *path, last = key.split(".")
        node = params
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return params


def dataset_params(base: dict, dataset: str, data_root: Path) -> tuple[dict, Path]:
    """(params, the folder prepare depends on) of one dataset."""
    params = copy.deepcopy(base)
    raw = data_root / LOCAL[dataset] if dataset in LOCAL else ROOT / "data" / "raw"
    params["data"].update({"dataset": dataset, "path": str(raw) if dataset in LOCAL else None, **SIZES[dataset]})
    return params, raw


def measure(dataset: str, base: dict, workdir: Path, data_root: Path, teacher: Path) -> list[dict]:
    folder = workdir / dataset
    folder.mkdir(parents=True, exist_ok=True)
    params, raw = dataset_params(base, dataset, data_root)
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    stage("prepare", "--raw", str(raw), "--out", str(folder / "prepared"), params=params_file)
    for split in SPLITS:
        if not (folder / "hidden" / f"{split}.zarr").exists():
            stage("extract", split, "--data", str(folder / "prepared" / f"{split}.parquet"), "--teacher",
                  str(teacher), "--out", str(folder / "hidden" / f"{split}.zarr"), "--shots",
                  str(folder / "prepared" / "shots.parquet"), params=params_file)  # fmt: skip
    rows = []
    for kind in KINDS:
        params["probe"]["kind"] = kind
        params_file.write_text(yaml.safe_dump(params))
        out = folder / f"probe-{kind}"
        stage("probe", "--prepared", str(folder / "prepared"), "--hidden", str(folder / "hidden"), "--out", str(out),
              params=params_file)  # fmt: skip
        metrics = json.loads((out / "metrics.json").read_text())
        rows.append({"dataset": dataset, "kind": kind, **metrics})
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | probe | best layer (cv) | cv acc | val acc | test acc | teacher letters, test |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        teacher = row.get("teacher_test_acc")
        lines.append(
            f"| {row['dataset']} | {row['kind']} | {row['best_layer']} | {row['cv_acc']:.3f} | {row['val_acc']:.3f} "
            f"| {row['test_acc']:.3f} | {'n/a' if teacher is None else f'{teacher:.3f}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="../shared/data")
    parser.add_argument("--datasets", nargs="+", default=list(SIZES))
    parser.add_argument("--set", action="append", default=[], help="params override, e.g. extract.batch_size=16")
    args = parser.parse_args()
    base = with_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), args.set)
    args.workdir.mkdir(parents=True, exist_ok=True)
    base_file = args.workdir / "params.yaml"
    base_file.write_text(yaml.safe_dump(base))
    teacher = args.workdir / "teacher"
    if not (teacher / "model_ref.json").exists():
        stage("models", "teacher", "--out", str(teacher), params=base_file)
    rows = [row for dataset in args.datasets for row in measure(dataset, base, args.workdir, args.data, teacher)]
    print(table(rows))
    (args.workdir / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
