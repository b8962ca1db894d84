"""The fitting rows of `benchmarks/gpu_check.py`: probes on the device against scikit-learn on the CPU, and
student training steps, both through the project's code (`fit_probes`; `step_loss` and `optimiser_step` under
the accelerate setup of `stages.student.setup`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gpu_workloads import Measured, forward_flops, llama_config, questions, timed

PROBE_TOLERANCE = 1e-5  # converged: objectives within 1e-4 of sklearn's converged fit (bench_probe.py)


def time_probes(n_layers: int, d_model: int, n_train: int, sklearn_layers: int, device: torch.device) -> list[Measured]:
    """The probe stage's workload (5 folds + refit, every layer) in torch on `device`, and sklearn on the CPU.

    sklearn (converged, tol 1e-8, one thread) is timed on the first `sklearn_layers` layers and scaled to all:
    it fits layer by layer, so its time is linear in the layers. The objective gap is over those layers.
    """
    from bench_probe import L2, N_FOLDS, N_SLOTS, fit_sklearn, objective, synthetic_layers, train_masks

    from stages.probing.fit import FitSettings, fit_probes
    from stages.probing.logistic import choose_formulation

    features, answers = synthetic_layers(n_layers, n_train + 8, d_model, 0, anisotropic=True)
    train_x, train_y = features[:, :n_train], answers[:n_train]
    masks = train_masks(n_train)
    on_device = [torch.from_numpy(a).to(device) for a in (train_x, train_y, masks)]
    valid = torch.ones(n_train, N_SLOTS, dtype=torch.bool, device=device)
    settings = FitSettings(l2=L2, tolerance=PROBE_TOLERANCE)
    with torch.device(device):  # the fit's own tensors follow its inputs onto the device
        fit_probes(on_device[0][:1, :40], on_device[1][:40], valid[:40], on_device[2][:, :40], settings)  # warm-up
        params, clock = timed(device, lambda: fit_probes(on_device[0], on_device[1], valid, on_device[2], settings))
    sk_seconds, sk_weights, _ = fit_sklearn(
        train_x[:sklearn_layers], train_y, features[:sklearn_layers, n_train:], 1e-8
    )
    ours = (
        params["w"][:, :sklearn_layers].double().cpu().numpy(),
        params["b"][:, :sklearn_layers].double().cpu().numpy(),
    )
    measured = train_x[:sklearn_layers]
    gap = np.max(objective(measured, train_y, ours) / objective(measured, train_y, sk_weights) - 1)
    n_fits = (N_FOLDS + 1) * n_layers
    shape = f"{n_layers} x {d_model}, n={n_train}"
    path = choose_formulation(n_train, d_model)
    return [
        Measured(
            f"probe fit, torch on {device.type}",
            clock["seconds"],
            n_fits,
            "fits",
            peak_bytes=clock["peak"],
            note=f"{shape}, {path}, tol {PROBE_TOLERANCE:g}",
        ),
        Measured(
            "probe fit, sklearn on CPU",
            sk_seconds * n_layers / sklearn_layers,
            n_fits,
            "fits",
            note=f"{shape}, tol 1e-8, timed on {sklearn_layers} of {n_layers} layers; objective gap {gap:+.1e}",
        ),
    ]


def time_student(
    shape: dict[str, Any], vocab_size: int, tokenizer: Any, batch_size: int, steps: int, warmup: int
) -> Measured:
    """Full fine-tuning steps (AdamW, fp32 master weights, bf16 autocast) of a randomly initialised student."""
    from transformers import LlamaForCausalLM

    from stages.sources.prompts import format_prompt
    from stages.student.config import TrainConfig
    from stages.student.data import EncodedSplit
    from stages.student.loop import optimiser_step, step_loss
    from stages.student.losses import LossWeights
    from stages.student.model import LetterReadout, StudentModules
    from stages.student.rows import TrainingRows
    from stages.student.setup import LossContext, Run, make_accelerator, make_optimiser

    train = TrainConfig(steps=steps + warmup, batch_size=batch_size, lr=1e-5, mixed_precision="bf16")
    accelerator = make_accelerator(train, None)
    config = llama_config(shape, vocab_size, tokenizer)
    torch.manual_seed(0)
    with torch.device(accelerator.device):
        model: Any = LlamaForCausalLM(config)  # float32 master weights, as stages.student.setup.load_student
    parameters = list(model.parameters())
    optimizer, scheduler = make_optimiser(parameters, train)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    split = questions(4 * batch_size, seed=1)
    token_ids = [tokenizer.encode(format_prompt(q, c)) for q, c in zip(split.questions, split.choices, strict=True)]
    encoded = EncodedSplit(split.ids, token_ids, split.answers, split.valid_mask())
    rows = TrainingRows(encoded, np.ones(split.n_examples, dtype=bool), None, None, split.n_examples)
    context = LossContext(rows, LetterReadout.of(tokenizer, accelerator.device), None, 1.0)
    run = Run(accelerator, StudentModules(model, None), optimizer, scheduler, parameters, context, {})
    batches = [list(range(i * batch_size, (i + 1) * batch_size)) for i in range(4)]

    def step(index: int) -> None:
        with accelerator.autocast():
            loss, _ = step_loss(run.modules, context, batches[index % 4], LossWeights(), {"ce": 1.0})
        optimiser_step(run, loss, train.max_grad_norm)

    def steps_from(first: int, count: int) -> None:
        for index in range(first, first + count):
            step(index)

    steps_from(0, warmup)
    _, clock = timed(accelerator.device, lambda: steps_from(warmup, steps))
    lengths = np.array([len(token_ids[i]) for index in range(warmup, warmup + steps) for i in batches[index % 4]])
    head = 2.0 * config.hidden_size * config.vocab_size * lengths.sum()  # logits at every position
    flops = 3.0 * (forward_flops(model, lengths) + head)  # forward + backward ~ 3 forwards
    n_params = sum(p.numel() for p in parameters) / 1e9
    return Measured(
        f"student train step ({n_params:.3g}B)",
        clock["seconds"],
        steps,
        "steps",
        lengths.sum(),
        flops,
        clock["peak"],
        note=f"batch {batch_size}, AdamW, bf16 autocast",
    )
