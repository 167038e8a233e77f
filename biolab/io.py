"""Atomic file and folder writes: a reader never sees a half-written output."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from biolab.errors import ConfigError


def new_file(parent: Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """(fd open for writing, path) of a new file ``parent/<prefix><random><suffix>``. Unlike
    tempfile.mkstemp (0600) it gets the mode open() gives, 0666 less the user's umask: a file renamed
    into a shared root must be as readable to colleagues as its siblings."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def new_dir(parent: Path, prefix: str) -> Path:
    """A new folder ``parent/<prefix><random>``, 0777 less the user's umask as mkdir gives (not
    tempfile.mkdtemp's 0700, which a folder renamed into place would keep)."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(0o777)
            return path
        except FileExistsError:
            continue


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_file(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig, path: str | Path, dpi: int = 110, bbox_inches: str | None = None) -> Path:
    """Save a matplotlib figure as atomic_write_text writes text (a temp file beside ``path``, then a
    rename: a reader never sees half a PNG) and close it; the format is ``path``'s suffix."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_file(path.parent, f".{path.name}.", ".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches=bbox_inches, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in blocks (checkpoints and cached states run to GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


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


# Leftovers of a killed atomic_dir: each writer holds an flock on ``.NAME.lock-TOKEN`` from before it
# makes ``.NAME.tmp-TOKEN`` until its folder is in place, so the next writer of NAME removes exactly
# the temp folders whose lock is free. A lock (not a recorded pid) because the OS drops it however its
# holder dies, it is never mistaken for a reused pid, and it works for a root shared by several hosts,
# where a pid means nothing to the other hosts.
LEFTOVER_KINDS = ("tmp", "old", "lock")
TOKEN = re.compile(r"[A-Za-z0-9_]+")  # tempfile's and new_dir's random part: no "." or "-"


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False):
    """Yield a temp folder beside ``out``; on success it replaces ``out`` in one rename.

    On error the temp folder (a hidden ``.name.tmp-*``) is removed; on a kill it is left behind, never
    mistaken for ``out``, and removed by the next atomic_dir of ``out``; the old ``out`` is only removed
    once the new one is in place.
    """
    check_writable(out)
    clean_leftovers(out)
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _claimed_token(out) as token:
        tmp = out.parent / f".{out.name}.tmp-{token}"
        tmp.mkdir(0o777)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = out.parent / f".{out.name}.old-{token}"
        if out.exists():
            old.mkdir(0o777)
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _claimed_token(out: Path):
    """A fresh token whose lock file this process holds until the block ends (then removes it)."""
    while True:
        lock = out.parent / f".{out.name}.lock-{secrets.token_hex(4)}"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)  # a cleaner that found it first removes it: then take another
        if _same_file(fd, lock):
            break
        os.close(fd)
    try:
        yield lock.name.rsplit("-", 1)[1]
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def clean_leftovers(out: str | Path) -> list[Path]:
    """Remove what killed atomic_dirs of ``out`` left beside it (``.out.tmp-*``, ``.out.old-*``, their
    lock files) whose writer is gone; a folder a live writer holds is left alone. Where the kill came
    between moving the old ``out`` aside and moving the new one in, the old one is put back first.
    Returns the leftovers removed."""
    out = Path(out)
    try:
        names = [p.name for p in out.parent.iterdir()]
    except OSError:  # no parent yet: nothing left over
        return []
    tokens = set()
    for name in names:
        for kind in LEFTOVER_KINDS:
            head = f".{out.name}.{kind}-"
            if name.startswith(head) and TOKEN.fullmatch(name[len(head) :]):
                tokens.add(name[len(head) :])
    removed = []
    for token in sorted(tokens):
        removed += _clean_token(out, token)
    return removed


def _clean_token(out: Path, token: str) -> list[Path]:
    tmp, old, lock = (out.parent / f".{out.name}.{kind}-{token}" for kind in LEFTOVER_KINDS)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer is alive
            return []
        if (old / out.name).exists() and not out.exists():
            os.replace(old / out.name, out)
        removed = [p for p in (tmp, old) if p.exists()]
        for p in removed:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        lock.unlink(missing_ok=True)
        return removed
    finally:
        os.close(fd)
