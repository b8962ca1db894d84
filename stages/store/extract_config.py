"""The `extract` section of params.yaml: what `extract@<split>` reads, checked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from stages.core.config import Section, build
from stages.core.errors import InputError
from stages.core.layers import resolve_layer
from stages.core.params import section
from stages.sources.prompts import PromptConfig


@dataclass(frozen=True)
class ExtractConfig:
    """The `extract` section of params.yaml."""

    layers: Literal["all"] | list[int] = "all"
    """all, or teacher layer indices (0 = embedding output, i = block i; negative from the last)."""
    batch_size: int = 64
    """Prompts per forward pass (batches are length-bucketed inside each shard)."""
    shard_examples: int = 256
    """Examples per zarr shard: one file per shard and the unit of resume and of data parallelism."""
    dtype: Literal["float16", "float32"] = "float16"
    """Store dtype: float16 (half the disk; out-of-range values are an error) or float32."""
    device: str = "auto"
    """auto (cuda when available) | cpu | cuda | cuda:N."""
    device_map: str | None = None
    """e.g. auto: spread a teacher too big for one GPU over all GPUs (accelerate big-model inference)."""
    cloze: bool = True
    """Also store the cloze readout: each option's log-likelihood as the continuation of the question without
    options (one extra forward per option; prompt.cloze_template). false skips it for very large runs."""

    option_states: bool = True
    """Also store per-option states (the per-option probe's input): decoders, each layer at the end of each option's
    line, from the same forward; encoders, each (question, option) pair encoded as a sequence pair (one more
    forward per option). n_options times the hidden-state store on disk; false skips them."""
    option_pooling: Literal["cls", "mean", "last"] = "mean"
    """Encoder teachers: the pair's representation: cls (first token), mean (over non-special tokens) or last (last
    non-special token)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_examples"):
            if getattr(self, name) < 1:
                raise InputError(f"params.yaml: extract.{name}={getattr(self, name)} must be >= 1")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise InputError(f"params.yaml: extract.device={self.device!r} must be auto, cpu, cuda or cuda:N")

    def resolve_layers(self, n_teacher_layers: int) -> list[int]:
        """Sorted, distinct teacher layer indices in 0..n_teacher_layers-1."""
        if self.layers == "all":
            return list(range(n_teacher_layers))
        return sorted({resolve_layer(layer, n_teacher_layers, "extract.layers") for layer in self.layers})


@dataclass(frozen=True)
class ExtractSetup:
    """Everything `extract@<split>` reads from params.yaml, checked."""

    prompt: PromptConfig
    extract: ExtractConfig


PARAMS = [Section("prompt", PromptConfig), Section("extract", ExtractConfig)]


def read_extract_setup(params: dict[str, Any]) -> ExtractSetup:
    return ExtractSetup(
        prompt=build(PromptConfig, section(params, "prompt"), "prompt"),
        extract=build(ExtractConfig, section(params, "extract"), "extract"),
    )
