import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages.core.errors import InputError
from stages.probing.label_files import LABEL_SCHEMA, label_table, read_labels, read_metadata, write_labels
from stages.sources.schema import Split
from tests.two_processes import assert_same_bytes_in_two_processes


def make_split(n_choices=(3, 4, 5), prefix="t") -> Split:
    n = len(n_choices)
    return Split(
        ids=[f"{prefix}{i}" for i in range(n)],
        questions=["q"] * n,
        choices=[[f"c{j}" for j in range(k)] for k in n_choices],
        answers=np.zeros(n, dtype=np.int64),
        sources=[None] * n,
        subjects=[None] * n,
    )


def uniform(split: Split) -> np.ndarray:
    probs = split.valid_mask().astype(np.float32)
    return probs / probs.sum(axis=1, keepdims=True)


@pytest.fixture
def split():
    return make_split()


def write(path, split, probs=None, name="transfer", metadata=None, **kwargs):
    probs = uniform(split) if probs is None else probs
    table = label_table(split.ids, name, probs, split.n_choices, **kwargs)
    write_labels([table], path, metadata or {"kind": "probe", "available": True, "layer": 2})


def test_round_trip_aligns_to_split_order(tmp_path, split):
    probs = np.zeros((3, 26), dtype=np.float32)
    probs[0, :3] = [0.2, 0.3, 0.5]
    probs[1, :4] = [0.1, 0.2, 0.3, 0.4]
    probs[2, :5] = [0.6, 0.1, 0.1, 0.1, 0.1]
    order = [2, 0, 1]  # file order differs from the split's
    table = label_table([split.ids[i] for i in order], "labeled", probs[order], split.n_choices[order], folds=[1, 0, 2])
    other = make_split((2,), prefix="x")
    write_labels(
        [table, label_table(other.ids, "transfer", uniform(other), other.n_choices)],
        tmp_path / "l.parquet",
        {"kind": "probe", "available": True},
    )
    labels = read_labels(tmp_path / "l.parquet", split, "labeled")
    assert labels.dtype == np.float32 and labels.shape == (3, 26)
    np.testing.assert_allclose(labels, probs, rtol=1e-7)
    np.testing.assert_allclose(read_labels(tmp_path / "l.parquet", other, "transfer")[0, :3], [0.5, 0.5, 0.0])
    rows = pq.read_table(tmp_path / "l.parquet").to_pylist()
    assert rows[0]["fold"] == 1 and rows[0]["layer"] is None and rows[0]["n_choices"] == 5
    assert read_metadata(tmp_path / "l.parquet") == {"kind": "probe", "available": True}


def test_same_inputs_same_bytes_in_two_processes(tmp_path):
    code = "import sys; from pathlib import Path; from tests.probing.test_label_files import make_split, write; "
    code += "write(Path(sys.argv[1]) / 'l.parquet', make_split(), layer=3, metadata={'kind': 'probe', 'layer': 3, "
    code += "'teacher': {'model': 'tiny', 'revision': 'abc'}, 'available': True})"
    assert list(assert_same_bytes_in_two_processes(code, tmp_path)) == ["l.parquet"]


def test_schema_of_written_file(tmp_path, split):
    write(tmp_path / "l.parquet", split, layer=3)
    assert pq.read_schema(tmp_path / "l.parquet").remove_metadata().equals(LABEL_SCHEMA)


def test_missing_file(tmp_path, split):
    with pytest.raises(InputError, match="label file not found"):
        read_labels(tmp_path / "nope.parquet", split, "transfer")


def test_wrong_schema(tmp_path, split):
    pq.write_table(pa.table({"id": split.ids, "probs": [[1.0]] * 3}), tmp_path / "l.parquet")
    with pytest.raises(InputError, match="not a label file"):
        read_labels(tmp_path / "l.parquet", split, "transfer")


def test_ids_not_matching(tmp_path, split):
    write(tmp_path / "l.parquet", split)
    with pytest.raises(InputError, match=r"1 missing, e.g. \['u3'\]; 1 extra, e.g. \['t2'\]"):
        read_labels(tmp_path / "l.parquet", Split(**{**split.__dict__, "ids": ["t0", "t1", "u3"]}), "transfer")


def test_wrong_split_name_has_no_rows(tmp_path, split):
    write(tmp_path / "l.parquet", split)
    with pytest.raises(InputError, match="3 missing"):
        read_labels(tmp_path / "l.parquet", split, "labeled")


def test_probabilities_must_sum_to_one(tmp_path, split):
    probs = uniform(split)
    probs[1, :4] = [0.5, 0.5, 0.5, 0.5]
    write(tmp_path / "l.parquet", split, probs)
    with pytest.raises(InputError, match="example 't1': probs sum to 2.000000, not 1"):
        read_labels(tmp_path / "l.parquet", split, "transfer")


def test_negative_probabilities(tmp_path, split):
    probs = uniform(split)
    probs[0, :3] = [1.5, -0.5, 0.0]
    write(tmp_path / "l.parquet", split, probs)
    with pytest.raises(InputError, match="example 't0': probs must be 3 finite values >= 0"):
        read_labels(tmp_path / "l.parquet", split, "transfer")


def test_choice_count_mismatch(tmp_path, split):
    write(tmp_path / "l.parquet", split)
    other = Split(**{**split.__dict__, "choices": [["a", "b"], *split.choices[1:]]})
    with pytest.raises(InputError, match="example 't0' has 3 label choices but transfer has 2"):
        read_labels(tmp_path / "l.parquet", other, "transfer")


def test_unavailable_teacher_labels(tmp_path, split):
    why = "teacher bert has no LM head (encoder-only), so it has no letter outputs"
    write_labels([], tmp_path / "t.parquet", {"kind": "teacher", "available": False, "missing": why})
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 0
    with pytest.raises(InputError, match=r"t.parquet: no teacher labels: teacher bert has no LM head .*; an arm"):
        read_labels(tmp_path / "t.parquet", split, "transfer")
    write_labels([], tmp_path / "c.parquet", {"kind": "cloze", "available": False, "missing": "extract.cloze is false"})
    with pytest.raises(InputError, match=r"no cloze labels: extract.cloze is false; an arm distilling from them"):
        read_labels(tmp_path / "c.parquet", split, "transfer")
