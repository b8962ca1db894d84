"""`probe`: a probe per teacher layer, K-fold cross-fitted on `labeled`, every split predicted, calibrated.

Reads the four hidden-state stores layer chunk by layer chunk (never the whole store) and fits every
(fold, layer) probe of a chunk at once (stages/probing/fit.py). Outputs are written by probe_files.py.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from stages.core.config import NOT_A_PARAM, SEED, Section, build, read_seed
from stages.core.errors import InputError
from stages.core.metrics import masked_softmax, summary
from stages.core.params import section
from stages.probing.fit import FitSettings, cross_fit, fit_temperature, predict
from stages.probing.probe_files import ProbeResult, write_outputs
from stages.sources.schema import SPLITS, Split, read_split
from stages.store.reader import HiddenStore, open_stores

log = logging.getLogger(__name__)
CHUNK_BYTES = 512 * 2**20  # float32 features of one layer chunk; fitting needs about 3x this


@dataclass(frozen=True)
class ProbeConfig:
    """The `probe` section of params.yaml (minus `layer`, which only `label` reads) and the global seed."""

    kind: Literal["logistic", "mlp", "per_option"] = "logistic"
    """logistic (multinomial logistic regression over option slots on the answer position's state), mlp (one hidden
    layer of 64 GELU units) or per_option (one linear scorer shared by every option, on each option's own state,
    softmax over the question's options; needs extract.option_states)."""
    l2: float = 1e-3
    """L2 penalty: objective = mean cross-entropy + l2 / 2 * ||W||^2 (scikit-learn C = 1 / (n_train * l2))."""
    folds: int = 5
    """K for cross-fitting on `labeled`: each labeled example is predicted by the probe that did not see it."""
    calibrate: bool = True
    """Fit one temperature per layer on `val` by NLL and apply it to every split's probabilities."""
    seed: int = field(default=0, metadata=NOT_A_PARAM)
    """The global seed: fold assignment and MLP initialisation."""

    def __post_init__(self) -> None:
        if not self.l2 > 0:
            raise InputError(f"params.yaml: probe.l2={self.l2} must be > 0 (a penalty such as 1.0e-3)")
        if self.folds < 2:
            raise InputError(f"params.yaml: probe.folds={self.folds}: cross-fitting needs >= 2")

    @property
    def fit_settings(self) -> FitSettings:
        return FitSettings(kind=self.kind, l2=self.l2, seed=self.seed)


def assign_folds(n_examples: int, n_folds: int, seed: int) -> np.ndarray:
    """(n_examples,) fold of each example: a seeded permutation dealt round-robin, so fold sizes differ by <= 1."""
    if n_examples < n_folds:
        raise InputError(f"probe.folds={n_folds} but `labeled` has only {n_examples} examples; lower probe.folds")
    fold_of = np.empty(n_examples, dtype=np.int64)
    fold_of[np.random.default_rng(seed).permutation(n_examples)] = np.arange(n_examples) % n_folds
    return fold_of


def fit_all_layers(splits: dict[str, Split], stores: dict[str, HiddenStore], config: ProbeConfig) -> ProbeResult:
    """Cross-fit on labeled, predict every split, calibrate on val; layer chunks bounded by CHUNK_BYTES."""
    layers = stores["labeled"].layers
    n_slots = int(max(split.n_choices.max() for split in splits.values()))  # slots no question has are dropped
    valid = {name: torch.from_numpy(split.valid_mask()[:, :n_slots]) for name, split in splits.items()}
    answers = {name: torch.tensor(split.answers) for name, split in splits.items()}
    fold_of = assign_folds(splits["labeled"].n_examples, config.folds, config.seed)
    n_max, _, d_model = max(store.shape for store in stores.values())
    per_option = config.kind == "per_option"
    if per_option:
        require_option_states(stores)
    per_chunk = max(1, CHUNK_BYTES // (4 * n_max * d_model * (n_slots if per_option else 1)))
    logits: dict[str, list[torch.Tensor]] = {name: [] for name in splits}
    weights: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(layers), per_chunk):
        indices = range(start, min(start + per_chunk, len(layers)))  # store positions of this chunk's layers
        log.info("probe: layers %s..%s of %s", layers[indices[0]], layers[indices[-1]], layers)
        features = read_chunk(stores["labeled"], indices, n_slots if per_option else 0)  # (chunk, n_labeled, ...)
        out_of_fold, refit = cross_fit(features, answers["labeled"], valid["labeled"], fold_of, config.fit_settings)
        logits["labeled"].append(out_of_fold)
        weights.append(refit)
        for name in splits:
            if name != "labeled":
                chunk = read_chunk(stores[name], indices, n_slots if per_option else 0)
                logits[name].append(predict(refit, chunk, valid[name]))
    merged = {name: torch.cat(chunks) for name, chunks in logits.items()}
    temperature = (
        fit_temperature(merged["val"], answers["val"]) if config.calibrate else torch.ones(len(layers))
    ).numpy()
    probs = {
        name: np.stack(
            [masked_softmax(x.numpy(), valid[name].numpy(), float(t)) for x, t in zip(z, temperature, strict=True)]
        )
        for name, z in merged.items()
    }
    return ProbeResult(
        layers=layers,
        logits=merged,
        probs=probs,
        labeled_fold=fold_of,
        temperature=temperature,
        weights={name: torch.cat([w[name] for w in weights]) for name in weights[0]},
    )


def read_chunk(store: HiddenStore, indices: range, n_slots: int = 0) -> torch.Tensor:
    """(chunk, n_examples, d_model) answer-position states, or with n_slots (chunk, n_examples, n_slots, d_model)
    per-option states."""
    if n_slots:
        return torch.from_numpy(np.stack([store.read_option_layer(index, n_slots) for index in indices]))
    return torch.from_numpy(np.stack([store.read_layer(index) for index in indices]))


def require_option_states(stores: dict[str, HiddenStore]) -> None:
    for store in stores.values():
        if not store.attrs.get("has_option_states", False):
            reason = store.attrs.get("option_states_missing") or "it was extracted before they existed; rerun extract"
            raise InputError(f"probe.kind=per_option needs per-option states, but {store.path} has none: {reason}")


def layer_metrics(result: ProbeResult, splits: dict[str, Split], teacher_probs: dict[str, np.ndarray | None]) -> list:
    """One dict per layer: cv (out-of-fold labeled), val and test metrics, the teacher's readouts beside them
    (`teacher_probs`: `<split>` for its letters, `cloze_<split>` for its cloze readout; None: unavailable)."""
    teacher = {
        f"teacher_{name}_acc": summary(probs, splits[name.removeprefix("cloze_")].answers)["acc"]
        for name, probs in teacher_probs.items()
        if probs is not None
    }
    rows = []
    for index, layer in enumerate(result.layers):
        row: dict = {"layer": layer, "temperature": float(result.temperature[index])}
        for key, name in (("cv", "labeled"), ("val", "val"), ("test", "test")):
            for metric, value in summary(result.probs[name][index], splits[name].answers).items():
                row[f"{key}_{metric}"] = value
        rows.append({**row, **teacher})
    return rows


PARAMS = [SEED, Section("probe", ProbeConfig, "all but probe.layer, which only label reads")]


def read_probe_config(params: dict[str, Any]) -> ProbeConfig:
    probe = {key: value for key, value in section(params, "probe").items() if key != "layer"}
    return build(ProbeConfig, probe, "probe", seed=read_seed(params))


def open_inputs(prepared: Path, hidden: Path) -> tuple[dict[str, Split], dict[str, HiddenStore]]:
    splits = {name: read_split(prepared / f"{name}.parquet") for name in SPLITS}
    return splits, open_stores(hidden, splits)


@dataclass(frozen=True)
class ProbePaths:
    prepared: Path
    """Folder of the prepared {labeled,transfer,val,test}.parquet."""
    hidden: Path
    """Folder of the hidden-state stores <split>.zarr."""
    out: Path
    """Output folder, replaced atomically."""


def run(config: ProbeConfig, paths: ProbePaths) -> ProbeResult:
    """Fit, predict, calibrate and measure every layer; write `paths.out`."""
    splits, stores = open_inputs(paths.prepared, paths.hidden)
    result = fit_all_layers(splits, stores, config)
    teacher_probs = {}
    for name in ("val", "test"):
        logits = stores[name].option_logits()
        teacher_probs[name] = None if logits is None else masked_softmax(logits, splits[name].valid_mask())
    scores = stores["test"].cloze()  # the probe plot's second reference line
    teacher_probs["cloze_test"] = None if scores is None else masked_softmax(scores, splits["test"].valid_mask())
    result.layer_metrics = layer_metrics(result, splits, teacher_probs)
    provenance = {
        "config": asdict(config),
        "teacher": stores["labeled"].attrs.get("teacher"),
        "n_teacher_layers": stores["labeled"].n_teacher_layers,
    }
    write_outputs(paths.out, result, splits, provenance)
    log.info("probe: wrote %s", paths.out)
    return result
