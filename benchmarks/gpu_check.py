"""The GPU speed targets in one table: extraction, probes and student training, bf16, one GPU, < 8 minutes.

Rows: the measured bf16 matmul peak; extraction (the project's shard loop) against a bare forward pass on the
same batches and a naive one-prompt-at-a-time loop, on a randomly initialised ~1.1B Llama decoder; the probe
fit (5 folds + refit, 33 layers x 4096 dims, both formulations) in torch on the GPU against scikit-learn on the
CPU; full fine-tuning steps of a ~0.5B student. For each: time, throughput, achieved TFLOPS (useful work: no
padding, no LM head a naive loop computes and discards) as a share of the device's spec peak and of the
measured matmul peak, and peak GPU memory. Checks the environment first and stops with one line if unusable.

    bash benchmarks/gpu_check.sh              # on a GPU machine
    bash benchmarks/gpu_check.sh --dry-run    # anywhere: on CPU, every size shrunk (the slow test tier runs it)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's `stages` (and tests.tiny_models' tokenizer)

from gpu_fits import time_probes, time_student  # noqa: E402
from gpu_workloads import Measured, decoder, matmul_peak, questions, time_extraction, time_naive  # noqa: E402

MIN_MEMORY_GIB = 40  # the 1.1B teacher, 33 x 4096 primal probes and the 0.5B student's AdamW state, one at a time
# Dense bf16 tensor-core peaks from the vendors' data sheets, by device name (first match wins).
SPEC_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


@dataclass(frozen=True)
class Sizes:
    teacher: dict[str, Any]
    teacher_vocab: int
    n_examples: int
    batch_size: int
    naive_examples: int
    probe_shape: tuple[int, int]  # (n_layers, d_model)
    probe_rows: tuple[tuple[int, int], ...]  # (n_train, layers sklearn is timed on): dual, then primal
    student: dict[str, Any]
    student_vocab: int
    student_batch: int
    steps: int
    warmup: int = 3
    matmul: tuple[int, int] = field(default=(8192, 20))  # (size, repeats)


FULL = Sizes(  # Llama-3.2-1B-like teacher (1.1B with a 32k vocabulary), Qwen2.5-0.5B-like student (0.49B)
    teacher=dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192
    ),
    teacher_vocab=32000,
    n_examples=2048,
    batch_size=64,
    naive_examples=128,
    probe_shape=(33, 4096),
    probe_rows=((256, 3), (4096, 1)),
    student=dict(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        tied=1,
    ),
    student_vocab=151936,
    student_batch=16,
    steps=20,
)
DRY = Sizes(
    teacher=dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=128
    ),
    teacher_vocab=512,
    n_examples=48,
    batch_size=16,
    naive_examples=8,
    probe_shape=(3, 96),
    probe_rows=((64, 1), (384, 1)),
    student=dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, tied=1
    ),
    student_vocab=512,
    student_batch=4,
    steps=3,
    warmup=1,
    matmul=(256, 3),
)


def fail(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr)
    raise SystemExit(1)


def check_environment(dry_run: bool) -> tuple[torch.device, float | None]:
    """The device and its spec peak (TFLOPS, None if unknown); one clear line and exit 1 where unusable."""
    if dry_run:
        print("DRY RUN on CPU: every size shrunk, CUDA check skipped; these numbers are not GPU measurements")
        return torch.device("cpu"), None
    if not torch.cuda.is_available():
        fail(
            f"no CUDA device visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
            "run on a GPU machine, or pass --dry-run"
        )
    props = torch.cuda.get_device_properties(0)
    if not torch.cuda.is_bf16_supported():
        fail(f"{props.name} (compute capability {props.major}.{props.minor}) has no bfloat16, which every row uses")
    if props.total_memory < MIN_MEMORY_GIB * 2**30:
        fail(f"{props.name} has {props.total_memory / 2**30:.0f} GiB; this check needs {MIN_MEMORY_GIB} GiB")
    peak = next((tflops for name, tflops in SPEC_TFLOPS if name in props.name), None)
    print(
        f"{props.name}: {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB, compute "
        f"capability {props.major}.{props.minor}, spec bf16 dense peak {peak or 'unknown'} TFLOPS; torch "
        f"{torch.__version__}, CUDA {torch.version.cuda}"
    )
    return torch.device("cuda"), peak


def measure(sizes: Sizes, device: torch.device, workdir: Path) -> list[Measured]:
    from tests.tiny_models import make_tokenizer

    rows = [matmul_peak(device, *sizes.matmul)]
    tokenizer = make_tokenizer()
    start = time.perf_counter()
    teacher = decoder(sizes.teacher, sizes.teacher_vocab, tokenizer, device)
    n_params = sum(p.numel() for p in teacher.parameters())
    created = time.perf_counter() - start
    split = questions(sizes.n_examples)
    for row in [
        *time_extraction(teacher, tokenizer, split, sizes.batch_size, workdir, device),
        time_naive(teacher, tokenizer, split, sizes.naive_examples, workdir / "naive"),
    ]:
        row.note = f"{n_params / 1e9:.3g}B-parameter decoder (created in {created:.0f} s), batch {sizes.batch_size}"
        rows.append(row)
    del teacher
    for n_train, sklearn_layers in sizes.probe_rows:
        rows += time_probes(*sizes.probe_shape, n_train, sklearn_layers, device)
    rows.append(
        time_student(sizes.student, sizes.student_vocab, tokenizer, sizes.student_batch, sizes.steps, sizes.warmup)
    )
    return rows


def table(rows: list[Measured], spec_peak: float | None) -> list[str]:
    measured_peak = rows[0].flops / rows[0].seconds / 1e12
    lines = [
        "| measurement | seconds | throughput | tokens/s | TFLOPS | share of spec peak | share of measured peak "
        "| peak GPU memory | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        tflops = row.flops / row.seconds / 1e12 if row.flops else None
        cells = [
            row.name,
            f"{row.seconds:.3g}",
            f"{row.count / row.seconds:.4g} {row.unit}/s",
            f"{row.tokens / row.seconds:.4g}" if row.tokens else "-",
            f"{tflops:.4g}" if tflops else "-",
            f"{tflops / spec_peak:.1%}" if tflops and spec_peak else "-",
            f"{tflops / measured_peak:.1%}" if tflops else "-",
            f"{row.peak_bytes / 2**30:.2f} GiB" if row.peak_bytes is not None else "n/a (CPU)",
            row.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, every size shrunk: checks the script, not a GPU")
    args = parser.parse_args()
    start = time.perf_counter()
    device, spec_peak = check_environment(args.dry_run)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as workdir:
        rows = measure(DRY if args.dry_run else FULL, device, Path(workdir))
    print("\n".join(table(rows, spec_peak)))
    by_name = {row.name: row for row in rows}
    extract, bare, naive = (by_name[name] for name in ("extract", "bare forward", "naive loop"))
    print(
        f"extract / bare forward = {bare.seconds / extract.seconds * extract.count / bare.count:.2f}; "
        f"extract / naive loop = {extract.count / extract.seconds / (naive.count / naive.seconds):.1f}x; "
        f"total {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
