"""The prepare stage: config validation, the split rule, determinism, outputs, and the CLI on bad input."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from stages.errors import InputError
from stages.prepare import PrepareConfig, assign_splits, prepare, rank_order, warn_if_not_a_dep
from stages.schema import SPLITS, read_split

DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]


def pool(n: int, prefix: str = "q") -> list[dict]:
    return [{"id": f"{prefix}{i}", "question": f"Q{i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(n)]


def ids(rows: list[dict]) -> list[str]:
    return [row["id"] for row in rows]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labeled": 0}, r"data.labeled must be an integer >= 1; got 0"),
        ({"transfer": -1}, r"data.transfer must be an integer >= 0; got -1"),
        ({"val": "many"}, r"data.val must be an integer >= 1; got 'many'"),
        ({"on_invalid": "ignore"}, r"data.on_invalid must be `error` or `skip`; got 'ignore'"),
        ({"dataset": ""}, r"data.dataset must be a dataset name or a path"),
    ],
)
def test_config_validation_names_the_param(change, message):
    with pytest.raises(InputError, match=message):
        PrepareConfig(**change)


def test_config_unknown_key():
    with pytest.raises(InputError, match=r"unknown key\(s\) in `data`: \['labelled'\]"):
        PrepareConfig.from_params({"labelled": 3})


# ------------------------------------------------------------------ the split rule (pure)


def test_rank_order_does_not_depend_on_pool_size():
    small, large = rank_order(pool(50), seed=3), rank_order(pool(500), seed=3)
    small_ids = set(ids(small))
    assert [i for i in ids(large) if i in small_ids] == ids(small)
    assert ids(rank_order(pool(50), seed=4)) != ids(small)


def test_labeled_first_transfer_last_disjoint_and_stable_under_labeled_sweeps():
    splits = {"train": pool(100), "val": pool(30, "v"), "test": pool(40, "t")}
    results = {n: assign_splits(splits, PrepareConfig(labeled=n, transfer=20, val=10, test=15), 0)[0] for n in (5, 40)}
    for n, prepared in results.items():
        assert len(prepared["labeled"]) == n and len(prepared["transfer"]) == 20
        assert not set(ids(prepared["labeled"])) & set(ids(prepared["transfer"]))
        assert (len(prepared["val"]), len(prepared["test"])) == (10, 15)
    assert ids(results[5]["transfer"]) == ids(results[40]["transfer"])
    assert ids(results[40]["labeled"])[:5] == ids(results[5]["labeled"])  # more budget only adds examples


def test_too_many_labeled_and_transfer_names_params_and_pool_size():
    config = PrepareConfig(dataset="arc_easy", labeled=60, transfer=50, val=5, test=5)
    with pytest.raises(InputError, match=r"data.labeled=60 \+ data.transfer=50 = 110, but the training pool of "
                       r"arc_easy has only 100 examples"):  # fmt: skip
        assign_splits({"train": pool(100), "val": pool(5, "v"), "test": pool(5, "t")}, config, 0)


def test_no_training_split_carves_the_pool_from_val():
    config = PrepareConfig(labeled=3, transfer=4, val=5, test=10)
    prepared, notes = assign_splits({"val": pool(20, "v"), "test": pool(6, "t")}, config, 0)
    assert len(prepared["val"]) == 5 and len(prepared["test"]) == 6
    assert not set(ids(prepared["val"])) & set(ids(prepared["labeled"]) + ids(prepared["transfer"]))
    assert notes[0] == "no training split: val keeps 5 examples, the other 15 form the pool"


def test_single_pool_carves_test_then_val():
    prepared, notes = assign_splits({"train": pool(30)}, PrepareConfig(labeled=4, transfer=6, val=5, test=7), 1)
    every = [i for name in SPLITS for i in ids(prepared[name])]
    assert len(every) == len(set(every)) == 4 + 6 + 5 + 7
    assert "no test split: test = first 7 examples of the training pool" in notes


# ------------------------------------------------------------------ the stage on files


def test_mmlu_fixture_end_to_end_with_metadata(tmp_path):
    config = PrepareConfig(dataset="mmlu", path=str(DATA / "mmlu"), labeled=2, transfer=3, val=2, test=3)
    counts = prepare(config, 7, {}, tmp_path / "prepared")
    assert counts == {"labeled": 2, "transfer": 3, "val": 2, "test": 3}
    metadata = pq.read_schema(tmp_path / "prepared" / "labeled.parquet").metadata
    assert metadata[b"dataset"] == b"mmlu" and metadata[b"origin"] == str(DATA / "mmlu").encode()
    assert metadata[b"seed"] == b"7" and metadata[b"n_examples"] == b"2" and metadata[b"split"] == b"labeled"
    assert json.loads(metadata[b"skipped"]) == {}
    assert json.loads(metadata[b"carving"]) == [
        "no training split: val keeps 2 examples, the other 7 form the pool",
        "pool of 7 training examples",
    ]
    test = read_split(tmp_path / "prepared" / "test.parquet")
    assert set(test.subjects) <= {"abstract_algebra", "high_school_physics"} and test.n_choices.tolist() == [4] * 3


def test_same_seed_gives_identical_bytes(tmp_path):
    config = PrepareConfig(dataset=str(DATA / "canonical" / "examples.jsonl"), labeled=3, transfer=4, val=2, test=2)
    prepare(config, 0, {}, tmp_path / "a")
    prepare(config, 0, {}, tmp_path / "b")
    prepare(config, 1, {}, tmp_path / "c")
    for name in SPLITS:
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (tmp_path / "b" / f"{name}.parquet").read_bytes()
    assert read_split(tmp_path / "a" / "labeled.parquet").ids != read_split(tmp_path / "c" / "labeled.parquet").ids


def test_labeled_sweep_leaves_transfer_val_and_test_files_byte_identical(tmp_path):
    dataset = str(DATA / "canonical" / "examples.jsonl")
    for n_labeled in (1, 4):
        prepare(
            PrepareConfig(dataset=dataset, labeled=n_labeled, transfer=4, val=2, test=2),
            0,
            {},
            tmp_path / f"{n_labeled}",
        )
    for name in ("transfer", "val", "test"):
        assert (tmp_path / "1" / f"{name}.parquet").read_bytes() == (tmp_path / "4" / f"{name}.parquet").read_bytes()
    assert (tmp_path / "1" / "labeled.parquet").read_bytes() != (tmp_path / "4" / "labeled.parquet").read_bytes()


def test_skipped_rows_are_recorded_in_metadata(tmp_path):
    file = tmp_path / "rows.jsonl"
    rows = pool(6) + [{"id": "bad", "question": "", "choices": ["a", "b"], "answer": 0}]
    file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = PrepareConfig(dataset=str(file), labeled=1, transfer=1, val=1, test=1, on_invalid="skip")
    prepare(config, 0, {}, tmp_path / "out")
    metadata = pq.read_schema(tmp_path / "out" / "val.parquet").metadata
    assert json.loads(metadata[b"skipped"]) == {str(file): 1}


def test_real_aqua_copy_carves_and_reports_the_small_pool(tmp_path):
    if not (SHARED / "aqua_rat").exists():
        pytest.skip(f"real AQuA-RAT copy {SHARED / 'aqua_rat'} not found (expected ../shared/data)")
    config = PrepareConfig(dataset="aqua_rat", path=str(SHARED / "aqua_rat"), labeled=64, transfer=1024)
    message = r"= 1088, but the training pool of aqua_rat has only 0 examples \(it has no training split: the pool is"
    with pytest.raises(InputError, match=message + r" what val leaves after data.val=256\)"):
        prepare(config, 0, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    config = PrepareConfig(dataset="aqua_rat", path=str(SHARED / "aqua_rat"), labeled=32, transfer=150, val=54)
    assert prepare(config, 0, {}, tmp_path / "out") == {"labeled": 32, "transfer": 150, "val": 54, "test": 254}


def test_builtin_dataset(tmp_path):
    if importlib.util.find_spec("stages.builtin_world") is None:
        pytest.skip("stages.builtin_world is not in this checkout yet")
    task = yaml.safe_load((ROOT / "params.yaml").read_text())["builtin"]["task"]
    task = {**task, "n_train": 96, "n_val": 24, "n_test": 32}
    config = PrepareConfig(dataset="builtin", labeled=24, transfer=48, val=24, test=32)
    assert prepare(config, 0, task, tmp_path / "out") == {"labeled": 24, "transfer": 48, "val": 24, "test": 32}
    labeled = read_split(tmp_path / "out" / "labeled.parquet")
    assert ((labeled.answers >= 0) & (labeled.answers < labeled.n_choices)).all()


def not_a_dep_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "will not rerun `prepare` under `dvc repro`" in r.getMessage()]


def test_local_data_outside_data_raw_warns_that_dvc_repro_will_not_see_it(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # stands for the repo root, where dvc runs the stage
    (tmp_path / "data" / "raw").mkdir(parents=True)
    for folder in (tmp_path, tmp_path / "data" / "raw"):
        shutil.copy(DATA / "canonical" / "examples.jsonl", folder)
    outside = tmp_path / "examples.jsonl"
    sizes = {"labeled": 3, "transfer": 4, "val": 2, "test": 2}
    caplog.set_level(logging.WARNING, logger="stages.prepare")
    prepare(PrepareConfig(dataset=str(outside), **sizes), 0, {}, tmp_path / "out")
    [message] = not_a_dep_warnings(caplog)
    assert message.startswith(f"data.dataset={outside} is outside data/raw/") and "move or copy it under" in message
    caplog.clear()
    for inside in ("data/raw/examples.jsonl", str(tmp_path / "data" / "raw" / "examples.jsonl")):
        prepare(PrepareConfig(dataset=inside, **sizes), 0, {}, tmp_path / "out")
    warn_if_not_a_dep(PrepareConfig(dataset="mmlu", path="data/raw/mmlu"))
    warn_if_not_a_dep(PrepareConfig(dataset="arc_easy"))  # the hub: nothing local
    warn_if_not_a_dep(PrepareConfig(dataset="builtin"))
    assert not_a_dep_warnings(caplog) == []
    warn_if_not_a_dep(PrepareConfig(dataset="mmlu", path="data/raw/../mmlu"))
    [message] = not_a_dep_warnings(caplog)
    assert message.startswith("data.path=data/raw/../mmlu is outside data/raw/")


# ------------------------------------------------------------------ the CLI


def write_params(folder: Path, dataset: str, **data) -> Path:
    params = {
        "seed": 0,
        "data": {"dataset": dataset, "path": None, "labeled": 2, "transfer": 3, "val": 2, "test": 2, **data},
        "builtin": {"task": {}},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_prepare(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages", "prepare", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_bad_input_exits_2_and_leaves_nothing(tmp_path):
    write_params(tmp_path, str(DATA / "bad" / "answer_out_of_range.jsonl"))
    done = run_prepare(tmp_path)
    assert done.returncode == 2
    assert "answer_out_of_range.jsonl line 2: answer 3 out of range for 3 choices" in done.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_cli_too_large_request_keeps_the_old_output_untouched(tmp_path):
    params = write_params(tmp_path, str(DATA / "canonical" / "examples.jsonl"))
    out = tmp_path / "prepared"
    assert run_prepare(tmp_path, "--params-file", str(params), "--out-dir", str(out)).returncode == 0
    before = {name: (out / f"{name}.parquet").read_bytes() for name in SPLITS}
    write_params(tmp_path, str(DATA / "canonical" / "examples.jsonl"), labeled=5, transfer=5)
    done = run_prepare(tmp_path, "--params-file", str(params), "--out-dir", str(out))
    assert done.returncode == 2 and "data.labeled=5 + data.transfer=5 = 10" in done.stderr
    assert {name: (out / f"{name}.parquet").read_bytes() for name in SPLITS} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "prepared"]
