"""Reading the teacher's cached hidden states: the contract between `extract` and everything after it.

A store is a zarr v3 group `data/hidden/<split>.zarr`:
- array `hidden`: (n_examples, n_layers, d_model), float16 by default; chunks (shard_examples, 1, d_model)
  so one layer of many examples is one contiguous read, grouped into shards of whole example blocks.
- array `option_logits` (only when the teacher has an LM head): (n_examples, MAX_CHOICES) float32, the
  teacher's next-token logits on the option letters at the answer position, NaN beyond an example's choices.
- arrays `cloze_logprob` and `cloze_norm` (only with `extract.cloze: true` and an LM head): (n_examples,
  MAX_CHOICES) float32, each option's summed log-likelihood as the continuation of the question without options
  (stages/modeling/cloze.py), and the same per character of the option text; NaN beyond an example's choices.
  `has_cloze` says whether they exist, `cloze` how they were made, `cloze_missing` why they are absent.
- array `option_states` (with `extract.option_states: true`): (n_examples, n_layers, n_option_slots, d_model), the
  hidden state of every layer at the end of each option's line in the same prompt (`option_rule: option_line_end`,
  decoders) or of each (question, option) pair encoded as a sequence pair (`option_rule: pair_<pooling>`,
  encoders); zeros beyond an example's options. The per-option probe reads it. `option_states_missing` says why
  a store has none.
- attributes: `example_ids` (store order = the split's parquet order), `layers` (teacher layer index of each
  store position; 0 is the embedding output, i is block i's output), `complete` (written last: the marker),
  and the provenance (teacher, prompt, dtype, versions, ...).
- the answer position (`position_rule: last_non_special`) is the last prompt token that is not a special
  token: prompts are tokenised with the teacher's special tokens (BOS, [CLS] ... [SEP]) and an appended
  [SEP]/EOS is skipped. Option logits use the letter tokens in `letter_token_ids` (`letter_rule`: `space`
  for ` A`, `bare` for `A`). Written by stages/store/extraction.py (see batches.py, writer.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from stages.core.errors import InputError
from stages.core.layers import resolve_layer
from stages.sources.schema import Split

HIDDEN = "hidden"
OPTION_LOGITS = "option_logits"
CLOZE_LOGPROB = "cloze_logprob"
CLOZE_NORM = "cloze_norm"
CLOZE_ARRAYS = (CLOZE_LOGPROB, CLOZE_NORM)
OPTION_STATES = "option_states"
COMPLETE = "complete"


@dataclass
class HiddenStore:
    path: Path
    group: Any

    @classmethod
    def open(cls, path: str | Path) -> HiddenStore:
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: hidden-state store not found (run `dvc repro extract` first)")
        group = zarr.open_group(str(path), mode="r")
        if not group.attrs.get(COMPLETE, False):
            raise InputError(f"{path}: hidden-state store is unfinished (extraction was interrupted); rerun extract")
        return cls(path=path, group=group)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def example_ids(self) -> list[str]:
        return list(self.group.attrs["example_ids"])

    @property
    def layers(self) -> list[int]:
        """Teacher layer index held at each store position (0 = embedding output)."""
        return list(self.group.attrs["layers"])

    @property
    def n_teacher_layers(self) -> int:
        """Number of hidden-state layers the teacher has (embedding output included)."""
        return int(self.group.attrs["n_teacher_layers"])

    @property
    def shape(self) -> tuple[int, int, int]:
        n_examples, n_layers, d_model = self.group[HIDDEN].shape
        return int(n_examples), int(n_layers), int(d_model)

    def index_of(self, layer: int | str, param: str) -> int:
        """Position in the store of the teacher layer that param `param` names (the rule of core/layers.py)."""
        resolved = resolve_layer(layer, self.n_teacher_layers, param)
        if resolved not in self.layers:
            raise InputError(
                f"{param}={layer} (teacher layer {resolved}) is not in {self.path}, which holds teacher layers "
                f"{self.layers}; add it to extract.layers"
            )
        return self.layers.index(resolved)

    def read_layer(self, index: int) -> np.ndarray:
        """(n_examples, d_model) float32 of the layer at store position `index`: one contiguous read per shard."""
        return np.asarray(self.group[HIDDEN][:, index, :], dtype=np.float32)

    def read_option_layer(self, index: int, n_slots: int) -> np.ndarray:
        """(n_examples, n_slots, d_model) float32 option states of the layer at store position `index`, zero-padded
        to `n_slots` option slots."""
        if OPTION_STATES not in self.group:
            reason = self.group.attrs.get("option_states_missing") or "it was extracted without them"
            raise InputError(f"{self.path} has no per-option states: {reason}")
        states = np.asarray(self.group[OPTION_STATES][:, index], dtype=np.float32)
        padded = np.zeros((states.shape[0], n_slots, states.shape[2]), dtype=np.float32)
        padded[:, : states.shape[1]] = states[:, :n_slots]
        return padded

    def option_logits(self) -> np.ndarray | None:
        """(n_examples, MAX_CHOICES) float32 with NaN beyond each example's choices, or None (no LM head)."""
        if OPTION_LOGITS not in self.group:
            return None
        return np.asarray(self.group[OPTION_LOGITS][:], dtype=np.float32)

    def require_option_logits(self, why: str) -> np.ndarray:
        logits = self.option_logits()
        if logits is None:
            teacher = self.group.attrs.get("teacher", {})
            raise InputError(
                f"{why} needs the teacher's option-letter logits, but {self.path} has none: teacher "
                f"{teacher.get('model', '?')} has no LM head (encoder-only). Use an arm that does not need them."
            )
        return logits

    def cloze(self, normalised: bool = False) -> np.ndarray | None:
        """(n_examples, MAX_CHOICES) float32 option log-likelihoods (per character if `normalised`), NaN beyond
        each example's choices; None when the store has none (`cloze_missing` says why)."""
        name = CLOZE_NORM if normalised else CLOZE_LOGPROB
        if name not in self.group:
            return None
        return np.asarray(self.group[name][:], dtype=np.float32)

    def require_cloze(self, why: str) -> np.ndarray:
        scores = self.cloze()
        if scores is None:
            reason = self.group.attrs.get("cloze_missing") or "it was extracted without the cloze readout"
            raise InputError(f"{why} needs the teacher's cloze readout, but {self.path} has none: {reason}")
        return scores


def open_stores(hidden: Path, splits: dict[str, Split]) -> dict[str, HiddenStore]:
    """`hidden/<split>.zarr` of every split, checked to hold the split's examples and the same layers."""
    stores = {name: HiddenStore.open(hidden / f"{name}.zarr") for name in splits}
    first = next(iter(stores))
    for name, store in stores.items():
        if store.example_ids != splits[name].ids:
            raise InputError(
                f"{hidden / name}.zarr: example ids differ from the prepared {name} split; rerun `dvc repro extract`"
            )
        if store.layers != stores[first].layers:
            raise InputError(f"{hidden / name}.zarr holds other layers than {first}.zarr; rerun `dvc repro extract`")
    return stores
