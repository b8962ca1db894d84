"""The teacher's pass over one split: load it, run length-bucketed batches shard by shard (the hidden-state pass,
then the cloze pass when asked), hand each finished shard to the writer thread. Batches never cross a shard, so a
shard's values do not depend on which process computes it or whether the run was resumed (byte-identical stores)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import InputError
from stages.modeling.cloze import ClozeScorer, ClozeTokens, normalised, score_examples
from stages.modeling.letters import letter_token_ids
from stages.sources.prompts import MAX_CHOICES
from stages.sources.schema import Split
from stages.store.batches import TokenizedPrompts, collate, shard_batches
from stages.store.extract_config import ExtractConfig
from stages.store.option_pass import PairTokens, pair_states
from stages.store.reader import CLOZE_LOGPROB, CLOZE_NORM, OPTION_STATES
from stages.store.writer import ShardWriter, StoreLayout

FLOAT16_MAX = float(np.finfo(np.float16).max)


def to_store_dtype(hidden: np.ndarray, dtype: str, example_ids: list[str], layers: list[int]) -> np.ndarray:
    """(examples, layers, ...) float32 -> store dtype; refuse values float16 cannot hold."""
    if dtype == "float32":
        return hidden
    too_big = ~(np.abs(hidden) <= FLOAT16_MAX)  # NaN counts as out of range too
    if too_big.any():
        example, position = np.argwhere(too_big)[0][:2]
        raise InputError(
            f"teacher layer {layers[position]} of example {example_ids[example]} has value "
            f"{hidden[example, position][too_big[example, position]].flat[0]} outside the float16 range; "
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


def compute_shard(
    gather: Any, tokens: TokenizedPrompts, start: int, stop: int, batch_size: int, pad: tuple[int, str], progress: Any
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(examples, layers, d_model) float32, (examples, MAX_CHOICES) letter logits (NaN padded) and, when the
    tokens have option positions, (examples, layers, n_slots, d_model) option states of one shard."""
    shape = (stop - start, len(gather.layers), gather.backbone.config.hidden_size)
    hidden = np.empty(shape, dtype=np.float32)
    logits = None
    if gather.letter_ids is not None:
        logits = np.full((stop - start, MAX_CHOICES), np.nan, dtype=np.float32)
    options = None
    if tokens.option_index is not None:
        options = np.zeros((*shape[:2], tokens.option_index.shape[1], shape[2]), dtype=np.float32)
    for rows in shard_batches(tokens.lengths, start, stop, batch_size):
        batch_hidden, batch_logits, batch_options = gather(collate(tokens, rows, *pad))
        hidden[rows - start] = batch_hidden.cpu().numpy()
        if logits is not None:
            logits[rows - start, : len(gather.letter_ids)] = batch_logits.cpu().numpy()
        if options is not None:
            options[rows - start] = batch_options.cpu().numpy()
        progress.update(len(rows))
    return hidden, logits, options


@dataclass
class Teacher:
    """The loaded teacher and what extraction derives from it."""

    model: Any
    tokenizer: Any
    ref: Any
    device: Any
    compute_dtype: Any
    layers: list[int]  # teacher layer index of each store position
    letter_ids: list[int] | None  # None: no LM head (encoder), so no option logits
    letter_rule: str | None

    @property
    def n_layers(self) -> int:
        """Hidden-state layers of the teacher, embedding output included."""
        return int(self.model.config.num_hidden_layers) + 1

    def describe(self) -> dict[str, Any]:
        return {"model": "builtin" if self.ref.builtin else self.ref.source, "revision": self.ref.revision,
                "kind": self.ref.kind}  # fmt: skip


def load_teacher(model_dir: Path, config: ExtractConfig, state: Any, n_letters: int, chat: bool = False) -> Teacher:
    """The teacher on its device; with `chat` its letters are read after its own chat template's assistant turn."""
    from stages.modeling.chat import assistant_start
    from stages.modeling.loading import load_model

    device, compute_dtype = pick_device(config, state)
    device_map = config.device_map or (str(device) if device.type == "cuda" else None)
    model, tokenizer, ref = load_model(model_dir, dtype=compute_dtype, device_map=device_map)
    layers = config.resolve_layers(model.config.num_hidden_layers + 1)
    letter_ids, letter_rule = (
        letter_token_ids(tokenizer, n_letters, "teacher", assistant_start(tokenizer, "teacher") if chat else None)
        if ref.kind == "causal_lm"
        else (None, None)
    )
    return Teacher(model, tokenizer, ref, device, compute_dtype, layers, letter_ids, letter_rule)


def compute_cloze(scorer: ClozeScorer, cloze: ClozeTokens, start: int, stop: int, batch_size: int) -> dict:
    """The cloze arrays of one shard: (examples, MAX_CHOICES) float32 log-likelihoods and their per-character form."""
    log_likelihood = score_examples(scorer, cloze, start, stop, batch_size)
    return {CLOZE_LOGPROB: log_likelihood, CLOZE_NORM: normalised(log_likelihood, cloze, start)}


def write_shards(
    teacher: Teacher, tokens: TokenizedPrompts, cloze: ClozeTokens | None, split: Split, group: Any,
    layout: StoreLayout, shards: list[int], config: ExtractConfig, progress: Any, pairs: PairTokens | None = None,
) -> None:  # fmt: skip
    """Compute and write `shards`; the writer thread overlaps writing shard s with computing shard s + 1.

    Option states come from `tokens`' option positions (decoders) or from the sequence `pairs` (encoders)."""
    from stages.store.forward import LayerGatherer

    gather = LayerGatherer(teacher.model, teacher.layers, teacher.letter_ids)
    # Left padding needs explicit position ids to leave each row's values unchanged; without them, pad right.
    tokenizer = teacher.tokenizer
    pad = (tokenizer.pad_token_id, tokenizer.padding_side if gather.takes_position_ids else "right")
    scorer = ClozeScorer(teacher.model, tokenizer.pad_token_id, tokenizer.padding_side) if cloze else None
    writer = ShardWriter(group, layout)
    valid = split.valid_mask()  # (n_examples, MAX_CHOICES)
    try:
        for shard in shards:
            start, stop = layout.shard_range(shard)
            hidden, logits, options = compute_shard(gather, tokens, start, stop, config.batch_size, pad, progress)
            if logits is not None:
                logits[~valid[start:stop]] = np.nan
            extra = compute_cloze(scorer, cloze, start, stop, config.batch_size) if scorer and cloze else {}
            if pairs is not None:
                options = pair_states(gather, pairs, start, stop, layout.n_option_slots, config.batch_size, pad)
            if options is not None:
                extra[OPTION_STATES] = to_store_dtype(options, config.dtype, split.ids[start:stop], teacher.layers)
            stored = to_store_dtype(hidden, config.dtype, split.ids[start:stop], teacher.layers)
            writer.put(shard, stored, logits, extra)
    finally:
        progress.close()
        writer.close()
