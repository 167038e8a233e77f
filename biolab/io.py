"""Atomic file and folder writes: a reader never sees a half-written output."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from biolab.errors import ConfigError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def check_writable(path: str | Path, what: str = "out") -> Path:
    """Raise a one-line ConfigError unless a folder at ``path`` can be made or written into; creates
    nothing. It writes a temp file in the nearest folder that exists, since permission bits say
    nothing to root and a parent that is a regular file or a read-only mount only shows on a write."""
    path = Path(path)
    near = path
    while not near.exists() and near != near.parent:
        near = near.parent
    try:
        if not near.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(near))
        with tempfile.NamedTemporaryFile(dir=near, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"{what}={path} is not writable: {err.strerror or err}") from None
    return path


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse a non-empty ``out`` unless ``overwrite``; call before any work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out={out} is not empty; pass overwrite=true to replace it")
    return out


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False):
    """Yield a temp folder beside ``out``; on success it replaces ``out`` in one rename.

    On error or kill the temp folder (a hidden ``.name.tmp-*``) is removed or left behind, never
    mistaken for ``out``; the old ``out`` is only removed once the new one is in place.
    """
    out = check_output_dir(out, overwrite)
    check_writable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
