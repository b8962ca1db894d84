"""The measurements `benchmarks/gpu_check.py` prints, each through the project's own code path.

Extraction runs `stages.store.teacher_pass.write_shards` (the `LayerGatherer` and the zarr shard writer) on an
in-memory teacher, the probes `stages.probing.fit.fit_probes`, the student steps `stages.student.loop.step_loss`
and `optimiser_step` under the project's accelerate setup. Sizes come from the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

WORDS = "apple stone river cloud fox dog sky brown quick lazy jumps over the colour question answer".split()


@dataclass
class Measured:
    """One row of the table."""

    name: str
    seconds: float
    count: float = 0.0  # examples, fits or steps done in `seconds`
    unit: str = ""  # what count counts
    tokens: float = 0.0
    flops: float = 0.0  # useful floating-point work (not padding, not what a naive loop wastes)
    peak_bytes: int | None = None
    note: str = ""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def watched(device: torch.device) -> Iterator[dict[str, Any]]:
    """Wall seconds (device synchronised) and the peak device memory of the block, in the yielded dict."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    out: dict[str, Any] = {"start": time.perf_counter()}
    yield out
    synchronize(device)
    out["seconds"] = time.perf_counter() - out["start"]
    out["peak"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def matmul_peak(device: torch.device, size: int, repeats: int) -> Measured:
    """The achievable bf16 matmul rate: the measured peak the other rows are a share of."""
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b  # warm-up: library initialisation
    with watched(device) as clock:
        for _ in range(repeats):
            a @ b
    flops = 2.0 * size**3 * repeats
    return Measured(f"bf16 matmul {size}^3", clock["seconds"], repeats, "matmuls", 0, flops, clock["peak"])


def llama_config(shape: dict[str, Any], vocab_size: int, tokenizer: Any) -> Any:
    """A Llama config of `shape` (its LlamaConfig fields; `tied`: tie the LM head to the embeddings)."""
    from transformers import LlamaConfig

    fields: dict[str, Any] = {k: v for k, v in shape.items() if k != "tied"}
    fields.update(vocab_size=max(vocab_size, len(tokenizer)), max_position_embeddings=2048)
    fields.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaConfig(tie_word_embeddings=bool(shape.get("tied", False)), **fields)


def decoder(shape: dict[str, Any], vocab_size: int, tokenizer: Any, device: torch.device) -> Any:
    """A randomly initialised Llama decoder in bf16, created on the device (no weights on disk)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model: Any = LlamaForCausalLM(llama_config(shape, vocab_size, tokenizer))
    return model.to(torch.bfloat16)


def questions(n_examples: int, seed: int = 0) -> Any:
    """A split of synthetic 4-option questions of varied length (10 to 60 words)."""
    from stages.sources.schema import Split

    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(10, 60)))) for _ in range(n_examples)]
    choices = [[" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(4)] for _ in texts]
    answers = rng.integers(0, 4, size=n_examples)
    ids = [f"q{i}" for i in range(n_examples)]
    return Split(ids, texts, choices, answers, [None] * n_examples, [None] * n_examples)


def forward_flops(model: Any, lengths: np.ndarray) -> float:
    """Useful forward FLOPs of the decoder blocks: 2 x block parameters per token + causal attention."""
    config = model.config
    block_params = sum(p.numel() for p in model.model.layers.parameters())
    attention = 2.0 * config.num_hidden_layers * config.hidden_size * float((lengths.astype(np.float64) ** 2).sum())
    return 2.0 * block_params * float(lengths.sum()) + attention


def time_extraction(
    model: Any, tokenizer: Any, split: Any, batch_size: int, workdir: Path, device: torch.device
) -> list[Measured]:
    """extract (the project's shard loop, store written), a bare forward on the same batches, a naive loop."""
    from stages.modeling.letters import letter_token_ids
    from stages.sources.prompts import format_prompt
    from stages.store.batches import tokenize_prompts

    prompts = [format_prompt(q, c) for q, c in zip(split.questions, split.choices, strict=True)]
    tokens = tokenize_prompts(tokenizer, prompts, split.ids)
    letter_ids, letter_rule = letter_token_ids(tokenizer, 4, "teacher")
    layers = list(range(model.config.num_hidden_layers + 1))
    run_extract(model, tokenizer, tokens, split, batch_size, workdir / "warm", device, layers, letter_ids, letter_rule)
    rows = []
    for name, work in (
        (
            "extract",
            lambda: run_extract(
                model, tokenizer, tokens, split, batch_size, workdir / "store", device, layers, letter_ids, letter_rule
            ),
        ),
        ("bare forward", lambda: run_bare(model, tokenizer, tokens, batch_size)),
    ):
        with watched(device) as clock:
            work()
        rows.append(
            Measured(
                name,
                clock["seconds"],
                split.n_examples,
                "examples",
                tokens.lengths.sum(),
                forward_flops(model, tokens.lengths),
                clock["peak"],
            )
        )
    return rows


def run_extract(model, tokenizer, tokens, split, batch_size, out, device, layers, letter_ids, letter_rule) -> None:
    from tqdm import tqdm

    from stages.store.extract_config import ExtractConfig
    from stages.store.teacher_pass import Teacher, write_shards
    from stages.store.writer import StoreLayout, open_partial

    # The hidden-state pass only: the cloze readout is a separate forward per option, timed by bench_extract.py.
    config = ExtractConfig(batch_size=batch_size, shard_examples=4 * batch_size, cloze=False)
    teacher = Teacher(model, tokenizer, None, device, torch.bfloat16, layers, letter_ids, letter_rule)
    layout = StoreLayout(
        split.n_examples, len(layers), model.config.hidden_size, config.shard_examples, "float16", True
    )
    group, _ = open_partial(out, layout, "gpu-check")
    shards = list(range(layout.n_shards))
    write_shards(teacher, tokens, None, split, group, layout, shards, config, tqdm(disable=True))


@torch.inference_mode()
def run_bare(model: Any, tokenizer: Any, tokens: Any, batch_size: int) -> None:
    """The ceiling: the blocks alone on the same length-bucketed batches, nothing kept."""
    from stages.store.batches import collate, shard_batches

    device = next(model.parameters()).device
    for rows in shard_batches(tokens.lengths, 0, len(tokens.lengths), batch_size):
        batch = collate(tokens, rows, tokenizer.pad_token_id, "right")
        model.model(
            input_ids=torch.from_numpy(batch.input_ids).to(device),
            attention_mask=torch.from_numpy(batch.attention_mask).to(device),
            use_cache=False,
        )


@torch.inference_mode()
def time_naive(model: Any, tokenizer: Any, split: Any, n_examples: int, workdir: Path) -> Measured:
    """What a practitioner writes first: one prompt at a time, every hidden state returned, one file each."""
    from stages.sources.prompts import format_prompt

    device = next(model.parameters()).device
    workdir.mkdir(parents=True, exist_ok=True)
    prompts = [format_prompt(q, c) for q, c in zip(split.questions[:n_examples], split.choices, strict=False)]
    lengths = []
    with watched(device) as clock:
        for i, prompt in enumerate(prompts):
            encoded = tokenizer(prompt, return_tensors="pt").to(device)
            output = model(**encoded, output_hidden_states=True)
            states = torch.stack([h[0, -1] for h in output.hidden_states]).float().cpu().numpy()
            np.save(workdir / f"{i}.npy", states)
            lengths.append(encoded["input_ids"].shape[1])
    flops = forward_flops(model, np.array(lengths))
    return Measured("naive loop", clock["seconds"], len(prompts), "examples", sum(lengths), flops, clock["peak"])


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    with watched(device) as clock:
        result = work()
    return result, clock
