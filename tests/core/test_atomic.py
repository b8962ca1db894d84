import pytest

from stages.core.atomic import atomic_path, write_text_atomic


def test_file_replaced_only_on_success(tmp_path):
    final = tmp_path / "out" / "metrics.json"
    write_text_atomic(final, "old")
    with pytest.raises(RuntimeError), atomic_path(final) as temp:
        temp.write_text("half")
        raise RuntimeError("crash")
    assert final.read_text() == "old"
    assert [p.name for p in final.parent.iterdir()] == ["metrics.json"]


def test_directory_replaced_whole(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "stale.parquet").write_text("x")
    with atomic_path(final, directory=True) as temp:
        (temp / "test.parquet").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["test.parquet"]


def test_stale_temp_from_killed_run_is_removed(tmp_path):
    stale = tmp_path / ".tmp-prepared-abc"
    stale.mkdir()
    with atomic_path(tmp_path / "prepared", directory=True) as temp:
        (temp / "a").write_text("1")
    assert not stale.exists()
