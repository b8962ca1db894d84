"""Preparation (stages/sources/preparation.py): the `data` config, the setup read from params, the run on files."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from stages.core.config import build
from stages.core.errors import InputError
from stages.sources.builtin_world import TaskConfig
from stages.sources.preparation import (
    PrepareConfig,
    PreparePaths,
    PrepareSetup,
    check_tracked,
    read_prepare_setup,
    run,
)
from stages.sources.schema import SPLITS, read_split
from tests.two_processes import assert_same_bytes_in_two_processes

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[2]
RAW = Path("data/raw")  # the dvc.yaml dep of prepare, relative to the repo root dvc runs in
DEFAULTS = dataclasses.asdict(PrepareConfig())


def params_yaml() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def prepare(config: PrepareConfig, seed: int, out: Path, task: TaskConfig | None = None) -> dict[str, int]:
    """`prepare` on test files that lie outside data/raw/ (allowed here: data.allow_untracked)."""
    config = dataclasses.replace(config, allow_untracked=True)
    return run(PrepareSetup(config, seed, task), PreparePaths(raw=RAW, out=out))


def pool(n: int, prefix: str = "q") -> list[dict]:
    return [{"id": f"{prefix}{i}", "question": f"Q{i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(n)]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labeled": 0}, r"^params\.yaml: data\.labeled=0 must be >= 1$"),
        ({"transfer": -1}, r"^params\.yaml: data\.transfer=-1 must be >= 0$"),
        ({"val": "many"}, r"^params\.yaml: data\.val='many' must be an integer$"),
        ({"test": True}, r"^params\.yaml: data\.test=True must be an integer$"),
        ({"on_invalid": "ignore"}, r"^params\.yaml: data\.on_invalid='ignore' must be one of error, skip$"),
        ({"dataset": ""}, r"^params\.yaml: data\.dataset is empty; give builtin, a benchmark name or a path$"),
        ({"dataset": "  "}, r"^params\.yaml: data\.dataset is empty"),
        ({"path": 3}, r"^params\.yaml: data\.path=3 must be a string or null$"),
    ],
)
def test_config_validation_names_the_param(change, message):
    with pytest.raises(InputError, match=message):
        build(PrepareConfig, {**DEFAULTS, **change}, "data")


def test_config_unknown_key_suggests_the_parameter():
    labelled = {**DEFAULTS, "labelled": 3}
    del labelled["labeled"]
    with pytest.raises(
        InputError, match=r"^params\.yaml: data\.labelled is not a parameter; did you mean data\.labeled\?$"
    ):
        build(PrepareConfig, labelled, "data")


def test_config_from_the_repos_params_yaml():
    data = params_yaml()["data"]
    assert build(PrepareConfig, data, "data") == PrepareConfig(**data)


# ------------------------------------------------------------------ the setup read from params


def test_setup_reads_data_seed_and_the_builtin_task():
    params = params_yaml()
    setup = read_prepare_setup(params)
    assert setup.data == PrepareConfig(**params["data"]) and setup.data.dataset == "builtin"
    assert setup.task == TaskConfig(**params["builtin"]["task"])
    assert setup.seed == params["seed"] and setup.builtin_seed == params["builtin"]["seed"]


def test_seed_splits_the_builtin_pool_and_builtin_seed_makes_it(tmp_path):
    """`seed` reshuffles which questions land in which split; the questions themselves come from builtin.seed."""
    task = TaskConfig(n_categories=4, words_per_category=4, n_choices=4, n_train=40, n_val=8, n_test=8)
    config = PrepareConfig(labeled=4, transfer=20, val=8, test=8)

    def questions(seed: int, builtin_seed: int) -> dict[str, list[str]]:
        out = tmp_path / f"{seed}-{builtin_seed}"
        run(PrepareSetup(config, seed, task, builtin_seed), PreparePaths(raw=RAW, out=out))
        return {name: read_split(out / f"{name}.parquet").questions for name in SPLITS}

    base, reseeded, other_world = questions(0, 0), questions(1, 0), questions(0, 1)
    assert base["labeled"] != reseeded["labeled"]  # another split of the same pool
    assert sorted(base["test"]) == sorted(reseeded["test"])  # test keeps all 8: the same questions
    assert sorted(base["test"]) != sorted(other_world["test"])  # another world, other words


def test_setup_reads_builtin_task_only_for_the_builtin_dataset():
    params = {"seed": 3, "data": {**DEFAULTS, "dataset": "mmlu"}}  # no builtin section: not needed
    assert read_prepare_setup(params) == PrepareSetup(PrepareConfig(dataset="mmlu"), 3, None)
    with pytest.raises(InputError, match=r"^params\.yaml: section `builtin` is missing or not a mapping$"):
        read_prepare_setup({**params, "data": DEFAULTS})
    bad_task = {**params_yaml()["builtin"]["task"], "n_choices": "four"}
    with pytest.raises(InputError, match=r"^params\.yaml: builtin\.task\.n_choices='four' must be an integer$"):
        read_prepare_setup({**params, "data": DEFAULTS, "builtin": {"task": bad_task}})


def test_setup_checks_the_seed():
    params = {"seed": -1, "data": {**DEFAULTS, "dataset": "mmlu"}}
    with pytest.raises(InputError, match=r"^params\.yaml: seed=-1 must be an integer >= 0$"):
        read_prepare_setup(params)
    with pytest.raises(InputError, match=r"^params\.yaml: seed is missing"):
        read_prepare_setup({"data": params["data"]})


# ------------------------------------------------------------------ the run on files


def test_mmlu_fixture_end_to_end_with_metadata(tmp_path):
    config = PrepareConfig(dataset="mmlu", path=str(DATA / "mmlu"), labeled=2, transfer=3, val=2, test=3)
    counts = prepare(config, 7, tmp_path / "prepared")
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
    prepare(config, 0, tmp_path / "a")
    prepare(config, 0, tmp_path / "b")
    prepare(config, 1, tmp_path / "c")
    for name in SPLITS:
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (tmp_path / "b" / f"{name}.parquet").read_bytes()
    assert read_split(tmp_path / "a" / "labeled.parquet").ids != read_split(tmp_path / "c" / "labeled.parquet").ids


def prepare_examples(out: Path) -> None:
    """The canonical example file prepared at seed 0 (run in a subprocess by the two-process test)."""
    config = PrepareConfig(dataset=str(DATA / "canonical" / "examples.jsonl"), labeled=3, transfer=4, val=2, test=2)
    prepare(config, 0, out)


def test_two_processes_write_the_same_bytes(tmp_path):
    code = "import sys; from pathlib import Path; from tests.sources.test_preparation import prepare_examples; "
    files = assert_same_bytes_in_two_processes(code + "prepare_examples(Path(sys.argv[1]) / 'prepared')", tmp_path)
    assert sorted(files) == sorted(f"prepared/{name}.parquet" for name in (*SPLITS, "shots"))


def test_labeled_sweep_leaves_transfer_val_and_test_files_byte_identical(tmp_path):
    dataset = str(DATA / "canonical" / "examples.jsonl")
    for n_labeled in (1, 4):
        config = PrepareConfig(dataset=dataset, labeled=n_labeled, transfer=4, val=2, test=2)
        prepare(config, 0, tmp_path / f"{n_labeled}")
    for name in ("transfer", "val", "test"):
        assert (tmp_path / "1" / f"{name}.parquet").read_bytes() == (tmp_path / "4" / f"{name}.parquet").read_bytes()
    assert (tmp_path / "1" / "labeled.parquet").read_bytes() != (tmp_path / "4" / "labeled.parquet").read_bytes()


def test_skipped_rows_are_recorded_in_metadata(tmp_path):
    file = tmp_path / "rows.jsonl"
    rows = pool(6) + [{"id": "bad", "question": "", "choices": ["a", "b"], "answer": 0}]
    file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = PrepareConfig(dataset=str(file), labeled=1, transfer=1, val=1, test=1, on_invalid="skip")
    prepare(config, 0, tmp_path / "out")
    metadata = pq.read_schema(tmp_path / "out" / "val.parquet").metadata
    assert json.loads(metadata[b"skipped"]) == {str(file): 1}


def test_real_aqua_copy_carves_and_reports_the_small_pool(tmp_path):
    if not (SHARED / "aqua_rat").exists():
        pytest.skip(f"real AQuA-RAT copy {SHARED / 'aqua_rat'} not found (expected ../shared/data)")
    config = PrepareConfig(dataset="aqua_rat", path=str(SHARED / "aqua_rat"), labeled=64, transfer=1024)
    message = r"= 1088, but the training pool of aqua_rat has only 0 examples \(it has no training split: the pool is"
    with pytest.raises(InputError, match=message + r" what val leaves after data.val=256\)"):
        prepare(config, 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    config = PrepareConfig(dataset="aqua_rat", path=str(SHARED / "aqua_rat"), labeled=32, transfer=150, val=54)
    assert prepare(config, 0, tmp_path / "out") == {"labeled": 32, "transfer": 150, "val": 54, "test": 254}


def test_builtin_dataset(tmp_path):
    task = {**params_yaml()["builtin"]["task"], "n_train": 96, "n_val": 24, "n_test": 32}
    config = PrepareConfig(dataset="builtin", labeled=24, transfer=48, val=24, test=32)
    counts = prepare(config, 0, tmp_path / "out", build(TaskConfig, task, "builtin.task"))
    assert counts == {"labeled": 24, "transfer": 48, "val": 24, "test": 32}
    labeled = read_split(tmp_path / "out" / "labeled.parquet")
    assert ((labeled.answers >= 0) & (labeled.answers < labeled.n_choices)).all()


def not_a_dep_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "will not rerun `prepare` under `dvc repro`" in r.getMessage()]


def test_local_data_outside_data_raw_is_an_error_unless_allowed(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # stands for the repo root, where dvc runs the stage
    (tmp_path / "data" / "raw").mkdir(parents=True)
    for folder in (tmp_path, tmp_path / "data" / "raw"):
        shutil.copy(DATA / "canonical" / "examples.jsonl", folder)
    outside = tmp_path / "examples.jsonl"
    sizes = {"labeled": 3, "transfer": 4, "val": 2, "test": 2}
    paths = PreparePaths(raw=RAW, out=tmp_path / "out")
    with pytest.raises(InputError, match=(
        rf"^data\.dataset={outside} is outside data/raw/, the only local data `prepare` depends on in dvc\.yaml, so "
        rf"`dvc repro` would not notice edits to it: copy it there \(`cp -r {outside} data/raw/`\) and set "
        r"data\.dataset=data/raw/examples\.jsonl, or set data\.allow_untracked: true$"
    )):  # fmt: skip
        run(PrepareSetup(PrepareConfig(dataset=str(outside), **sizes), 0, None), paths)
    assert not (tmp_path / "out").exists()
    caplog.set_level(logging.WARNING, logger="stages.sources.preparation")
    prepare(PrepareConfig(dataset=str(outside), **sizes), 0, tmp_path / "out")  # allow_untracked: a warning
    [message] = not_a_dep_warnings(caplog)
    assert message.startswith(f"data.dataset={outside} is outside data/raw/") and "allow_untracked: true" in message
    caplog.clear()
    for inside in ("data/raw/examples.jsonl", str(tmp_path / "data" / "raw" / "examples.jsonl")):
        run(PrepareSetup(PrepareConfig(dataset=inside, **sizes), 0, None), paths)
    check_tracked(PrepareConfig(dataset="mmlu", path="data/raw/mmlu"), RAW)
    check_tracked(PrepareConfig(dataset="arc_easy"), RAW)  # the hub: nothing local
    check_tracked(PrepareConfig(dataset="builtin"), RAW)
    assert not_a_dep_warnings(caplog) == []
    with pytest.raises(InputError, match=r"^data\.path=data/raw/\.\./mmlu is outside data/raw/"):
        check_tracked(PrepareConfig(dataset="mmlu", path="data/raw/../mmlu"), RAW)


def test_the_raw_folder_is_the_one_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_tracked(PrepareConfig(dataset="mmlu", path="local/mmlu"), Path("local"))
    with pytest.raises(InputError, match=r"^data\.path=local/mmlu is outside data/raw/.*set data\.path=data/raw/mmlu"):
        check_tracked(PrepareConfig(dataset="mmlu", path="local/mmlu"), RAW)
