import pytest

from biolab.errors import ConfigError
from biolab.io import atomic_dir, atomic_write_text, check_output_dir


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_atomic_dir_appears_only_when_complete(tmp_path):
    out = tmp_path / "data"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("x")
            assert not out.exists()
            raise RuntimeError("killed")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "full.txt").write_text("x")
    assert [p.name for p in out.iterdir()] == ["full.txt"]


def test_non_empty_output_needs_overwrite(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    check_output_dir(out, overwrite=False)  # empty is fine
    (out / "old.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty; pass overwrite=true"):
        with atomic_dir(out):
            pass
    assert (out / "old.txt").read_text() == "keep me"
    with pytest.raises(RuntimeError):  # a failed overwrite keeps the old folder
        with atomic_dir(out, overwrite=True):
            raise RuntimeError
    assert (out / "old.txt").read_text() == "keep me"
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        check_output_dir(tmp_path / "file", overwrite=True)
