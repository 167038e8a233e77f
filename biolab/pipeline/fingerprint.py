"""Fingerprints of a finished stage's outputs, so that reuse notices damage.

A stage records, when it completes, the size of every output file and a SHA-256: of the whole file
up to ``FULL_HASH_BYTES``, of three ``SAMPLE_BYTES`` slices (start, middle, end) beyond that, so
that checking a 100k-people corpus on reuse reads a few MiB, not GBs. Sizes catch truncation and
appended bytes; the sampled hash catches most overwrites of a large file but not a flipped byte
between its slices (``verify_dataset`` and ``check_dataset.py`` hash datasets whole).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FULL_HASH_BYTES = 16 * 2**20
SAMPLE_BYTES = 2**20


def file_digest(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(SAMPLE_BYTES), b""):
                h.update(block)
        else:
            for offset in (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES):
                f.seek(offset)
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def output_files(stage_dir: Path, outputs: tuple[str, ...]) -> list[Path]:
    """Every file of the declared outputs (a folder output: all files under it), sorted."""
    files = []
    for name in outputs:
        path = stage_dir / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return files


def fingerprint(stage_dir: str | Path, outputs: tuple[str, ...]) -> dict[str, dict]:
    """relative path -> {"size", "sha256"} for every output file."""
    stage_dir = Path(stage_dir)
    out = {}
    for path in output_files(stage_dir, outputs):
        size = path.stat().st_size
        out[path.relative_to(stage_dir).as_posix()] = {"size": size, "sha256": file_digest(path, size)}
    return out


def damage(stage_dir: str | Path, recorded: dict[str, dict], outputs: tuple[str, ...]) -> str | None:
    """What differs from the recorded fingerprint (the first problem, one line), or None."""
    stage_dir = Path(stage_dir)
    present = {p.relative_to(stage_dir).as_posix() for p in output_files(stage_dir, outputs) if p.exists()}
    for rel, want in recorded.items():
        path = stage_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{rel} has {size} bytes, {want['size']} when the stage finished"
        if file_digest(path, size) != want["sha256"]:
            return f"{rel} changed since the stage finished (sha256)"
    extra = sorted(present - set(recorded))
    return f"{extra[0]} appeared after the stage finished" if extra else None
