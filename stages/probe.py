"""Fit a probe per teacher layer with K-fold cross-fitting on `labeled`; per-layer metrics and plots.

Reads the four hidden-state stores layer chunk by layer chunk (never the whole store), fits every (fold, layer)
probe of a chunk at once (`stages.probe_fit`), and writes `data/probe/` atomically:
- `probs.safetensors`: per-layer probabilities `<split>` (n_layers, n_examples, n_slots) for every split
  (out-of-fold for `labeled`), `labeled_fold`, `layers`, `temperature`; so `label` never refits.
- `weights.safetensors`: the probes refit on all of `labeled` (standardisation stats included).
- `metrics.json` (best cross-validated layer, flat), `layers.json` (every layer), `plots/layers.csv`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from safetensors.torch import save_file

from stages.atomic import atomic_path
from stages.errors import InputError, exits_cleanly
from stages.hidden_store import HiddenStore
from stages.metrics import best_layer_index, masked_softmax, summary
from stages.params import load_params, section
from stages.probe_fit import KINDS, FitSettings, cross_fit, fit_temperature, predict
from stages.schema import SPLITS, Split, read_split

log = logging.getLogger(__name__)
CHUNK_BYTES = 512 * 2**20  # float32 features of one layer chunk; fitting needs about 3x this


@dataclass(frozen=True)
class ProbeConfig:
    """The `probe` section of params.yaml (minus `layer`, which only `label` reads) and the global seed."""

    kind: str = "logistic"
    """logistic (multinomial logistic regression) or mlp (one hidden layer of 64 GELU units)."""
    l2: float = 1e-3
    """L2 penalty: objective = mean cross-entropy + l2 / 2 * ||W||^2 (scikit-learn C = 1 / (n_train * l2))."""
    folds: int = 5
    """K for cross-fitting on `labeled`: each labeled example is predicted by the probe that did not see it."""
    calibrate: bool = True
    """Fit one temperature per layer on `val` by NLL and apply it to every split's probabilities."""
    seed: int = 0
    """Seeds the fold assignment and the MLP initialisation."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"probe.kind={self.kind!r}; use one of {list(KINDS)}")
        if not self.l2 > 0:
            raise InputError(f"probe.l2={self.l2}; use a positive penalty such as 1e-3")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise InputError(f"probe.folds={self.folds!r}; cross-fitting needs an integer >= 2")

    @classmethod
    def from_params(cls, params: dict) -> ProbeConfig:
        probe = section(params, "probe")
        return cls(
            kind=probe["kind"],
            l2=float(probe["l2"]),
            folds=probe["folds"],
            calibrate=bool(probe["calibrate"]),
            seed=int(params["seed"]),
        )

    @property
    def fit_settings(self) -> FitSettings:
        return FitSettings(kind=self.kind, l2=self.l2, seed=self.seed)


@dataclass
class ProbeResult:
    layers: list[int]
    logits: dict[str, torch.Tensor]  # split -> (n_layers, n_examples, n_slots), -inf on invalid slots
    probs: dict[str, np.ndarray]  # split -> (n_layers, n_examples, n_slots), calibrated when asked
    labeled_fold: np.ndarray  # (n_labeled,)
    temperature: np.ndarray  # (n_layers,)
    weights: dict[str, torch.Tensor]  # refit on all labeled; leading dim n_layers
    layer_metrics: list[dict] = field(default_factory=list)


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
    per_chunk = max(1, CHUNK_BYTES // (4 * n_max * d_model))
    logits: dict[str, list[torch.Tensor]] = {name: [] for name in splits}
    weights: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(layers), per_chunk):
        slots = range(start, min(start + per_chunk, len(layers)))
        log.info("probe: layers %s..%s of %s", layers[slots[0]], layers[slots[-1]], layers)
        features = _read_chunk(stores["labeled"], slots)  # (chunk, n_labeled, d_model)
        out_of_fold, refit = cross_fit(features, answers["labeled"], valid["labeled"], fold_of, config.fit_settings)
        logits["labeled"].append(out_of_fold)
        weights.append(refit)
        for name in splits:
            if name != "labeled":
                logits[name].append(predict(refit, _read_chunk(stores[name], slots), valid[name]))
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


def _read_chunk(store: HiddenStore, slots: range) -> torch.Tensor:
    return torch.from_numpy(np.stack([store.read_layer(slot) for slot in slots]))


def layer_metrics(result: ProbeResult, splits: dict[str, Split], teacher_probs: dict[str, np.ndarray | None]) -> list:
    """One dict per layer: cv (out-of-fold labeled), val and test metrics, teacher output accuracy beside them."""
    teacher = {
        f"teacher_{name}_acc": summary(probs, splits[name].answers)["acc"]
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


def write_outputs(out: Path, result: ProbeResult, splits: dict[str, Split], provenance: dict) -> None:
    """Everything into a temporary folder, renamed to `out` only when complete."""
    rows = result.layer_metrics
    best = rows[best_layer_index([row["cv_acc"] for row in rows], result.layers)]
    metadata = {key: json.dumps(value, sort_keys=True) for key, value in provenance.items()}
    metadata["example_ids"] = json.dumps({name: split.ids for name, split in splits.items()})
    with atomic_path(out, directory=True) as temp:
        temp.mkdir(parents=True, exist_ok=True)
        layers = torch.tensor(result.layers, dtype=torch.int64)
        temperature = torch.from_numpy(result.temperature.astype(np.float32))
        tensors = {name: torch.from_numpy(probs) for name, probs in result.probs.items()}
        extra = {"labeled_fold": torch.from_numpy(result.labeled_fold), "layers": layers, "temperature": temperature}
        save_file({**tensors, **extra}, str(temp / "probs.safetensors"), metadata=metadata)
        weights = {name: w.contiguous() for name, w in result.weights.items()}
        save_file(
            {**weights, "layers": layers, "temperature": temperature}, str(temp / "weights.safetensors"), metadata
        )
        (temp / "metrics.json").write_text(json.dumps({"best_layer": best["layer"], **best}, indent=2) + "\n")
        (temp / "layers.json").write_text(json.dumps(rows, indent=2) + "\n")
        (temp / "plots").mkdir()
        # teacher_acc is the teacher's own letter accuracy on test (a reference line); empty for encoder teachers.
        lines = ["layer,cv_acc,val_acc,test_acc,teacher_acc"]
        for row in rows:
            values = [row["layer"], row["cv_acc"], row["val_acc"], row["test_acc"], row.get("teacher_test_acc", "")]
            lines.append(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values))
        (temp / "plots" / "layers.csv").write_text("\n".join(lines) + "\n")


def open_inputs(prepared: Path, hidden: Path) -> tuple[dict[str, Split], dict[str, HiddenStore]]:
    splits = {name: read_split(prepared / f"{name}.parquet") for name in SPLITS}
    stores = {name: HiddenStore.open(hidden / f"{name}.zarr") for name in SPLITS}
    for name in SPLITS:
        if stores[name].example_ids != splits[name].ids:
            raise InputError(
                f"{hidden / name}.zarr: example ids differ from {prepared / name}.parquet; rerun `dvc repro extract`"
            )
        if stores[name].layers != stores["labeled"].layers:
            raise InputError(f"{hidden / name}.zarr holds other layers than labeled.zarr; rerun `dvc repro extract`")
    return splits, stores


@exits_cleanly
def main(
    prepared: Annotated[Path, typer.Option(help="Folder of the prepared split parquet files.")] = Path("data/prepared"),
    hidden: Annotated[Path, typer.Option(help="Folder of the hidden-state stores <split>.zarr.")] = Path("data/hidden"),
    out: Annotated[Path, typer.Option(help="Output folder (replaced atomically).")] = Path("data/probe"),
    params_file: Annotated[Path, typer.Option(help="Parameters file (reads seed, probe).")] = Path("params.yaml"),
) -> None:
    """Fit a probe per layer with cross-fitting; per-layer metrics and plots."""
    config = ProbeConfig.from_params(load_params("probe", params_file))
    splits, stores = open_inputs(prepared, hidden)
    result = fit_all_layers(splits, stores, config)
    teacher_probs = {}
    for name in ("val", "test"):
        logits = stores[name].option_logits()
        teacher_probs[name] = None if logits is None else masked_softmax(logits, splits[name].valid_mask())
    result.layer_metrics = layer_metrics(result, splits, teacher_probs)
    provenance = {
        "config": asdict(config),
        "teacher": stores["labeled"].attrs.get("teacher"),
        "n_teacher_layers": stores["labeled"].n_teacher_layers,
    }
    write_outputs(out, result, splits, provenance)
    log.info("probe: wrote %s", out)
