"""biolab.device (the CPU allocator), and scripts/device/: check_out.py (what the device tool brings
back) and the GPU session's CPU dry run."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "scripts" / "device" / "check_out.py"


def check(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), str(out)], capture_output=True, text=True)


def files(out: Path, n: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (out / f"f{i}.txt").write_text("x")


def test_eight_files_pass(tmp_path):
    files(tmp_path / "out", 8)
    r = check(tmp_path / "out")
    assert r.returncode == 0 and r.stdout.startswith("check_out: ok: 8 files"), r.stdout


def test_nine_files_are_refused(tmp_path):
    files(tmp_path / "out", 9)
    r = check(tmp_path / "out")
    assert r.returncode == 1 and "9 files" in r.stdout and len(r.stdout.splitlines()) == 1


def test_two_folders_deep_pass_three_are_refused(tmp_path):
    out = tmp_path / "out"
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "ok.txt").write_text("x")
    assert check(out).returncode == 0
    (out / "a" / "b" / "c").mkdir()
    (out / "a" / "b" / "c" / "deep.txt").write_text("x")
    r = check(out)
    assert r.returncode == 1 and "3 folders deep" in r.stdout


def test_a_big_file_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "big.bin", "wb") as f:  # sparse: 16 MiB on paper, nothing on disk
        f.truncate(16 * 2**20)
    r = check(out)
    assert r.returncode == 1 and "big.bin" in r.stdout and "MiB" in r.stdout


def test_links_and_odd_names_are_refused(tmp_path):
    out = tmp_path / "out"
    files(out, 1)
    (out / "link").symlink_to(out / "f0.txt")
    assert "link" in check(out).stdout and check(out).returncode == 1
    (out / "link").unlink()
    (out / "a b[1].png").write_text("x")
    r = check(out)
    assert r.returncode == 1 and "odd name" in r.stdout


def test_a_missing_folder_is_refused(tmp_path):
    assert check(tmp_path / "nope").returncode == 1


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("BIOLAB_DRY_RUN"),
    reason="2 minutes, over the suite budget: run BIOLAB_DRY_RUN=1 pytest tests/test_device.py",
)
def test_the_gpu_session_dry_run_end_to_end(tmp_path):
    """The exact session script at tiny scale on the CPU (about 2 minutes on 2 busy cores)."""
    out = tmp_path / "out"
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {**os.environ, "OUT": str(out), "ROOT": str(tmp_path / "root"), "BIOLAB_DEVICE_DRY": "1",
           "PATH": path, "PY": sys.executable}  # fmt: skip
    start = time.time()
    r = subprocess.run(["bash", str(REPO / "scripts/device/gpu_session.sh")], env=env, capture_output=True,
                       text=True, timeout=400)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("report.md", "results.csv", "provenance.json", "log.txt"):
        assert (out / name).is_file(), name
    assert check(out).returncode == 0
    log = (out / "log.txt").read_text()
    assert "check_out: ok" in log and "phase fig3: ok" in log
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["dry_run"] is True and {p["phase"] for p in prov["phases"]} >= {"smoke", "fig3", "bench"}
    print(f"dry run: {time.time() - start:.0f} s; {sorted(p.name for p in out.iterdir())}")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_allocator_settings():
    import torch

    from biolab.device import keep_freed_memory

    assert keep_freed_memory("cpu") is True
    assert keep_freed_memory(torch.device("cpu")) is True  # once a process: the second call changes nothing
    assert keep_freed_memory("cuda") is False  # another device's work asks glibc nothing
