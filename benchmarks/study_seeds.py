"""The pre-training study over seeds in one process: the same library calls as the stages (corpus, teacher_signal,
pretrain@<arm>, pretrain_eval@<arm>, pretrain_summary), without a process start and a `dvc` call per stage, which
on a loaded 2-core machine cost more than the training. Reads the study's params from a params.yaml; prints per
seed and arm the val log-perplexity, downstream accuracy and FLOPs, then mean and 95% t-interval over seeds of each
arm and of each arm's paired difference to NLL. `dvc exp run pretrain_summary -S pretrain.seed=<s>` then
`python benchmarks/seed_summary.py --study ...` gives the same numbers through DVC.

    python benchmarks/study_seeds.py --teacher data/models/teacher --test data/prepared/test.parquet --seeds 0 1 2
    # or one process per seed (`--out s0.json` ...), then the table over all of them:
    python benchmarks/study_seeds.py --combine s0.json s1.json s2.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, help="a models@teacher folder")
    parser.add_argument("--test", type=Path, help="prepared multiple-choice test split (parquet)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["nll", "kd", "hldc", "hldf"])
    parser.add_argument("--out", type=Path, help="write every seed's summary here (json)")
    parser.add_argument("--combine", type=Path, nargs="+", help="only print the table over these --out files")
    args = parser.parse_args()
    if args.combine:
        loaded = [json.loads(path.read_text()) for path in args.combine]
        print_table({int(seed): summary for seeds in loaded for seed, summary in seeds.items()}, args.arms)
        return
    if args.teacher is None or args.test is None:
        parser.error("--teacher and --test are required (or --combine)")

    from stages.core.config import build
    from stages.core.params import read_yaml, section
    from stages.pretraining.corpus import read_corpus
    from stages.pretraining.corpus import run as pack
    from stages.pretraining.evaluation import evaluate_arm
    from stages.pretraining.run import run_arm
    from stages.pretraining.setup import read_arm_setup, read_corpus_setup, read_eval_config, read_signal_config
    from stages.pretraining.signal_store import run as cache_signal
    from stages.pretraining.summary import summarize
    from stages.sources.prompts import PromptConfig

    params = read_yaml(args.params)
    prompt = build(PromptConfig, section(params, "prompt"), "prompt")
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        start = time.perf_counter()
        pack(*read_corpus_setup(params), args.teacher, work / "corpus")
        cache_signal(read_signal_config(params), read_corpus(work / "corpus")[0], args.teacher, work / "signal.zarr")
        print(f"corpus and teacher signal: {time.perf_counter() - start:.0f} s", flush=True)
        for seed in args.seeds:
            start = time.perf_counter()
            evaluations = []
            for arm in args.arms:
                setup = dataclasses.replace(read_arm_setup(arm, params), seed=seed)
                student = work / f"{seed}" / arm
                run_arm(setup, work / "corpus", work / "signal.zarr", args.teacher, student)
                evaluations.append(work / f"{seed}" / f"{arm}.json")
                evaluation = read_eval_config(params)
                evaluate_arm(arm, student, work / "corpus", args.test, prompt, evaluation, evaluations[-1])
            results[seed] = summarize(evaluations, work / f"{seed}" / "summary.json")
            line = ", ".join(f"{arm} {results[seed][f'{arm}_val_logppl']:.4f}" for arm in args.arms)
            print(f"seed {seed} ({time.perf_counter() - start:.0f} s): val log-ppl {line}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print_table(results, args.arms)


def print_table(results: dict[int, dict[str, float]], arms: list[str]) -> None:
    """Mean, sd, 95% t-interval over seeds of each arm's metrics and of its paired difference to NLL."""
    from seed_summary import t_interval

    keys = [f"{arm}_{metric}" for metric in ("val_logppl", "downstream_acc", "train_flops") for arm in arms]
    keys += [f"{arm}_minus_nll_val_logppl" for arm in arms if arm != "nll"]
    print(f"\n{len(results)} seeds: {sorted(results)}\n")
    print("| metric | mean | sd | 95% t-interval | min | max |\n|---|---|---|---|---|---|")
    for key in keys:
        values = [results[seed][key] for seed in sorted(results)]
        mean, sd, low, high = t_interval(values)
        print(f"| `{key}` | {mean:.4g} | {sd:.3g} | [{low:.4g}, {high:.4g}] | {min(values):.4g} | {max(values):.4g} |")


if __name__ == "__main__":
    main()
