from pathlib import Path

import pytest
from conftest import run_in_fork

from biolab.errors import ConfigError
from biolab.io import atomic_dir, atomic_write_text, check_output_dir, check_writable

ROOT = Path(__file__).resolve().parent.parent


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


def test_check_writable_refuses_what_cannot_be_written_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("")
    # tests run as root, where permission bits do not stop a write: a file as the parent and /proc do
    for bad in (tmp_path / "file" / "out", Path("/proc/biolab-test/out")):
        with pytest.raises(ConfigError, match=r"^out=.* is not writable: "):
            check_writable(bad)
    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "dir").mkdir()
    check_writable(tmp_path / "dir", what="root")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]
    assert not any((tmp_path / "dir").iterdir())
    with pytest.raises(ConfigError, match=r"^root=.* is not writable"):
        check_writable(tmp_path / "file" / "x", what="root")


def test_atomic_dir_under_a_file_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not writable"):
        with atomic_dir(tmp_path / "file" / "data"):
            pass


def test_generate_cli_says_an_unwritable_out_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    args = ["data.n_people=10", f"out={tmp_path}/file/data", "progress=false"]
    r = run_in_fork([ROOT / "scripts" / "generate.py", *args], timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("error: out=") and "not writable" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_figure_is_saved_whole_or_not_at_all(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biolab.io import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in path.parent.iterdir()] == [
        "f.png"
    ]
    assert not plt.fignum_exists(fig.number)  # closed
    fig, _ = plt.subplots()
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "sub" / "g.nosuchformat")
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]  # no temp file left behind
