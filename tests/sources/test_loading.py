"""Adapters: the real ARC / AQuA-RAT copies in ../shared/data, hand-made MMLU and canonical files, bad input."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest

from stages.core.errors import InputError
from stages.sources.builtin_world import TaskConfig, dataset_splits
from stages.sources.loading import load_dataset_splits

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real benchmark copy {path} not found (expected ../shared/data beside the checkout)")
    return path


# ------------------------------------------------------------------ real ARC files (counts from the README)

ARC_CHOICE_COUNTS = {  # role -> {n_choices: rows}
    "arc_challenge": {"train": {3: 1, 4: 1117, 5: 1}, "val": {3: 3, 4: 295, 5: 1}, "test": {3: 4, 4: 1165, 5: 3}},
    "arc_easy": {"train": {3: 6, 4: 2241, 5: 4}, "val": {3: 1, 4: 567, 5: 2}, "test": {3: 7, 4: 2365, 5: 4}},
}


@pytest.mark.parametrize("dataset", ["arc_challenge", "arc_easy"])
def test_arc_counts_and_choice_counts_match_the_readme(dataset):
    loaded = load_dataset_splits(dataset, str(shared("arc")), "error")
    for role, expected in ARC_CHOICE_COUNTS[dataset].items():
        assert dict(Counter(len(e["choices"]) for e in loaded.splits[role])) == expected
    assert loaded.skipped == {}


def test_arc_digit_labels_map_by_position():
    loaded = load_dataset_splits("arc_challenge", str(shared("arc", "ARC-Challenge")), "error")
    test = loaded.splits["test"]
    # README, Challenge-Test answerKey: A 263, B 301, C 303, D 283, "1" 3, "2" 10, "3" 7, "4" 2.
    assert Counter(e["answer"] for e in test) == {0: 263 + 3, 1: 301 + 10, 2: 303 + 7, 3: 283 + 2}
    first = test[0]
    assert first["id"] == "Mercury_7175875" and first["answer"] == 2 and first["source"] == "Mercury"
    assert first["choices"][2] == "Planetary days will become shorter."
    # The digit-labelled rows are the NYSEDREGENTS ones; their answers are positions, not ord(key) - 65.
    regents = [e for e in test if e["source"] == "NYSEDREGENTS"]
    assert len(regents) >= 22 and all(0 <= e["answer"] < len(e["choices"]) for e in regents)


DIGIT_ROWS = {"arc_challenge": {"train": 23, "val": 4, "test": 22}, "arc_easy": {"train": 102, "val": 21, "test": 97}}


@pytest.mark.parametrize("dataset", ["arc_challenge", "arc_easy"])
def test_arc_digit_labelled_rows_match_the_readme_and_map_to_positions(dataset):
    name = {"arc_challenge": "ARC-Challenge", "arc_easy": "ARC-Easy"}[dataset]
    loaded = load_dataset_splits(dataset, str(shared("arc")), "error")
    for role, part in (("train", "Train"), ("val", "Dev"), ("test", "Test")):
        raw = [json.loads(line) for line in shared("arc", name, f"{name}-{part}.jsonl").read_text().splitlines()]
        digit_keys = {r["id"]: r["answerKey"] for r in raw if r["question"]["choices"][0]["label"].isdigit()}
        assert len(digit_keys) == DIGIT_ROWS[dataset][role]
        answers = {e["id"]: e["answer"] for e in loaded.splits[role] if e["id"] in digit_keys}
        assert answers == {i: int(key) - 1 for i, key in digit_keys.items()}  # labels run "1".."n" in order


# ------------------------------------------------------------------ real AQuA-RAT files


def test_aqua_counts_answers_and_option_prefixes():
    loaded = load_dataset_splits("aqua_rat", str(shared("aqua_rat")), "error")
    assert "train" not in loaded.splits  # the public copy has no train.json
    dev, test = loaded.splits["val"], loaded.splits["test"]
    assert (len(dev), len(test)) == (254, 254)
    assert all(len(e["choices"]) == 5 for e in dev + test)
    assert Counter(e["answer"] for e in dev) == {0: 69, 1: 66, 2: 43, 3: 50, 4: 26}
    assert Counter(e["answer"] for e in test) == {0: 63, 1: 58, 2: 46, 3: 53, 4: 34}
    # Prefixes "A)" and "A) " are gone; nothing else was stripped.
    assert test[0]["choices"] == ["5(√3 + 1)", "6(√3 + √2)", "7(√3 – 1)", "8(√3 – 2)", "None of these"]
    assert test[0]["id"] == "test-0" and test[0]["answer"] == 0
    assert not any(c[:1] == " " or c[1:2] == ")" for e in dev + test for c in e["choices"])
    # test.json line 30 doubles every prefix ("A)A)59"); the positional prefix goes as often as it repeats.
    assert test[29]["id"] == "test-29" and test[29]["choices"] == ["59", "69", "79", "89", "99"]


# ------------------------------------------------------------------ hand-made MMLU release layout


def test_mmlu_original_csv_folders():
    loaded = load_dataset_splits("mmlu", str(DATA / "mmlu"), "error")
    assert set(loaded.splits) == {"val", "test"}  # MMLU has no training split: dev + val become `val`
    val = {e["id"]: e for e in loaded.splits["val"]}
    assert len(val) == 3 + 6 and len(loaded.splits["test"]) == 4
    statement = val["abstract_algebra_dev-1"]
    assert statement["subject"] == "abstract_algebra" and statement["answer"] == 1
    assert statement["question"].startswith("Statement 1 | If aH") and "\nStatement 2 |" in statement["question"]
    assert val["high_school_physics_val-1"]["question"] == "Two lines of text:\nwhat is the SI unit of force?"
    assert val["high_school_physics_val-2"]["choices"][0] == "watt, W"
    assert val["abstract_algebra_val-1"]["question"] == 'Which of the following is a ring with "unity"?'
    assert all(e["question"].count("\r") == 0 for e in val.values())


def test_mmlu_bad_answer_letter_names_file_and_first_line(tmp_path):
    folder = tmp_path / "mmlu"
    shutil.copytree(DATA / "mmlu", folder)
    bad = folder / "test" / "high_school_physics_test.csv"
    rows = bad.read_bytes().replace(b"3.4 m/s,B", b"3.4 m/s,E")
    bad.write_bytes(rows)
    with pytest.raises(InputError, match=r"high_school_physics_test.csv line 2: unparsable row: answer 'E' is not"):
        load_dataset_splits("mmlu", str(folder), "error")


def test_mmlu_file_name_without_split_suffix_is_refused(tmp_path):
    folder = tmp_path / "mmlu"
    shutil.copytree(DATA / "mmlu", folder)
    (folder / "dev" / "abstract_algebra_dev.csv").rename(folder / "dev" / "abstract_algebra.csv")
    with pytest.raises(InputError, match=r"abstract_algebra.csv: expected a name like abstract_algebra_dev.csv"):
        load_dataset_splits("mmlu", str(folder), "error")


# ------------------------------------------------------------------ hand-made ARC release layout


def test_arc_fixture_letters_digits_and_missing_file(tmp_path):
    loaded = load_dataset_splits("arc_easy", str(DATA / "arc"), "error")
    train = {e["id"]: e for e in loaded.splits["train"]}
    assert train["NYSEDREGENTS_2"]["answer"] == 2 and train["TIMSS_4"]["answer"] == 4
    assert loaded.splits["val"][1]["answer"] == 2  # labels "1 2 3", key "3"
    shutil.copytree(DATA / "arc", tmp_path / "arc")
    (tmp_path / "arc" / "ARC-Easy-Dev.jsonl").unlink()
    with pytest.raises(InputError, match=r"ARC-Easy-Dev.jsonl: file not found"):
        load_dataset_splits("arc_easy", str(tmp_path / "arc"), "error")


def test_arc_answer_key_not_a_label(tmp_path):
    shutil.copytree(DATA / "arc", tmp_path / "arc")
    test_file = tmp_path / "arc" / "ARC-Easy-Test.jsonl"
    test_file.write_text(test_file.read_text().replace('"answerKey":"4"', '"answerKey":"D"'))
    with pytest.raises(InputError, match=r"ARC-Easy-Test.jsonl line 2: .*answerKey 'D' is not one of the choice"):
        load_dataset_splits("arc_easy", str(tmp_path / "arc"), "error")


def test_missing_local_folder_names_the_param():
    with pytest.raises(InputError, match=r"data.path=/no/such: folder not found"):
        load_dataset_splits("aqua_rat", "/no/such", "error")


# ------------------------------------------------------------------ bad input: one problem per file, on line 2

BAD = {
    "unparsable": r"unparsable JSON",
    "answer_missing": r"missing answer",
    "answer_out_of_range": r"answer 3 out of range for 3 choices \(0..2\)",
    "one_choice": r"1 choice; a question needs 2..26",
    "too_many_choices": r"27 choices; a question needs 2..26",
    "duplicate_id": r"duplicate id 'ok1' \(first at .*duplicate_id.jsonl line 1\)",
    "empty_question": r"empty question",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_row_is_an_error_naming_file_and_line(name):
    with pytest.raises(InputError, match=rf"{name}.jsonl line 2: {BAD[name]}"):
        load_dataset_splits(str(DATA / "bad" / f"{name}.jsonl"), None, "error")


@pytest.mark.parametrize("name", sorted(BAD))
def test_skip_drops_the_bad_row_and_counts_it(name, caplog):
    file = DATA / "bad" / f"{name}.jsonl"
    with caplog.at_level(logging.WARNING):
        loaded = load_dataset_splits(str(file), None, "skip")
    assert [e["id"] for e in loaded.splits["train"]] == ["ok1"]
    assert loaded.skipped == {str(file): 1}
    assert f"{file}: skipped 1 invalid row(s)" in caplog.text


def test_unknown_dataset_name():
    with pytest.raises(InputError, match=r"data.dataset=arc_hard: neither a known dataset"):
        load_dataset_splits("arc_hard", None, "error")


# ------------------------------------------------------------------ canonical files in every format


def canonical_rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "canonical" / "examples.jsonl").read_text().splitlines()]


def roles_and_answers(loaded) -> dict:
    return {role: [(e["id"], e["answer"], e["choices"]) for e in rows] for role, rows in loaded.splits.items()}


def test_canonical_formats_agree(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = canonical_rows()
    expected = roles_and_answers(load_dataset_splits(str(DATA / "canonical" / "examples.jsonl"), None, "error"))
    assert {role: len(v) for role, v in expected.items()} == {"train": 8, "val": 2, "test": 2}
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    csv_lines = ["id,question,choices,answer,source,subject,split"]
    csv_lines += [f'{r["id"]},"{r["question"]}","{json.dumps(r["choices"]).replace(chr(34), chr(34) * 2)}",'
                  f'{r["answer"]},hand,arithmetic,{r["split"]}' for r in rows]  # fmt: skip
    (tmp_path / "a.csv").write_text("\n".join(csv_lines) + "\n")
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    datasets.DatasetDict(
        {
            s: datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "split"} for r in part])
            for s, part in by_split.items()
        }  # fmt: skip
    ).save_to_disk(str(tmp_path / "disk"))
    for path in ("a.json", "a.parquet", "a.csv", "disk"):
        assert roles_and_answers(load_dataset_splits(str(tmp_path / path), None, "error")) == expected, path


def test_canonical_csv_bad_answer_names_line(tmp_path):
    (tmp_path / "a.csv").write_text('id,question,choices,answer\nq1,Q?,"[""a"", ""b""]",1\nq2,Q?,"[""a""]",x\n')
    with pytest.raises(InputError, match=r"a.csv line 3: 1 choice"):
        load_dataset_splits(str(tmp_path / "a.csv"), None, "error")


# ------------------------------------------------------------------ hub rows (load_dataset replaced: no network)


def fake_hub(monkeypatch, splits: dict[str, list[dict]]) -> list[tuple]:
    import datasets

    calls: list[tuple] = []

    def load_dataset(hub_id, config):
        calls.append((hub_id, config))
        return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_arc_rows(monkeypatch):
    row = {"id": "NYSEDREGENTS_1", "question": "Q?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}}
    calls = fake_hub(monkeypatch, {"train": [{**row, "answerKey": "3"}], "validation": [], "test": []})
    loaded = load_dataset_splits("arc_challenge", None, "error")
    assert calls == [("allenai/ai2_arc", "ARC-Challenge")] and loaded.origin == "allenai/ai2_arc:ARC-Challenge"
    assert loaded.splits["train"][0]["answer"] == 2 and loaded.splits["train"][0]["choices"] == ["a", "b", "c"]


def test_hub_mmlu_ids_match_the_local_release_and_auxiliary_train_is_ignored(monkeypatch):
    row = {"question": "Q?", "subject": "abstract_algebra", "choices": ["a", "b", "c", "d"], "answer": 1}
    fake_hub(monkeypatch, {"dev": [row, row], "validation": [row], "test": [row], "auxiliary_train": [row]})
    loaded = load_dataset_splits("mmlu", None, "error")
    assert [e["id"] for e in loaded.splits["val"]] == ["abstract_algebra_dev-0", "abstract_algebra_dev-1",
                                                       "abstract_algebra_val-0"]  # fmt: skip
    assert set(loaded.splits) == {"val", "test"} and loaded.splits["test"][0]["subject"] == "abstract_algebra"


def test_hub_aqua_validation_is_dev(monkeypatch):
    row = {"question": "Q?", "options": ["A)1", "B) 2", "C)3"], "rationale": "r", "correct": "B"}
    fake_hub(monkeypatch, {"train": [row], "validation": [row], "test": [row]})
    loaded = load_dataset_splits("aqua_rat", None, "error")
    assert loaded.splits["val"][0]["id"] == "dev-0" and loaded.splits["train"][0]["choices"] == ["1", "2", "3"]
    assert loaded.splits["train"][0]["answer"] == 1


def test_canonical_non_string_id_and_non_object_row(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": 5, "question": "Q?", "choices": ["a", "b"], "answer": 0}\n')
    with pytest.raises(InputError, match=r"a.jsonl line 1: id must be a non-empty string \(got 5\)"):
        load_dataset_splits(str(tmp_path / "a.jsonl"), None, "error")
    (tmp_path / "b.jsonl").write_text('["not", "an", "object"]\n')
    with pytest.raises(InputError, match=r"b.jsonl line 1: unparsable row: expected an object, got list"):
        load_dataset_splits(str(tmp_path / "b.jsonl"), None, "error")


def test_canonical_csv_multiline_cell_reports_the_rows_first_line(tmp_path):
    header = "id,question,choices,answer\n"
    rows = 'q1,"two\nlines","[""a"", ""b""]",1\nq2,"also\ntwo","[""a"", ""b""]",2\n'
    (tmp_path / "a.csv").write_text(header + rows)
    with pytest.raises(InputError, match=r"a.csv line 4: answer 2 out of range for 2 choices"):
        load_dataset_splits(str(tmp_path / "a.csv"), None, "error")


# ------------------------------------------------------------------ the builtin task


def test_builtin_rows_come_from_the_task_config_and_seed():
    task = TaskConfig(n_categories=4, words_per_category=4, n_choices=2, n_train=12, n_val=4, n_test=6)
    loaded = load_dataset_splits("builtin", None, "error", task, builtin_seed=5)
    assert loaded.skipped == {}
    assert {role: len(rows) for role, rows in loaded.splits.items()} == {"train": 12, "val": 4, "test": 6}
    expected = dataset_splits(task, 5)
    assert {role: [e["id"] for e in rows] for role, rows in loaded.splits.items()} == {
        role: [e["id"] for e in rows] for role, rows in expected.items()
    }
    assert [e["question"] for e in loaded.splits["val"]] == [e["question"] for e in expected["val"]]
    other_seed = load_dataset_splits("builtin", None, "error", task, builtin_seed=6)
    assert [e["question"] for e in other_seed.splits["val"]] != [e["question"] for e in expected["val"]]


# ------------------------------------------------------------------ bad files and rows that used to end in a traceback


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("on_invalid", ["error", "skip"])
def test_a_file_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path, on_invalid):
    file = tmp_path / "latin1.jsonl"
    row = {"id": "a", "question": "Which is café?", "choices": ["x", "y"], "answer": 0}
    file.write_bytes(b'{"id": "z", "question": "Q?", "choices": ["x", "y"], "answer": 1}\n'
                     + json.dumps(row, ensure_ascii=False).encode("latin-1") + b"\n")  # fmt: skip
    with pytest.raises(InputError, match=(
        rf"^{file} line 2: not UTF-8 \(byte 0xe9 at offset \d+\); re-save the file as UTF-8 \(e.g. `iconv -f latin1"
    )):  # fmt: skip
        load_dataset_splits(str(file), None, on_invalid)  # a file-level error, whatever on_invalid says
    mmlu = tmp_path / "mmlu" / "test"
    mmlu.mkdir(parents=True)
    (mmlu / "history_test.csv").write_bytes("Qu'est-ce?,a,b,c,d,A\n".encode("cp1252").replace(b"'", b"\x92"))
    with pytest.raises(InputError, match=r"history_test.csv line 1: not UTF-8 \(byte 0x92"):
        load_dataset_splits("mmlu", str(tmp_path / "mmlu"), on_invalid)


def test_a_hub_dataset_offline_says_to_use_data_path(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(InputError, match=(
        r"^data.dataset=arc_easy: could not load allenai/ai2_arc:ARC-Easy from the Hugging Face hub \(ConnectionError: "
        r"Couldn't reach .*\); offline, download it once and point data.path at the local copy under data/raw/$"
    )):  # fmt: skip
        load_dataset_splits("arc_easy", None, "error")


def test_an_empty_option_is_a_bad_row_and_duplicate_options_are_named(tmp_path, caplog):
    rows = [{"id": f"q{i}", "question": f"Q{i}?", "choices": ["x", "y", "z"], "answer": 0} for i in range(4)]
    rows[1]["choices"] = ["x", " ", "z"]
    file = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(InputError, match=rf"^{file} line 2: option B is empty \(no text to choose or to score\)"):
        load_dataset_splits(str(file), None, "error")
    assert sum(len(v) for v in load_dataset_splits(str(file), None, "skip").splits.values()) == 3
    rows[1]["choices"] = ["x", "y", "x "]
    caplog.set_level(logging.WARNING, logger="stages.sources.rows")
    loaded = load_dataset_splits(str(write_jsonl(file, rows)), None, "error")
    assert sum(len(v) for v in loaded.splits.values()) == 4  # kept, but named
    assert f"{file} line 2: options A and C have the same text 'x': the readouts cannot tell them apart" in caplog.text
