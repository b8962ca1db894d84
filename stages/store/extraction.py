"""`extract@<split>`: one forward pass of the frozen teacher per prompt, the answer position of every
requested layer into a resumable zarr store (layout in stages/store/reader.py, writing in writer.py); with
`extract.cloze`, one more forward per option for the cloze readout (stages/modeling/cloze.py), in the same shards.

Data-parallel under `accelerate launch` / `torchrun`: process r computes shards r, r + world, ...; rank 0
creates and finalises the store. Batches never cross a shard, so values do not depend on the process count.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stages.core.errors import InputError
from stages.modeling.chat import chat_prompts
from stages.modeling.cloze import DELIMITER, RULE, ClozeTokens, tokenize_cloze
from stages.sources.prompts import PromptConfig, check_prompts_fit, format_prompt, option_line_ends
from stages.sources.schema import Split
from stages.sources.shots import shots_prefix
from stages.store.batches import OPTION_POSITION_RULE, POSITION_RULE, tokenize_prompts
from stages.store.extract_config import ExtractConfig, ExtractSetup
from stages.store.option_pass import PairTokens, tokenize_pairs
from stages.store.teacher_pass import Teacher, load_teacher, write_shards
from stages.store.writer import StoreLayout, finalize, fingerprint, open_partial, partial_path

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("torch", "transformers", "zarr", "numpy")}


def cloze_description(prompt: PromptConfig) -> dict[str, str]:
    return {"template": prompt.cloze_template, "delimiter": DELIMITER, "rule": RULE}


def cloze_missing(teacher: Teacher, config: ExtractConfig) -> str | None:
    """Why the store has no cloze readout (None: it has one)."""
    if not config.cloze:
        return "extract.cloze is false (set it to true and rerun extract)"
    if teacher.ref.kind != "causal_lm":
        return f"teacher {teacher.describe()['model']} has no LM head (encoder-only), so it scores no text"
    return None


def option_rule(teacher: Teacher, config: ExtractConfig) -> str | None:
    """How the store's option states were read (None: it has none)."""
    if not config.option_states:
        return None
    return OPTION_POSITION_RULE if teacher.ref.kind == "causal_lm" else f"pair_{config.option_pooling}"


def determining_values(split: Split, teacher: Teacher, prompt: PromptConfig, config: ExtractConfig) -> dict[str, Any]:
    """Everything that determines the stored values: the store's fingerprint is their hash.

    The cloze readout adds its key only when stored, so turning it off leaves the fingerprint of a hidden-state-only
    store as it was.
    """
    cloze = {} if cloze_missing(teacher, config) else {"cloze": cloze_description(prompt)}
    rule = option_rule(teacher, config)  # like the cloze key: absent when not stored
    options = {} if rule is None else {"option_states": {"rule": rule}}
    return {
        "teacher": teacher.describe(),
        "prompt_digest": prompt.digest,
        "example_ids_sha256": hashlib.sha256("\x00".join(split.ids).encode()).hexdigest(),
        "layers": teacher.layers,
        "dtype": config.dtype,
        "shard_examples": config.shard_examples,
        "batch_size": config.batch_size,  # batch composition changes float rounding
        "compute": f"{teacher.device.type}:{teacher.compute_dtype}",
        "letter_token_ids": teacher.letter_ids,
        "position_rule": POSITION_RULE,
        **cloze,
        **options,
    }


def open_store(out: Path, layout: StoreLayout, store_fingerprint: str, state: Any) -> tuple[Any, set[int]]:
    """(partial group, finished shards): rank 0 creates or validates `<out>.partial` before the others open it."""
    partial = partial_path(out)
    if state.is_main_process:
        log.info(
            "%s: %d examples x %d layers x %d d_model (%s) -> about %.1f MB on disk",
            out, layout.n_examples, layout.n_layers, layout.d_model, layout.dtype, layout.expected_bytes() / 1e6,
        )  # fmt: skip
        opened = open_partial(partial, layout, store_fingerprint)
    state.wait_for_everyone()
    if not state.is_main_process:
        opened = open_partial(partial, layout, store_fingerprint)
    return opened


def store_attributes(
    determining: dict[str, Any], split: Split, teacher: Teacher, prompt: PromptConfig, config: ExtractConfig,
    store_fingerprint: str,
) -> dict[str, Any]:  # fmt: skip
    """The finished store's self-description (see stages/store/reader.py)."""
    return {
        **determining,
        "example_ids": list(split.ids),
        "n_examples": split.n_examples,
        "n_teacher_layers": teacher.n_layers,
        "d_model": teacher.model.config.hidden_size,
        "prompt": {"template": prompt.template, "option_format": prompt.option_format, "digest": prompt.digest},
        "letter_rule": teacher.letter_rule,
        "has_option_logits": teacher.letter_ids is not None,
        "has_cloze": "cloze" in determining,
        "cloze_missing": cloze_missing(teacher, config),
        "has_option_states": "option_states" in determining,
        "option_rule": option_rule(teacher, config),
        "option_states_missing": None
        if config.option_states
        else "extract.option_states is false (set it to true and rerun extract)",
        "versions": library_versions(),
        "fingerprint": store_fingerprint,
    }


def cloze_tokens(teacher: Teacher, split: Split, prompt: PromptConfig, config: ExtractConfig) -> ClozeTokens | None:
    """The split's cloze sequences in the teacher's tokens, checked against its positions; None when not stored."""
    missing = cloze_missing(teacher, config)
    if missing:
        log.info("extract: no cloze readout: %s", missing)
        return None
    cloze = tokenize_cloze(teacher.tokenizer, split.questions, split.choices, prompt.cloze_template, split.ids)
    check_prompts_fit(cloze.lengths, [split.ids[i] for i in cloze.example], teacher.model.config, "teacher")
    return cloze


def human(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def check_disk(out: Path, layout: StoreLayout) -> None:
    """Stop before extracting when the store cannot fit in the free space where it goes (less what a partial store
    being resumed already holds)."""
    partial = partial_path(out)
    written = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file()) if partial.exists() else 0
    needed = layout.expected_bytes() - written
    free = shutil.disk_usage(next(p for p in (out.parent, *out.parents) if p.exists())).free
    if needed > free:
        options = f", x{1 + layout.n_option_slots} with extract.option_states" if layout.n_option_slots else ""
        raise InputError(
            f"{out}: the store needs about {human(needed)} ({layout.n_examples} examples x {layout.n_layers} "
            f"layers x {layout.d_model} d_model, {layout.dtype}{options}) but {human(free)} are free there; free "
            "space, store fewer layers (extract.layers) or use extract.dtype: float16"
        )


def check_device(device: str) -> None:
    """`extract.device` names a device this machine has (torch would assert deep inside otherwise)."""
    import torch

    if not device.startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        built = "this torch has no CUDA support" if torch.version.cuda is None else f"{count} CUDA device(s) visible"
        raise InputError(f"params.yaml: extract.device={device} but {built}; use extract.device: auto or cpu")


def teacher_prompts(
    teacher: Teacher, split: Split, prompt: PromptConfig, config: ExtractConfig, prefix: str = ""
) -> tuple[list[str], list[list[int]] | None]:
    """The split's prompt texts (after the few-shot `prefix`, in the teacher's chat template with
    prompt.chat_template) and, when the store keeps per-option states from this pass, the character offset just
    past each option's line in them."""
    prompts = [prefix + format_prompt(q, c, prompt) for q, c in zip(split.questions, split.choices, strict=True)]
    ends = None
    if option_rule(teacher, config) == OPTION_POSITION_RULE:
        ends = [[len(prefix) + end for end in option_line_ends(q, c, prompt)]
                for q, c in zip(split.questions, split.choices, strict=True)]  # fmt: skip
    if prompt.chat_template:
        prompts, offsets = chat_prompts(teacher.tokenizer, prompts, "teacher")
        if ends is not None:
            ends = [[offset + end for end in row] for row, offset in zip(ends, offsets, strict=True)]
    return prompts, ends


def option_pairs(teacher: Teacher, split: Split, config: ExtractConfig) -> PairTokens | None:
    """An encoder teacher's (question, option) pairs, checked against its positions; None for decoders."""
    if option_rule(teacher, config) in (None, OPTION_POSITION_RULE):
        return None
    pairs = tokenize_pairs(teacher.tokenizer, split.questions, split.choices, config.option_pooling, split.ids)
    check_prompts_fit(pairs.lengths, [split.ids[i] for i in pairs.example], teacher.model.config, "teacher")
    return pairs


def run(
    setup: ExtractSetup,
    split: Split,
    teacher_dir: Path,
    out: Path,
    *,
    fitted: dict | None = None,
    shots: Path | None = None,
) -> None:
    """Compute and write the whole store for one split (resuming `<out>.partial` when it matches); `fitted` (what
    prepare's prompt.on_too_long did to the split) goes into the store's attributes as `prompt_fit`; `shots` is the
    prepared shots.parquet (read with prompt.shots > 0)."""
    import torch
    from accelerate import PartialState

    config, prompt = setup.extract, setup.prompt
    check_device(config.device)
    # Without cpu=True accelerate ignores torchrun's environment on a machine without GPUs.
    state = PartialState(cpu=config.device == "cpu" or not torch.cuda.is_available())
    if state.num_processes != int(os.environ.get("WORLD_SIZE", 1)):
        raise InputError(f"launched with WORLD_SIZE={os.environ['WORLD_SIZE']} but accelerate sees one process")
    teacher = load_teacher(teacher_dir, config, state, int(split.n_choices.max()), prompt.chat_template)
    prefix = shots_prefix(shots, prompt)
    prompts, ends = teacher_prompts(teacher, split, prompt, config, prefix)
    tokens = tokenize_prompts(teacher.tokenizer, prompts, split.ids, option_ends=ends,
                              add_special_tokens=not prompt.chat_template)  # fmt: skip
    check_prompts_fit(tokens.lengths, split.ids, teacher.model.config, "teacher")
    cloze = cloze_tokens(teacher, split, prompt, config)
    pairs = option_pairs(teacher, split, config)
    n_option_slots = int(split.n_choices.max()) if option_rule(teacher, config) else 0
    layout = StoreLayout(split.n_examples, len(teacher.layers), teacher.model.config.hidden_size,
                         config.shard_examples, config.dtype, teacher.letter_ids is not None,
                         cloze is not None, n_option_slots)  # fmt: skip
    determining = determining_values(split, teacher, prompt, config)
    if prefix:  # which examples the shots are, not only how many
        determining["shots_sha256"] = hashlib.sha256(prefix.encode()).hexdigest()
    store_fingerprint = fingerprint(determining)
    check_disk(out, layout)
    group, done = open_store(out, layout, store_fingerprint, state)
    mine = [s for s in range(layout.n_shards) if s % state.num_processes == state.process_index and s not in done]
    n_todo = sum(layout.shard_range(s)[1] - layout.shard_range(s)[0] for s in mine)
    progress = tqdm(total=n_todo, unit="ex", desc=f"extract {out.name}", disable=not state.is_main_process)
    write_shards(teacher, tokens, cloze, split, group, layout, mine, config, progress, pairs)
    state.wait_for_everyone()
    if state.is_main_process:
        attributes = {**store_attributes(determining, split, teacher, prompt, config, store_fingerprint),
                      "prompt_fit": fitted}  # fmt: skip
        finalize(partial_path(out), out, attributes)
        log.info("wrote %s", out)
    state.wait_for_everyone()
