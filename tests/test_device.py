"""biolab.device (the CPU allocator), and scripts/device/: check_out.py (what the device tool brings
back) and the GPU session's CPU dry run."""

import json
import os
import platform
import shutil
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


def refused(r: subprocess.CompletedProcess, *words: str) -> bool:
    """check_out.py said no: exit 1 and one line naming the reason."""
    lines = r.stdout.splitlines()
    return (r.returncode == 1 and len(lines) == 1 and lines[0].startswith("check_out: refused: ")
            and all(w in lines[0] for w in words))  # fmt: skip


def test_nine_files_are_refused(tmp_path):
    files(tmp_path / "out", 9)
    r = check(tmp_path / "out")
    assert refused(r, "9 files", "at most 8"), r.stdout


def test_two_folders_deep_pass_three_are_refused(tmp_path):
    out = tmp_path / "out"
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "ok.txt").write_text("x")
    assert check(out).returncode == 0
    (out / "a" / "b" / "c").mkdir()
    (out / "a" / "b" / "c" / "deep.txt").write_text("x")
    r = check(out)
    assert refused(r, "deep.txt", "3 folders deep"), r.stdout


def test_a_file_of_16_mib_is_refused_one_byte_less_passes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "big.bin", "wb") as f:  # sparse: 16 MiB on paper, nothing on disk
        f.truncate(16 * 2**20 - 1)
    assert check(out).returncode == 0
    with open(out / "big.bin", "wb") as f:
        f.truncate(16 * 2**20)
    r = check(out)
    assert refused(r, "big.bin", "16.0 MiB"), r.stdout


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


SESSION = REPO / "scripts" / "device" / "gpu_session.sh"


def test_the_session_scripts_parse_and_stay_offline():
    """bash -n (and shellcheck where installed); every pip call offline; the commit travels as a
    literal, since `$(git rev-parse HEAD)` would be evaluated on the machine, which has no .git."""
    scripts = sorted((REPO / "scripts" / "device").glob("*.sh"))
    for script in scripts:
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, f"{script.name}: {r.stderr}"
        if script.name == "wheelhouse.sh":  # runs here, with the network, to fill wheelhouse/
            continue
        for line in script.read_text().splitlines():
            if "pip install" in line and not line.lstrip().startswith("#"):
                assert "--no-index" in line, f"{script.name}: {line.strip()}"
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-S", "warning", *map(str, scripts)], capture_output=True,
                           text=True)  # fmt: skip
        assert r.returncode == 0, r.stdout[-3000:]
    for doc in (SESSION, REPO / "scripts" / "device" / "README.md"):
        text = doc.read_text()
        assert "BIOLAB_GIT_COMMIT=<40-hex commit>" in text and "BIOLAB_GIT_COMMIT=$(" not in text, doc.name
    assert "PY=${PY:-python3}" in SESSION.read_text()


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("BIOLAB_DRY_RUN"),
    reason="3-4 minutes, over the suite budget: run BIOLAB_DRY_RUN=1 pytest tests/test_device.py",
)
def test_the_gpu_session_dry_run_end_to_end(tmp_path):
    """The exact session script at tiny scale on the CPU (3-4 minutes on 2 busy cores), walking the
    paths a GPU session takes when things go wrong: the commit is not a commit, the compile smoke
    fails (faked: the CPU smoke skips) and a stage under ROOT failed."""
    out, root = tmp_path / "out", tmp_path / "root"
    failed = root / "pretrain" / "feedfacefeedface"  # a failed stage's traceback belongs in log.txt
    failed.mkdir(parents=True)
    (failed / "status.json").write_text(json.dumps({"status": "failed", "seconds": 1.0}, indent=2))
    (failed / "log.txt").write_text("".join(f"line {i}\n" for i in range(100)) + "FakeError: the traceback\n")
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {**os.environ, "OUT": str(out), "ROOT": str(root), "BIOLAB_DEVICE_DRY": "1", "PATH": path,
           "PY": sys.executable, "BIOLAB_GIT_COMMIT": "$(git rev-parse HEAD)",
           "BIOLAB_DEVICE_FAKE_COMPILE_FAILURE": "1"}  # fmt: skip
    start = time.time()
    r = subprocess.run(["bash", str(SESSION)], env=env, capture_output=True, text=True, timeout=420)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("report.md", "results.csv", "provenance.json", "bench.json", "log.txt"):
        assert (out / name).is_file(), name
    assert check(out).returncode == 0
    log = (out / "log.txt").read_text()
    assert "check_out: ok" in log and "phase fig3: ok" in log and "phase smoke_nocompile: ok" in log
    assert "WARNING: BIOLAB_GIT_COMMIT='$(git rev-parse HEAD)' is not 7-40 hex digits" in log
    assert "last 40 lines of pretrain/feedfacefeedface/log.txt (status: failed)" in log
    assert "FakeError: the traceback" in log and "line 60\n" not in log and "line 61\n" in log
    assert log.index("phase report_fig3: ok") < log.index("phase probes_mixed: start")
    prov = json.loads((out / "provenance.json").read_text())
    phases = {p["phase"]: p["status"] for p in prov["phases"]}
    assert prov["dry_run"] is True and prov["script_status"] == 0 and prov["compile"] is False
    assert "train.compile=false" in prov["scale_overrides"]
    assert phases["smoke"] == "failed" and phases["smoke_nocompile"] == "ok"
    assert phases["fig3"] == phases["report_fig3"] == phases["report"] == "ok" and "bench" in phases
    assert set(json.loads((out / "bench.json").read_text())) <= {"pretrain", "eval"}
    print(f"dry run: {time.time() - start:.0f} s; {sorted(p.name for p in out.iterdir())}; {phases}")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_allocator_settings():
    import torch

    from biolab.device import keep_freed_memory

    assert keep_freed_memory("cpu") is True
    assert keep_freed_memory(torch.device("cpu")) is True  # once a process: the second call changes nothing
    assert keep_freed_memory("cuda") is False  # another device's work asks glibc nothing


def test_the_one_device_choice_and_its_environment_override(monkeypatch):
    import torch

    from biolab.device import default_device, on_accelerator, pick_device
    from biolab.errors import ConfigError

    monkeypatch.delenv("BIOLAB_DEVICE", raising=False)
    best = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert default_device() == pick_device() == best
    monkeypatch.setenv("BIOLAB_DEVICE", "cpu")  # a GPU machine told to stay on the CPU
    assert pick_device() == "cpu" and pick_device("cpu") == "cpu"
    monkeypatch.setenv("BIOLAB_DEVICE", "gpu0")
    with pytest.raises(ConfigError, match=r"^BIOLAB_DEVICE=gpu0: device='gpu0' is not a device name"):
        pick_device()
    assert on_accelerator("cuda:1") and on_accelerator("mps") and not on_accelerator("cpu")
