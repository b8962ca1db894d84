"""Cache the teacher's hidden states of every layer into a zarr store.

One forward pass of the frozen teacher per example over its prompt; the answer position (the last prompt
token, see extract_batches.py) of every requested layer goes into `data/hidden/<split>.zarr` (layout in
hidden_store.py), with the teacher's option-letter logits when it has an LM head. Resumable (store_writer.py)
and data-parallel under `accelerate launch` / `torchrun`: process r computes shards r, r + world, ...
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from tqdm import tqdm

from stages.errors import InputError, exits_cleanly
from stages.extract_batches import (
    POSITION_RULE,
    TokenizedPrompts,
    collate,
    letter_token_ids,
    shard_batches,
    tokenize_prompts,
)
from stages.params import load_params, section
from stages.prompts import MAX_CHOICES, PromptConfig, check_prompts_fit, format_prompt
from stages.schema import Split, read_split
from stages.store_writer import ShardWriter, StoreLayout, finalize, fingerprint, open_partial, partial_path

log = logging.getLogger(__name__)
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class ExtractConfig:
    layers: str | list[int] = "all"
    """`all`, or teacher layer indices (0 = embedding output, i = block i; negative from the last)."""
    batch_size: int = 64
    """Prompts per forward pass (batches are length-bucketed inside each shard)."""
    shard_examples: int = 256
    """Examples per zarr shard: one file per shard and the unit of resume and of data parallelism."""
    dtype: str = "float16"
    """Store dtype: float16 (half the disk; out-of-range values are an error) or float32."""
    device: str = "auto"
    """auto (cuda when available) | cpu | cuda | cuda:N."""
    device_map: str | None = None
    """e.g. `auto`: spread a teacher too big for one GPU over all GPUs (accelerate big-model inference)."""

    def __post_init__(self) -> None:
        if self.layers != "all" and not (
            isinstance(self.layers, list) and self.layers and all(isinstance(x, int) for x in self.layers)
        ):
            raise InputError(f"extract.layers must be `all` or a non-empty list of integers; got {self.layers!r}")
        for name in ("batch_size", "shard_examples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"extract.{name} must be a positive integer; got {getattr(self, name)!r}")
        if self.dtype not in ("float16", "float32"):
            raise InputError(f"extract.dtype must be float16 or float32; got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise InputError(f"extract.device must be auto, cpu, cuda or cuda:N; got {self.device!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ExtractConfig:
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"params.yaml: unknown key(s) in `extract`: {sorted(unknown)}")
        return cls(**params)

    def resolve_layers(self, n_teacher_layers: int) -> list[int]:
        """Sorted, distinct teacher layer indices in 0..n_teacher_layers-1."""
        if self.layers == "all":
            return list(range(n_teacher_layers))
        resolved = []
        for layer in self.layers:
            if not -n_teacher_layers <= layer < n_teacher_layers:
                raise InputError(
                    f"extract.layers has {layer} but the teacher has layers 0..{n_teacher_layers - 1} "
                    f"(or {-n_teacher_layers}..-1 from the last)"
                )
            resolved.append(layer % n_teacher_layers)
        return sorted(set(resolved))


def to_store_dtype(hidden: np.ndarray, dtype: str, example_ids: list[str], layers: list[int]) -> np.ndarray:
    """(examples, layers, d_model) float32 -> store dtype; refuse values float16 cannot hold."""
    if dtype == "float32":
        return hidden
    too_big = ~(np.abs(hidden) <= FLOAT16_MAX)  # NaN counts as out of range too
    if too_big.any():
        example, slot, _ = np.argwhere(too_big)[0]
        raise InputError(
            f"teacher layer {layers[slot]} of example {example_ids[example]} has value "
            f"{hidden[example, slot][too_big[example, slot]][0]} outside the float16 range; "
            "set extract.dtype: float32"
        )
    return hidden.astype(np.float16)


def pick_device(config: ExtractConfig, state: Any) -> tuple[Any, Any]:
    """(device for inputs, compute dtype): half precision on GPU, float32 on CPU."""
    import torch

    name = config.device
    if name == "auto":
        name = str(state.device) if state.device.type == "cuda" else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, torch.float32


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("torch", "transformers", "zarr", "numpy")}


def compute_shard(
    gather: Any, tokens: TokenizedPrompts, start: int, stop: int, batch_size: int, pad: tuple[int, str], progress: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """(examples, layers, d_model) float32 and (examples, MAX_CHOICES) letter logits (NaN padded) of one shard."""
    hidden = np.empty((stop - start, len(gather.layers), gather.backbone.config.hidden_size), dtype=np.float32)
    logits = None
    if gather.letter_ids is not None:
        logits = np.full((stop - start, MAX_CHOICES), np.nan, dtype=np.float32)
    for rows in shard_batches(tokens.lengths, start, stop, batch_size):
        batch_hidden, batch_logits = gather(collate(tokens, rows, *pad))
        hidden[rows - start] = batch_hidden.cpu().numpy()
        if logits is not None:
            logits[rows - start, : len(gather.letter_ids)] = batch_logits.cpu().numpy()
        progress.update(len(rows))
    return hidden, logits


def extract_split(split: Split, model_dir: Path, out: Path, prompt: PromptConfig, config: ExtractConfig) -> None:
    """Compute and write the whole store for one split (resuming `<out>.partial` when it matches)."""
    import torch
    from accelerate import PartialState

    from stages.extract_forward import LayerGatherer
    from stages.hf_models import load_model

    # Without cpu=True accelerate ignores torchrun's environment on a machine without GPUs.
    state = PartialState(cpu=config.device == "cpu" or not torch.cuda.is_available())
    if state.num_processes != int(os.environ.get("WORLD_SIZE", 1)):
        raise InputError(f"launched with WORLD_SIZE={os.environ['WORLD_SIZE']} but accelerate sees one process")
    device, compute_dtype = pick_device(config, state)
    device_map = config.device_map or (str(device) if device.type == "cuda" else None)
    model, tokenizer, ref = load_model(model_dir, dtype=compute_dtype, device_map=device_map)
    n_teacher_layers = model.config.num_hidden_layers + 1
    layers = config.resolve_layers(n_teacher_layers)
    has_logits = ref.kind == "causal_lm"
    n_letters = int(split.n_choices.max())
    letter_ids, letter_rule = letter_token_ids(tokenizer, n_letters) if has_logits else (None, None)

    prompts = [format_prompt(q, c, prompt) for q, c in zip(split.questions, split.choices, strict=True)]
    tokens = tokenize_prompts(tokenizer, prompts, split.ids)
    check_prompts_fit(tokens.lengths, split.ids, model.config, "teacher")
    d_model = model.config.hidden_size
    layout = StoreLayout(split.n_examples, len(layers), d_model, config.shard_examples, config.dtype, has_logits)
    teacher = {"model": ref.source if not ref.builtin else "builtin", "revision": ref.revision, "kind": ref.kind}
    determining = {
        "teacher": teacher,
        "prompt_digest": prompt.digest,
        "example_ids_sha256": hashlib.sha256("\x00".join(split.ids).encode()).hexdigest(),
        "layers": layers,
        "dtype": config.dtype,
        "shard_examples": config.shard_examples,
        "batch_size": config.batch_size,  # batch composition changes float rounding
        "compute": f"{device.type}:{compute_dtype}",
        "letter_token_ids": letter_ids,
        "position_rule": POSITION_RULE,
    }
    store_fingerprint = fingerprint(determining)
    partial = partial_path(out)
    if state.is_main_process:
        log.info(
            "%s: %d examples x %d layers x %d d_model (%s) -> about %.1f MB on disk",
            out,
            layout.n_examples,
            layout.n_layers,
            d_model,
            config.dtype,
            layout.expected_bytes() / 1e6,
        )
        group, done = open_partial(partial, layout, store_fingerprint)
    state.wait_for_everyone()  # rank 0 has created or validated the partial store
    if not state.is_main_process:
        group, done = open_partial(partial, layout, store_fingerprint)
    mine = [s for s in range(layout.n_shards) if s % state.num_processes == state.process_index and s not in done]

    gather = LayerGatherer(model, layers, letter_ids)
    # Left padding needs explicit position ids to leave each row's values unchanged; without them, pad right.
    pad = (tokenizer.pad_token_id, tokenizer.padding_side if gather.takes_position_ids else "right")
    writer = ShardWriter(group, layout)
    n_todo = sum(layout.shard_range(s)[1] - layout.shard_range(s)[0] for s in mine)
    progress = tqdm(total=n_todo, unit="ex", desc=f"extract {out.name}", disable=not state.is_main_process)
    valid = split.valid_mask()  # (n_examples, MAX_CHOICES)
    try:
        for shard in mine:
            start, stop = layout.shard_range(shard)
            hidden, logits = compute_shard(gather, tokens, start, stop, config.batch_size, pad, progress)
            if logits is not None:
                logits[~valid[start:stop]] = np.nan
            writer.put(shard, to_store_dtype(hidden, config.dtype, split.ids[start:stop], layers), logits)
    finally:
        progress.close()
        writer.close()
    state.wait_for_everyone()
    if state.is_main_process:
        attrs = {
            **determining,
            "example_ids": list(split.ids),
            "n_examples": split.n_examples,
            "n_teacher_layers": n_teacher_layers,
            "d_model": d_model,
            "shard_examples": config.shard_examples,
            "prompt": {"template": prompt.template, "option_format": prompt.option_format, "digest": prompt.digest},
            "letter_rule": letter_rule,
            "has_option_logits": has_logits,
            "versions": library_versions(),
            "fingerprint": store_fingerprint,
        }
        finalize(partial, out, attrs)
        log.info("wrote %s", out)
    state.wait_for_everyone()


@exits_cleanly
def main(
    split: Annotated[str, typer.Argument(help="Split to extract: labeled, transfer, val or test.")],
    data: Annotated[
        Path | None, typer.Option(help="Prepared split parquet (default data/prepared/<split>.parquet).")
    ] = None,
    teacher: Annotated[Path, typer.Option(help="Teacher model dir.")] = Path("data/models/teacher"),
    out: Annotated[Path | None, typer.Option(help="Output store (default data/hidden/<split>.zarr).")] = None,
    params_file: Annotated[Path, typer.Option(help="Parameters file.")] = Path("params.yaml"),
) -> None:
    """Cache the teacher's hidden states of every layer into a zarr store."""
    params = load_params(f"extract@{split}", params_file)
    prompt = PromptConfig.from_params(section(params, "prompt"))
    config = ExtractConfig.from_params(section(params, "extract"))
    data = data or Path(f"data/prepared/{split}.parquet")
    out = out or Path(f"data/hidden/{split}.zarr")
    out.parent.mkdir(parents=True, exist_ok=True)
    extract_split(read_split(data), teacher, out, prompt, config)
