"""The stage graph and its artifact cache.

generate (data) -> tokenize (corpus) -> pretrain (BIO or mixed) -> finetune + evaluate, or evaluate
alone (mixed training) -> probe; Part 3.2 adds memorization, tasks -> task_finetune or task_mixed ->
task_eval (biolab.pipeline32). Each stage lives in ``ROOT/<kind>/<key>/``, ``key`` a hash of its own
config and its inputs' keys, with ``config.yaml``, ``status.json`` and its outputs. A stage whose
status is done and whose outputs are all present is reused; an unfinished one runs again (pretrain
and finetune resume from their checkpoints, probes from their cached states). Outputs of the
one-shot stages are built in a hidden temp folder and moved in before ``done`` is written, so a
killed run never leaves a stage that looks complete. A per-stage ``flock`` keeps parallel sweep jobs
from building the same stage twice: the second waits, then reuses.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from biolab.errors import BiolabError, ConfigError
from biolab.io import atomic_write_text
from biolab.runinfo import read_status, write_status

KINDS = ("data", "corpus", "pretrain", "finetune", "evaluate", "probe",
         "memorization", "tasks", "task_finetune", "task_mixed", "task_eval")  # fmt: skip
OUTPUTS = {
    "data": ("meta.json", "people.jsonl", "bios.jsonl", "qa.jsonl"),
    "corpus": ("meta.json", "bios.bin", "bios.npz", "qa.bin", "qa.npz", "tokenizer"),
    "pretrain": ("model/config.json",),
    "finetune": ("model", "eval/metrics.json"),
    "evaluate": ("eval/metrics.json",),
    "probe": ("probes.csv",),
    # Part 3.2 (biolab.pipeline32)
    "memorization": ("memorization.json",),
    "tasks": ("meta.json", "items.jsonl", "items.bin", "items.npz", "items.json"),
    "task_finetune": ("model",),
    "task_mixed": ("model/config.json",),
    "task_eval": ("eval/metrics.json",),
}
# Built in place, resuming from their own checkpoints or caches; the rest build in a temp folder.
RESUMABLE = ("pretrain", "finetune", "probe", "task_finetune", "task_mixed")
# Keys that change logging or bookkeeping, never the artifact: left out of the hash so that e.g.
# turning wandb on does not retrain a model.
VOLATILE = {"wandb", "log_every", "eval_every", "eval_people", "ckpt_every", "keep_ckpts", "progress"}
MIN_FREE_BYTES = 200 * 2**20


class StageError(BiolabError):
    """A stage failed or its folder is unusable."""


def _stable(obj):
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in sorted(obj.items()) if k not in VOLATILE}
    if isinstance(obj, list | tuple):
        return [_stable(v) for v in obj]
    return obj


@dataclass(frozen=True, eq=False)
class Stage:
    kind: str
    config: dict
    inputs: dict = field(default_factory=dict)  # name -> Stage

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"unknown stage kind {self.kind!r}")

    @cached_property
    def key(self) -> str:
        blob = {
            "kind": self.kind,
            "config": _stable(self.config),
            "inputs": {n: s.key for n, s in self.inputs.items()},
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def rel(self) -> str:
        return f"{self.kind}/{self.key}"

    def path(self, root: str | Path) -> Path:
        return Path(root) / self.kind / self.key


def is_complete(stage: Stage, root: str | Path) -> bool:
    path = stage.path(root)
    status = read_status(path)
    return bool(status and status.get("status") == "done") and all(
        (path / o).exists() for o in OUTPUTS[stage.kind]
    )


def check_root(root: str | Path) -> Path:
    """A writable root with some free space, checked before any work starts."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"root={root} is not writable: {err.strerror or err}") from None
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"root={root} has only {free / 2**20:.0f} MiB free; need {MIN_FREE_BYTES // 2**20} MiB"
        )
    return root


@contextmanager
def stage_lock(stage: Stage, root: Path, log=print):
    """Exclusive per-stage lock (released by the OS if the holder dies)."""
    lock_dir = root / stage.kind
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f".{stage.key}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[{stage.rel()}] another job is building this stage; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(stage: Stage, root: str | Path, builders: dict, log=print, _seen: dict | None = None) -> Path:
    """Build ``stage`` (and its inputs first) unless complete; return its folder."""
    root = Path(root)
    _seen = {} if _seen is None else _seen
    if stage.key in _seen:
        return _seen[stage.key]
    inputs = {name: ensure(s, root, builders, log, _seen) for name, s in stage.inputs.items()}
    path = stage.path(root)
    with stage_lock(stage, root, log):
        if is_complete(stage, root):
            log(f"[{stage.rel()}] {stage.kind}: reused")
        else:
            if read_status(path) and read_status(path).get("status") == "done":
                log(f"[{stage.rel()}] {stage.kind}: outputs missing, rebuilding")
            _build(stage, path, inputs, builders[stage.kind], log)
    _seen[stage.key] = path
    return path


def _build(stage: Stage, path: Path, inputs: dict, builder, log) -> None:
    import yaml

    started = time.time()
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "config.yaml", yaml.safe_dump(
        {"kind": stage.kind, "config": stage.config, "inputs": {n: s.rel() for n, s in stage.inputs.items()}},
        sort_keys=False,
    ))  # fmt: skip
    write_status(path, "running", started)
    log(f"[{stage.rel()}] {stage.kind}: building")
    try:
        if stage.kind in RESUMABLE:
            builder(stage.config, inputs, path)  # resumable in place
        else:
            tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=path))
            try:
                builder(stage.config, inputs, tmp / "out")
                for item in (tmp / "out").iterdir():
                    target = path / item.name
                    if target.is_dir():
                        shutil.rmtree(target)
                    os.replace(item, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as err:
        write_status(path, "failed", started, error=f"{type(err).__name__}: {err}")
        if isinstance(err, OSError) and err.errno == 28:
            raise StageError(f"[{stage.rel()}] no space left on device under {path}") from err
        raise
    missing = [o for o in OUTPUTS[stage.kind] if not (path / o).exists()]
    if missing:
        write_status(path, "failed", started, error=f"missing outputs {missing}")
        raise StageError(f"[{stage.rel()}] {stage.kind} finished without {missing}")
    write_status(path, "done", started)
    log(f"[{stage.rel()}] {stage.kind}: done in {time.time() - started:.0f} s")
