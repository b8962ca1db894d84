"""Estimate store size and extraction time for common teachers on ARC and MMLU (README "Scaling up").

Estimates, not measurements, from the formulas:
  store bytes  = n_examples x (n_layers + 1) x d_model x bytes_per_value   (+ option logits, negligible)
  forward FLOP = 2 x n_params x n_examples x mean_prompt_tokens
  time         = FLOP / (gpu_peak_flops x utilisation)
Run: python benchmarks/estimate_extract.py [--peak-tflops 989 --utilisation 0.3]
"""

from __future__ import annotations

import argparse

# Public model configs: (name, parameters, decoder blocks, d_model).
TEACHERS = [
    ("Qwen2.5-0.5B", 0.49e9, 24, 896),
    ("Qwen2.5-7B", 7.6e9, 28, 3584),
    ("Llama-3.1-8B", 8.0e9, 32, 4096),
    ("Qwen2.5-14B", 14.7e9, 48, 5120),
    ("Qwen2.5-32B", 32.5e9, 64, 5120),
    ("Llama-3.1-70B", 70.6e9, 80, 8192),
]
# (name, examples in all splits, mean prompt tokens). ARC: mean prompt length measured on the real files
# with the default template (269 / 227 characters) at ~4 characters per token; MMLU: assumed 150 tokens.
DATASETS = [("ARC-Challenge", 2590, 67), ("ARC-Easy", 5197, 57), ("MMLU", 15858, 150)]


def store_gib(n_examples: int, n_blocks: int, d_model: int, bytes_per_value: int = 2) -> float:
    return n_examples * (n_blocks + 1) * d_model * bytes_per_value / 2**30


def gpu_minutes(n_params: float, n_examples: int, tokens: int, peak_tflops: float, utilisation: float) -> float:
    return 2 * n_params * n_examples * tokens / (peak_tflops * 1e12 * utilisation) / 60


def human(minutes: float) -> str:
    return f"{minutes * 60:.0f} s" if minutes < 1 else f"{minutes:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--utilisation", type=float, default=0.3, help="share of peak a short-prompt forward reaches")
    args = parser.parse_args()
    header = "| teacher | layers stored | d_model | " + " | ".join(
        f"{name}: store (fp16) / GPU time" for name, _, _ in DATASETS
    )
    print(header + " |")
    print("|---" * (3 + len(DATASETS)) + "|")
    for name, n_params, n_blocks, d_model in TEACHERS:
        cells = [
            f"{store_gib(n, n_blocks, d_model):.2f} GiB / "
            f"{human(gpu_minutes(n_params, n, t, args.peak_tflops, args.utilisation))}"
            for _, n, t in DATASETS
        ]
        print(f"| {name} | {n_blocks + 1} | {d_model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
