import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from stages.core.errors import InputError
from stages.core.metrics import masked_softmax
from stages.core.predictions import read_predictions
from stages.label import main
from stages.label import main as label_main
from stages.probe import main as probe_main
from stages.probing.label_files import read_labels, read_metadata
from stages.probing.labeling import label_quality, read_label_config, select_layer
from stages.probing.readouts import Missing, checked, softmax_all
from stages.sources.schema import read_split
from stages.store.reader import HiddenStore
from tests.test_probe import INFORMATIVE, N_LAYERS, make_world, write_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def command(function) -> typer.Typer:
    app = typer.Typer()
    app.command()(function)
    return app


def run_pipeline(root, **probe_params):
    """probe then label on a synthetic world under `root`; returns the labels folder."""
    prepared, hidden = root / "prepared", root / "hidden"
    params = write_params(root, **probe_params)
    common = ["--prepared", str(prepared), "--hidden", str(hidden), "--params-file", str(params)]
    result = CliRunner().invoke(command(probe_main), [*common, "--out", str(root / "probe")])
    assert result.exit_code == 0, result.output
    args = [*common, "--probe", str(root / "probe"), "--out", str(root / "labels")]
    return CliRunner().invoke(command(label_main), args)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("label")
    make_world(root)
    result = run_pipeline(root)
    assert result.exit_code == 0, result.output
    return root


def test_auto_layer_and_label_files(labelled):
    labels = labelled / "labels"
    labeled = read_split(labelled / "prepared" / "labeled.parquet")
    transfer = read_split(labelled / "prepared" / "transfer.parquet")
    probe = read_labels(labels / "probe.parquet", labeled, "labeled")
    assert probe.shape == (labeled.n_examples, 26)
    assert np.all(probe[~labeled.valid_mask()] == 0)
    assert (probe.argmax(1) == labeled.answers).mean() > 0.8  # the informative layer was picked
    table = pq.read_table(labels / "probe.parquet").to_pydict()
    assert set(table["layer"]) == {INFORMATIVE}
    folds = [f for f, s in zip(table["fold"], table["split"], strict=True) if s == "labeled"]
    assert set(folds) == {0, 1, 2, 3}
    assert all(f is None for f, s in zip(table["fold"], table["split"], strict=True) if s == "transfer")
    metadata = read_metadata(labels / "probe.parquet")
    assert metadata["kind"] == "probe" and metadata["layer"] == INFORMATIVE and metadata["temperature"] > 0
    assert metadata["teacher"] == {"model": "synthetic", "revision": "abc", "kind": "causal_lm"}
    teacher = read_labels(labels / "teacher.parquet", transfer, "transfer")
    assert np.all(teacher[~transfer.valid_mask()] == 0)
    assert read_metadata(labels / "teacher.parquet")["available"] is True
    quality = json.loads((labels / "quality.json").read_text())
    assert quality["probe"]["acc"] > 0.8 > quality["teacher"]["acc"]
    assert quality["cloze"]["acc"] > quality["teacher"]["acc"] and quality["cloze"]["available"] is True
    assert quality["probe"]["layer"] == INFORMATIVE


def test_cloze_labels_are_calibrated_on_val(labelled):
    labels = labelled / "labels"
    transfer = read_split(labelled / "prepared" / "transfer.parquet")
    cloze = read_labels(labels / "cloze.parquet", transfer, "transfer")
    metadata = read_metadata(labels / "cloze.parquet")
    assert metadata["kind"] == "cloze" and metadata["available"] is True
    assert metadata["temperature"] > 1.5  # the synthetic log-likelihoods are over-confident by a factor of ~4
    assert np.all(cloze[~transfer.valid_mask()] == 0)
    scores = HiddenStore.open(labelled / "hidden" / "transfer.zarr").cloze()
    uncalibrated = masked_softmax(scores, transfer.valid_mask())
    np.testing.assert_allclose(cloze, masked_softmax(scores, transfer.valid_mask(), metadata["temperature"]), atol=1e-6)
    assert cloze.max(axis=1).mean() < uncalibrated.max(axis=1).mean() - 0.05  # softened by the temperature


def test_every_readout_on_every_split_and_the_test_predictions(labelled):
    readouts = json.loads((labelled / "labels" / "readouts.json").read_text())
    assert readouts["layer"] == INFORMATIVE
    for readout in ("teacher_letter", "teacher_cloze", "teacher_cloze_norm", "probe"):
        assert set(readouts[readout]) == {"labeled_acc", "transfer_acc", "val_acc", "test_acc"}
    assert readouts["probe"]["test_acc"] > 0.8 > readouts["teacher_letter"]["test_acc"]
    assert readouts["teacher_cloze"]["test_acc"] == readouts["teacher_cloze_norm"]["test_acc"]  # norm: halved
    ids, answers, correct = read_predictions(labelled / "labels" / "test_predictions.parquet")
    test = read_split(labelled / "prepared" / "test.parquet")
    assert ids == test.ids and answers.tolist() == test.answers.tolist()
    assert {name: float(c.mean()) for name, c in correct.items()} == pytest.approx(
        {name: readouts[name]["test_acc"] for name in correct}
    )


def test_out_of_fold_labels_are_not_in_sample(labelled):
    # A labeled example's label comes from a probe that did not see it: it is less sure of the gold than the
    # refit probe that did (cross-fitting is what keeps probe-KD from collapsing into gold fine-tuning).
    from safetensors.numpy import load_file

    weights = load_file(str(labelled / "probe" / "weights.safetensors"))
    labeled = read_split(labelled / "prepared" / "labeled.parquet")
    probe = read_labels(labelled / "labels" / "probe.parquet", labeled, "labeled")
    assert weights["w"].shape[0] == N_LAYERS
    rows = np.arange(labeled.n_examples)
    assert probe[rows, labeled.answers].mean() < 0.999
    assert not np.allclose(probe[rows, labeled.answers], 1.0, atol=1e-3)


def test_outputs_are_deterministic_and_teacher_labels_ignore_the_layer(labelled):
    labels = labelled / "labels"
    files = ("probe.parquet", "teacher.parquet", "cloze.parquet", "test_predictions.parquet")
    before = {name: (labels / name).read_bytes() for name in files}
    result = run_pipeline(labelled)
    assert result.exit_code == 0, result.output
    assert all((labels / name).read_bytes() == before[name] for name in files)
    other = run_pipeline(labelled, layer=0)
    assert other.exit_code == 0, other.output
    assert (labels / "teacher.parquet").read_bytes() == before["teacher.parquet"]
    assert (labels / "cloze.parquet").read_bytes() == before["cloze.parquet"]
    assert (labels / "probe.parquet").read_bytes() != before["probe.parquet"]


def test_encoder_teacher_has_no_teacher_labels(tmp_path):
    make_world(tmp_path, encoder=True)
    result = run_pipeline(tmp_path)
    assert result.exit_code == 0, result.output
    labels = tmp_path / "labels"
    assert pq.read_table(labels / "teacher.parquet").num_rows == 0
    assert read_metadata(labels / "teacher.parquet")["available"] is False
    transfer = read_split(tmp_path / "prepared" / "transfer.parquet")
    with pytest.raises(InputError, match="no teacher labels: teacher synthetic has no LM head"):
        read_labels(labels / "teacher.parquet", transfer, "transfer")
    with pytest.raises(InputError, match="no cloze labels: .*synthetic"):
        read_labels(labels / "cloze.parquet", transfer, "transfer")
    quality = json.loads((labels / "quality.json").read_text())
    assert quality["teacher"] == {"available": False} and quality["cloze"] == {"available": False}
    assert read_labels(labels / "probe.parquet", transfer, "transfer").shape == (transfer.n_examples, 26)
    readouts = json.loads((labels / "readouts.json").read_text())
    assert readouts["teacher_letter"]["available"] is False and "encoder-only" in readouts["teacher_letter"]["why"]
    _, _, correct = read_predictions(labels / "test_predictions.parquet")
    assert set(correct) == {"probe"}  # the unavailable readouts are null columns


def test_without_cloze_the_cloze_labels_say_why(tmp_path):
    make_world(tmp_path, cloze=False)
    result = run_pipeline(tmp_path)
    assert result.exit_code == 0, result.output
    metadata = read_metadata(tmp_path / "labels" / "cloze.parquet")
    assert metadata["available"] is False and metadata["missing"].startswith("extract.cloze is false")
    assert read_metadata(tmp_path / "labels" / "teacher.parquet")["available"] is True


def test_out_of_range_layer_fails_cleanly(labelled):
    result = run_pipeline(labelled, layer=N_LAYERS)
    assert result.exit_code == 2
    assert f"probe.layer={N_LAYERS} but the teacher has layers 0..{N_LAYERS - 1}" in result.output


LAYERS = [0, 1, 2, 3, 4]


def test_select_layer_auto_takes_best_and_ties_go_shallower():
    assert select_layer("auto", LAYERS, 5, [0.2, 0.5, 0.9, 0.9, 0.1]) == 2
    assert select_layer("auto", [3, 1, 2], 5, [0.9, 0.9, 0.5]) == 1  # teacher layer 1 beats layer 3


def test_select_layer_integer_and_negative():
    assert select_layer(3, LAYERS, 5, [0.0] * 5) == 3
    assert select_layer(-1, LAYERS, 5, [0.0] * 5) == 4
    assert select_layer(-5, LAYERS, 5, [0.0] * 5) == 0
    assert select_layer(-1, [0, 2, 4], 5, [0.0] * 3) == 2


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (5, r"probe.layer=5 but the teacher has layers 0..4 \(or -5..-1 from the last\)"),
        (-6, r"probe.layer=-6 but the teacher has layers 0..4"),
    ],
)
def test_select_layer_out_of_range(layer, message):
    with pytest.raises(InputError, match=message):
        select_layer(layer, LAYERS, 5, [0.0] * 5)


def test_select_layer_not_probed():
    with pytest.raises(InputError, match=r"probe.layer=1 \(teacher layer 1\) was not probed; probed layers: \[0, 2\]"):
        select_layer(1, [0, 2], 3, [0.0, 0.0])


@pytest.mark.parametrize("layer", ["last", 2.5, True])
def test_config_rejects_non_integer_layers(layer):
    with pytest.raises(InputError, match="probe.layer=.* must be auto or an integer"):
        read_label_config({"probe": {"layer": layer}})


def test_readouts_softmax_over_valid_options(labelled):
    split = read_split(labelled / "prepared" / "transfer.parquet")
    logits = np.full((split.n_examples, 26), np.nan, dtype=np.float32)
    for row, n in enumerate(split.n_choices):
        logits[row, :n] = np.arange(n)
    probs = softmax_all({"transfer": checked(logits, split, "transfer", "letter")}, {"transfer": split})
    row = int(np.argmax(split.n_choices == 3))
    np.testing.assert_allclose(probs["transfer"][row, :3], np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum(), rtol=1e-6)
    logits[row, 0] = np.nan
    with pytest.raises(InputError, match="the transfer store's letter scores are NaN on a valid option"):
        checked(logits, split, "transfer", "letter")
    assert softmax_all(Missing("why"), {"transfer": split}) == Missing("why")


def test_label_quality_keys():
    probs = {"transfer": np.array([[0.9, 0.1], [0.4, 0.6]])}
    readouts = {"probe": probs, "teacher_letter": Missing("encoder"), "teacher_cloze": probs}
    quality = label_quality(readouts, np.array([0, 0]), layer=3)
    assert quality["probe"]["acc"] == pytest.approx(0.5) and quality["probe"]["layer"] == 3
    assert quality["teacher"] == {"available": False} and quality["cloze"]["available"] is True
    assert main.__doc__.startswith("Write probe, teacher-letter and teacher-cloze labels")
