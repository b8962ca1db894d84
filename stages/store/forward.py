"""One forward pass of the frozen teacher that keeps only the answer position of the requested layers.

Hidden states follow Hugging Face's `output_hidden_states=True` numbering: layer 0 is the input of the
first block (the embedding output), layer i the output of block i, and the last layer is the backbone's
`last_hidden_state` (after the final norm for Llama-style models, as HF returns it). Forward hooks gather
one position per layer as the forward runs, so (batch, seq, layers, d_model) never exists; for an encoder
the forward stops (a sentinel exception) after the deepest requested block. A causal LM always runs to the
end because the option logits need the last layer; the LM head is applied to the answer positions only,
not to (batch, seq, vocab).
"""

from __future__ import annotations

import inspect
from typing import Any

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


class LayerGatherer:
    """Runs batches through `model`, returning (batch, n_layers, d_model) float32 and letter logits."""

    def __init__(self, model: Any, layers: list[int], letter_ids: list[int] | None) -> None:
        self.model = model
        self.backbone = model.base_model
        self.head = model.get_output_embeddings() if letter_ids is not None else None
        self.letter_ids = letter_ids
        self.layers = layers
        self.n_blocks = self.backbone.config.num_hidden_layers
        self.blocks = decoder_layers(self.backbone)
        accepted = inspect.signature(self.backbone.forward).parameters
        self.takes_position_ids = "position_ids" in accepted
        self.takes_use_cache = "use_cache" in accepted
        self.device = next(model.parameters()).device
        # Early stop only when nothing needs the last block (no LM head, last layer not requested).
        self.stop_after = None if self.head is not None or self.n_blocks in layers else max(layers)
        self._rows: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        self._gathered: dict[int, torch.Tensor] = {}

    def _keep(self, layer: int, hidden: Any) -> None:
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # (batch, seq, d_model)
        # Converting via float32 keeps bf16/fp16 values exact; only the gathered rows are copied.
        device = hidden.device  # with device_map=auto, blocks live on different GPUs
        # Hooks fire only inside __call__'s forward, which sets both first.
        assert self._rows is not None and self._positions is not None
        self._gathered[layer] = hidden[self._rows.to(device), self._positions.to(device)].float()

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
    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        inputs: dict[str, Any] = {
            "input_ids": torch.from_numpy(batch.input_ids).to(self.device),
            "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device),
        }
        if self.takes_position_ids:
            inputs["position_ids"] = torch.from_numpy(batch.position_ids).to(self.device)
        if self.takes_use_cache:
            inputs["use_cache"] = False  # a KV cache for one forward is wasted memory
        self._rows = torch.arange(len(batch.rows), device=self.device)
        self._positions = torch.from_numpy(batch.answer_position).to(self.device)
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
            last = states[self._rows.to(states.device), self._positions.to(states.device)]  # (batch, d_model)
            if self.n_blocks in self.layers:
                self._gathered[self.n_blocks] = last.float()
            if self.head is not None:
                head_device = self.head.weight.device
                letter_ids = torch.tensor(self.letter_ids, device=head_device)
                logits = self.head(last.to(head_device))[:, letter_ids].float()  # (batch, n_letters)
        hidden = torch.stack([self._gathered[layer].to(self.device) for layer in self.layers], dim=1)
        return hidden, logits  # (batch, n_layers, d_model), (batch, n_letters)
