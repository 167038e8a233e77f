"""status.json, the one record of a run or stage folder's state, and the provenance it carries
(timings, git commit, device, versions).

Training, probing and the stage runner all write it, through ``write_status`` only: each write
merges into what is there, so the runner's final ``done`` keeps what the stage recorded itself
(a training run's ``final`` and ``params_no_embeddings``, a probe run's ``rows``).
"""

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


STATES = ("running", "done", "failed")
OWN = ("status", "started", "seconds", "git_commit", "device", "versions", "error")  # set on every write


def read_status(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


def is_done(run_dir: str | Path) -> bool:
    """Whether ``run_dir``'s status.json says done (False without one; an unreadable one raises)."""
    status = read_status(run_dir)
    return isinstance(status, dict) and status.get("status") == "done"


def _earlier_fields(run_dir: str | Path) -> dict:
    try:
        old = read_status(run_dir) or {}
    except (OSError, ValueError):  # an unreadable file holds nothing worth keeping
        return {}
    return {k: v for k, v in old.items() if k not in OWN} if isinstance(old, dict) else {}


def write_status(run_dir: str | Path, status: str, started: float, **extra) -> dict:
    """status: running | done | failed. ``started`` is a time.time() stamp. ``extra`` fields are
    merged over those of earlier writes; ``error`` is only kept on the write that passes it."""
    if status not in STATES:
        raise ValueError(f"status must be one of {STATES}, got {status!r}")
    info = {
        **_earlier_fields(run_dir),
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


def update_status(run_dir: str | Path, **fields) -> dict:
    """Add ``fields`` to a readable status.json and leave the rest, timings and provenance included, as
    they were (e.g. an output fingerprint recorded later for a stage built before fingerprints)."""
    info = {**read_status(run_dir), **fields}
    write_json(Path(run_dir) / "status.json", info)
    return info
