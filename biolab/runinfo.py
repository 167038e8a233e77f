"""Provenance for run folders: status.json with timings, git commit, device and versions."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

from biolab.io import write_json


def git_commit() -> str | None:
    """The commit of the biolab checkout, with ``+dirty`` when tracked files changed."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()}"


def versions() -> dict:
    import accelerate
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
    }


def read_status(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_status(run_dir: str | Path, status: str, started: float, **extra) -> dict:
    """status: running | done | failed. ``started`` is a time.time() stamp."""
    info = {
        "status": status,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 2),
        "git_commit": git_commit(),
        "device": device_name(),
        "versions": versions(),
        **extra,
    }
    write_json(Path(run_dir) / "status.json", info)
    return info
