import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.numpy import load_file
from typer.testing import CliRunner

from stages.core.errors import InputError
from stages.probe import main
from stages.probing.fit import FitSettings, cross_fit, predict
from stages.probing.per_layer import ProbeConfig, assign_folds, fit_all_layers, open_inputs, read_probe_config
from stages.sources.schema import SPLITS, write_split
from stages.store.reader import HiddenStore
from tests.synthetic_stores import write_store

SIZES = {"labeled": 120, "transfer": 80, "val": 80, "test": 80}
INFORMATIVE = 2  # teacher layer whose hidden state carries the answer linearly
N_LAYERS, D_MODEL = 4, 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_world(
    root: Path, *, encoder: bool = False, seed: int = 0, signal: float = 3.0, cloze: bool = True, options: bool = True
) -> tuple[Path, Path]:
    """Prepared splits with 3..5 choices and stores where only layer INFORMATIVE encodes the answer (at the answer
    position and, with `options`, in the correct option's own state); the teacher's letters are weakly informative,
    its cloze scores (absent for an encoder or with cloze=False) more so."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(5, D_MODEL))  # one direction per answer slot
    prepared, hidden = root / "prepared", root / "hidden"
    prepared.mkdir(parents=True)
    hidden.mkdir(parents=True)
    for name, n_examples in SIZES.items():
        n_choices = rng.integers(3, 6, size=n_examples)
        answers = rng.integers(0, n_choices)
        ids = [f"{name}-{i}" for i in range(n_examples)]
        rows = [
            {"id": ids[i], "question": f"q{i}", "choices": [f"c{j}" for j in range(n_choices[i])], "answer": answers[i]}
            for i in range(n_examples)
        ]
        write_split(rows, prepared / f"{name}.parquet")
        states = rng.normal(size=(n_examples, N_LAYERS, D_MODEL)) * 2 + 1
        states[:, INFORMATIVE] += signal * directions[answers]
        logits, scores = np.full((n_examples, 26), np.nan), np.full((n_examples, 26), np.nan)
        for i in range(n_examples):
            logits[i, : n_choices[i]] = rng.normal(size=n_choices[i])
            logits[i, answers[i]] += 1.0  # a weakly informative teacher output
            scores[i, : n_choices[i]] = rng.normal(size=n_choices[i]) * 4 - 10  # log-likelihoods, badly scaled
            scores[i, answers[i]] += 6.0
        option_states = rng.normal(size=(n_examples, N_LAYERS, int(n_choices.max()), D_MODEL)) * 2 + 1
        option_states[np.arange(n_examples), INFORMATIVE, answers] += signal * directions[0]
        option_states *= np.arange(option_states.shape[2])[None, None, :, None] < n_choices[:, None, None, None]
        write_store(hidden / f"{name}.zarr", ids, states, None if encoder else logits,
                    cloze=None if encoder or not cloze else scores,
                    option_states=option_states if options else None)  # fmt: skip
    return prepared, hidden


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def fitted(world):
    splits, stores = open_inputs(*world)
    return splits, fit_all_layers(splits, stores, ProbeConfig(folds=4, l2=1e-2))


def test_informative_layer_is_recovered(fitted):
    splits, result = fitted
    cv_acc = [(np.argmax(p, axis=1) == splits["labeled"].answers).mean() for p in result.probs["labeled"]]
    assert int(np.argmax(cv_acc)) == INFORMATIVE
    assert cv_acc[INFORMATIVE] > 0.8
    test_acc = (np.argmax(result.probs["test"][INFORMATIVE], axis=1) == splits["test"].answers).mean()
    assert test_acc > 0.8
    assert max(a for i, a in enumerate(cv_acc) if i != INFORMATIVE) < 0.5  # noise layers near chance (~1/4)


def test_invalid_slots_get_zero_probability(fitted):
    splits, result = fitted
    for name, split in splits.items():
        probs = result.probs[name]  # (n_layers, n_examples, n_slots)
        assert probs.shape == (N_LAYERS, split.n_examples, 5)
        valid = split.valid_mask()[:, :5]
        assert np.all(probs[:, ~valid] == 0)
        np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)


def test_cross_fitting_is_out_of_fold(world, fitted):
    splits, result = fitted
    folds = result.labeled_fold
    assert set(folds.tolist()) == {0, 1, 2, 3}
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    # The refit probe saw every labeled example: its in-sample predictions are more confident in gold.
    _, stores = open_inputs(*world)
    features = torch.from_numpy(np.stack([stores["labeled"].read_layer(slot) for slot in range(N_LAYERS)]))
    valid = torch.from_numpy(splits["labeled"].valid_mask()[:, :5])
    answers = splits["labeled"].answers
    rows = np.arange(len(answers))
    in_sample = torch.softmax(predict(result.weights, features, valid), dim=-1).numpy()[INFORMATIVE, rows, answers]
    out_of_fold = torch.softmax(result.logits["labeled"], dim=-1).numpy()[INFORMATIVE, rows, answers]
    assert np.mean(in_sample) > np.mean(out_of_fold) + 1e-3


def test_out_of_fold_predictions_ignore_their_own_labels(world):
    # Relabelling fold-0 examples must not change their predictions: the probe that scores them never saw them.
    splits, stores = open_inputs(*world)
    features = torch.from_numpy(np.stack([stores["labeled"].read_layer(slot) for slot in range(N_LAYERS)]))
    valid = torch.from_numpy(splits["labeled"].valid_mask()[:, :5])
    answers = torch.tensor(splits["labeled"].answers)
    folds = assign_folds(len(answers), 4, 0)
    settings = FitSettings(l2=1e-2)
    oof, _ = cross_fit(features, answers, valid, folds, settings)
    relabelled = answers.clone()
    relabelled[folds == 0] = 0
    oof_relabelled, refit = cross_fit(features, relabelled, valid, folds, settings)
    held_out = torch.from_numpy(folds == 0)
    probs, probs_relabelled = torch.softmax(oof, -1), torch.softmax(oof_relabelled, -1)
    torch.testing.assert_close(probs[:, held_out], probs_relabelled[:, held_out], atol=2e-3, rtol=0)
    assert (probs[:, ~held_out] - probs_relabelled[:, ~held_out]).abs().max() > 0.05


def test_calibration_lowers_val_nll(world, fitted):
    splits, calibrated = fitted
    _, stores = open_inputs(*world)
    raw = fit_all_layers(splits, stores, ProbeConfig(folds=4, l2=1e-2, calibrate=False))
    answers = splits["val"].answers
    rows = np.arange(len(answers))
    for layer in range(N_LAYERS):
        nll_raw = -np.log(raw.probs["val"][layer, rows, answers]).mean()
        nll_cal = -np.log(calibrated.probs["val"][layer, rows, answers]).mean()
        assert nll_cal <= nll_raw + 1e-6
    assert np.all(raw.temperature == 1.0)
    assert not np.allclose(calibrated.temperature, 1.0)


def test_folds_are_seeded():
    assert np.array_equal(assign_folds(10, 3, 0), assign_folds(10, 3, 0))
    assert not np.array_equal(assign_folds(50, 3, 0), assign_folds(50, 3, 1))
    with pytest.raises(InputError, match="probe.folds=5 but `labeled` has only 3"):
        assign_folds(3, 5, 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "svm"}, "probe.kind='svm' must be one of logistic, mlp, per_option"),
        ({"l2": 0.0}, "probe.l2=0.0 must be > 0"),
        ({"folds": 1}, "probe.folds=1: cross-fitting needs >= 2"),
        ({"folds": "5"}, "probe.folds='5' must be an integer"),
        ({"calibrate": "false"}, "probe.calibrate='false' must be true or false"),
    ],
)
def test_config_errors(changes, message):
    params = {"seed": 0, "probe": {"kind": "logistic", "l2": 1e-2, "folds": 4, "calibrate": True, "layer": "auto"}}
    params["probe"].update(changes)
    with pytest.raises(InputError, match=re.escape(message)):
        read_probe_config(params)


def test_mlp_kind_finds_the_layer(world):
    splits, stores = open_inputs(*world)
    result = fit_all_layers(splits, stores, ProbeConfig(kind="mlp", folds=3, l2=1e-2))
    cv_acc = [(np.argmax(p, axis=1) == splits["labeled"].answers).mean() for p in result.probs["labeled"]]
    assert int(np.argmax(cv_acc)) == INFORMATIVE and cv_acc[INFORMATIVE] > 0.7


def test_per_option_kind_finds_the_layer(world):
    splits, stores = open_inputs(*world)
    result = fit_all_layers(splits, stores, ProbeConfig(kind="per_option", folds=3, l2=1e-2))
    cv_acc = [(np.argmax(p, axis=1) == splits["labeled"].answers).mean() for p in result.probs["labeled"]]
    test_acc = (np.argmax(result.probs["test"][INFORMATIVE], axis=1) == splits["test"].answers).mean()
    assert int(np.argmax(cv_acc)) == INFORMATIVE and cv_acc[INFORMATIVE] > 0.8 and test_acc > 0.8
    assert max(a for i, a in enumerate(cv_acc) if i != INFORMATIVE) < 0.5
    assert result.weights["w"].shape == (N_LAYERS, D_MODEL) and result.probs["test"].shape[2] == 5
    assert np.isfinite(result.temperature).all()


def test_per_option_kind_without_option_states_says_what_to_do(tmp_path):
    splits, stores = open_inputs(*make_world(tmp_path, options=False))
    with pytest.raises(InputError, match=r"probe.kind=per_option needs per-option states, but .*labeled.zarr has none: "
                       r"extract.option_states is false"):  # fmt: skip
        fit_all_layers(splits, stores, ProbeConfig(kind="per_option", folds=3))


def test_ids_mismatch_is_an_input_error(tmp_path):
    prepared, hidden = make_world(tmp_path)
    group = zarr.open_group(str(hidden / "val.zarr"), mode="r+")
    group.attrs["example_ids"] = list(reversed(group.attrs["example_ids"]))
    with pytest.raises(InputError, match="val.zarr: example ids differ"):
        open_inputs(prepared, hidden)


def write_params(folder: Path, **probe) -> Path:
    params = {"seed": 0, "probe": {"kind": "logistic", "l2": 1e-2, "folds": 4, "calibrate": True, "layer": "auto"}}
    params["probe"].update(probe)
    path = folder / "params.yaml"
    path.write_text(json.dumps(params))
    return path


def test_command_writes_the_probe_folder(world, tmp_path):
    out = tmp_path / "probe"
    args = ["--prepared", str(world[0]), "--hidden", str(world[1]), "--out", str(out)]
    import typer

    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, [*args, "--params-file", str(write_params(tmp_path))])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_layer"] == INFORMATIVE and metrics["cv_acc"] > 0.8
    assert 0 < metrics["teacher_test_acc"] < 1
    layers = json.loads((out / "layers.json").read_text())
    assert [row["layer"] for row in layers] == list(range(N_LAYERS))
    csv = (out / "plots" / "layers.csv").read_text().splitlines()
    assert csv[0] == "layer,cv_acc,val_acc,test_acc,teacher_acc,teacher_cloze_acc" and len(csv) == N_LAYERS + 1
    reference = {"teacher_acc": metrics["teacher_test_acc"], "teacher_cloze_acc": metrics["teacher_cloze_test_acc"]}
    assert 0 < reference["teacher_cloze_acc"] <= 1  # the world's cloze scores are informative
    for line in csv[1:]:  # the same two reference values on every layer
        assert [float(value) for value in line.split(",")[4:]] == pytest.approx(list(reference.values()), abs=1e-5)
    probs = load_file(str(out / "probs.safetensors"))
    assert probs["test"].shape == (N_LAYERS, SIZES["test"], 5)
    assert probs["labeled_fold"].shape == (SIZES["labeled"],)
    weights = load_file(str(out / "weights.safetensors"))
    assert weights["w"].shape == (N_LAYERS, D_MODEL, 5)
    assert not list(tmp_path.glob(".tmp-*"))
    bad = CliRunner().invoke(app, [*args, "--params-file", str(write_params(tmp_path, folds=1000))])
    assert bad.exit_code == 2 and "probe.folds=1000" in bad.output
    assert HiddenStore.open(world[1] / "test.zarr").shape[1] == N_LAYERS
    assert set(SPLITS) <= set(probs)
