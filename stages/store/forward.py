"""One forward pass of the frozen teacher that keeps only the answer position of the requested layers.

Hidden states follow Hugging Face's `output_hidden_states=True` numbering: layer 0 is the input of the
first block (the embedding output), layer i the output of block i, and the last layer is the backbone's
`last_hidden_state` (after the final norm for Llama-style models, as HF returns it). Forward hooks gather
one position per layer as the forward runs, so (batch, seq, layers, d_model) never exists; for an encoder
the forward stops (a sentinel exception) after the deepest requested block. A causal LM always runs to the
end because the option logits need the last layer; the LM head is applied to the answer positions only,
not to (batch, seq, vocab). A batch with option positions gathers those too, from the same forward: the states at
the end of each option's line (per-option probes), as (batch, n_layers, n_slots, d_model), zeros beyond an
example's options.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from stages.core.errors import InputError
from stages.store.batches import Batch


class _StopForward(Exception):
    """Raised by the hook of the deepest needed block: everything after it is wasted work."""


def decoder_layers(backbone: Any) -> torch.nn.ModuleList:
    """The backbone's list of blocks: the ModuleList as long as config.num_hidden_layers."""
    n_blocks = backbone.config.num_hidden_layers
    candidates = [m for m in backbone.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_blocks]
    if not candidates:
        raise InputError(f"{type(backbone).__name__}: cannot find its {n_blocks} transformer blocks")
    return candidates[0]


def head_transform(config: Any, logits: torch.Tensor) -> torch.Tensor:
    """What a causal LM does to its head's output before returning logits: Gemma 2/3's final soft-capping
    (cap * tanh(logits / cap)), Cohere's `logit_scale`, Granite's `logits_scaling` (tests/test_architectures.py
    checks the letter logits equal the model's own for every family it builds)."""
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if getattr(config, "logit_scale", None) is not None and config.model_type.startswith("cohere"):
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None):
        logits = logits / config.logits_scaling
    return logits


class LayerGatherer:
    """Runs batches through `model`: (batch, n_layers, d_model) float32 at the answer position, letter logits, and
    (batch, n_layers, n_slots, d_model) at the option positions when the batch has them."""

    def __init__(self, model: Any, layers: list[int], letter_ids: list[int] | None) -> None:
        self.model = model
        self.backbone = model.base_model
        self.head = model.get_output_embeddings() if letter_ids is not None else None
        self.letter_ids = letter_ids
        self.layers = layers
        self.n_blocks = self.backbone.config.num_hidden_layers
        self.blocks = decoder_layers(self.backbone)
        accepted = inspect.signature(self.backbone.forward).parameters
        # Encoders get right padding and their own position ids: a right-padded row's defaults are the unpadded
        # row's, and some number positions their own way (RoBERTa from padding_idx + 1), so 0-based ids would be wrong.
        self.takes_position_ids = "position_ids" in accepted and self.head is not None
        self.takes_use_cache = "use_cache" in accepted
        self.device = next(model.parameters()).device
        # Early stop only when nothing needs the last block (no LM head, last layer not requested).
        self.stop_after = None if self.head is not None or self.n_blocks in layers else max(layers)
        self._rows: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        self._pool: torch.Tensor | None = None
        self._gathered: dict[int, torch.Tensor] = {}

    def _read(self, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, k, d_model) float32 of (batch, seq, d_model): the gathered positions, or the pooled mean."""
        device = hidden.device  # with device_map=auto, blocks live on different GPUs
        if self._pool is not None:  # mean over the mask's tokens, summed in float32
            pool = self._pool.to(device)
            return (torch.einsum("bsd,bs->bd", hidden.float(), pool) / pool.sum(1, keepdim=True))[:, None]
        # Hooks fire only inside __call__'s forward, which sets both first.
        assert self._rows is not None and self._positions is not None
        # Converting via float32 keeps bf16/fp16 values exact; only the gathered rows are copied.
        return hidden[self._rows.to(device), self._positions.to(device)].float()

    def _keep(self, layer: int, hidden: Any) -> None:
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # (batch, seq, d_model)
        self._gathered[layer] = self._read(hidden)  # (batch, k, d_model)

    def _hooks(self) -> list[Any]:
        handles = []
        if 0 in self.layers:
            handles.append(self.blocks[0].register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        for block_index, block in enumerate(self.blocks):
            layer = block_index + 1
            if layer in self.layers and layer < self.n_blocks or layer == self.stop_after:
                handles.append(block.register_forward_hook(self._make_hook(layer)))
        return handles

    def _pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        self._keep(0, args[0] if args else kwargs["hidden_states"])

    def _make_hook(self, layer: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            if layer in self.layers and layer < self.n_blocks:
                self._keep(layer, output)
            if layer == self.stop_after:
                raise _StopForward

        return hook

    @torch.inference_mode()
    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        inputs: dict[str, Any] = {
            "input_ids": torch.from_numpy(batch.input_ids).to(self.device),
            "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device),
        }
        if self.takes_position_ids:
            inputs["position_ids"] = torch.from_numpy(batch.position_ids).to(self.device)
        if self.takes_use_cache:
            inputs["use_cache"] = False  # a KV cache for one forward is wasted memory
        # Positions (batch, 1 + n_slots): the answer's, then each option line's end (the answer's again beyond an
        # example's options, zeroed below): one gather per layer serves both.
        positions = batch.answer_position[:, None]
        if batch.option_position is not None:
            positions = np.concatenate([positions, np.where(batch.option_position >= 0, batch.option_position,
                                                            positions)], axis=1)  # fmt: skip
        self._rows = torch.arange(len(batch.rows), device=self.device)[:, None]
        self._positions = torch.from_numpy(positions).to(self.device)
        self._pool = None if batch.pool_mask is None else torch.from_numpy(batch.pool_mask).to(self.device)
        self._gathered = {}
        handles = self._hooks()
        try:
            output = self.backbone(**inputs)
        except _StopForward:
            output = None
        finally:
            for handle in handles:
                handle.remove()
        logits = None
        if output is not None:
            states = output.last_hidden_state  # (batch, seq, d_model)
            last = self._read(states)  # (batch, k, d_model)
            if self.n_blocks in self.layers:
                self._gathered[self.n_blocks] = last
            if self.head is not None:
                head_device = self.head.weight.device
                letter_ids = torch.tensor(self.letter_ids, device=head_device)
                # the head in the model's dtype (bf16 on GPUs): the gathered states may have been upcast
                head_input = last[:, 0].to(head_device, self.head.weight.dtype)
                logits = head_transform(self.model.config, self.head(head_input)[:, letter_ids].float())
        gathered = torch.stack([self._gathered[layer].to(self.device) for layer in self.layers], dim=1)
        options = None  # (batch, n_layers, k, d_model) -> the option positions'
        if batch.option_position is not None:
            present = torch.from_numpy(batch.option_position >= 0).to(self.device)  # (batch, n_slots)
            options = gathered[:, :, 1:].masked_fill(~present[:, None, :, None], 0.0)
        return gathered[:, :, 0], logits, options  # (batch, n_layers, d_model), (batch, n_letters), options
