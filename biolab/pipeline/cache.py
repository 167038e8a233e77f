"""The stage cache: content-addressed stage folders, built once, resumed or reused.

Each stage lives in ``ROOT/<kind>/<key>/``, ``key`` a hash of its kind, its own config and its
inputs' keys, with ``config.yaml``, ``status.json`` and its outputs. A stage whose status is done and
whose outputs are all present is reused; an unfinished one runs again (a resumable kind picks up
from its own checkpoints or caches). Outputs of the other kinds are built in a hidden temp folder
and moved in before ``done`` is written, so a killed run never leaves a stage that looks complete. A
per-stage ``flock`` keeps parallel sweep jobs from building the same stage twice: the second waits,
then reuses. What a kind is (outputs, build, checks) is a ``Kind`` record; the kinds themselves are
declared in biolab.stages. Unless ``verbose``, a build's stdout and stderr go to ``log.txt``
in the stage folder (not an output: it is not fingerprinted, and a resumed build appends to it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from biolab.console import LOG_NAME, captured_output, duration, report
from biolab.errors import BiolabError, ConfigError
from biolab.io import atomic_write_text, check_writable, new_dir
from biolab.pipeline.fingerprint import damage, fingerprint
from biolab.stages.kind import VOLATILE, Kind
from biolab.status import read_status, update_status, write_status

MIN_FREE_BYTES = 200 * 2**20
PARTIAL = ".partial-"  # a non-resumable build's temp folder inside its stage folder


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
    spec: Kind
    config: dict
    inputs: dict = field(default_factory=dict)  # name -> Stage

    def __post_init__(self):
        if not isinstance(self.spec, Kind):
            raise ConfigError(f"a stage needs a Kind record, got {self.spec!r}")

    @property
    def kind(self) -> str:
        return self.spec.name

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


def stage_state(stage: Stage, root: str | Path) -> tuple[str, str]:
    """(state, why): ``complete``; ``absent`` (never built, or unfinished: build or resume it);
    ``damaged`` (it said done, but its status.json is unreadable, an output is gone, or an output
    differs from the fingerprint recorded when it finished); ``unrecorded`` (done, outputs present,
    no fingerprint: a stage built before fingerprints, to be recorded now)."""
    path = stage.path(root)
    try:
        status = read_status(path)
    except (OSError, ValueError) as err:
        return "damaged", f"status.json is unreadable ({type(err).__name__})"
    if not isinstance(status, dict) or status.get("status") != "done":
        return "absent", ""
    missing = [o for o in stage.spec.outputs if not (path / o).exists()]
    if missing:
        return "damaged", f"outputs missing: {', '.join(missing)}"
    recorded = status.get("outputs")
    if not isinstance(recorded, dict):
        return "unrecorded", ""
    problem = damage(path, recorded, stage.spec.outputs)
    return ("damaged", problem) if problem else ("complete", "")


def clean_stage(path: Path) -> list[Path]:
    """Remove what a killed build left in its stage folder: temp build folders (``.partial-*``) and
    half-written files of atomic_write_text (``.status.json.<random>.tmp``). Only called under the
    stage lock: a build holds that lock for as long as it writes here, so whatever is left over when
    the lock is ours belongs to a dead process (a lock, not a pid: the OS drops it however the holder
    dies, on any host sharing the root). Returns what it removed."""
    try:
        found = [p for p in path.iterdir() if p.name.startswith(PARTIAL) or _half_written(p)]
    except FileNotFoundError:
        return []
    for p in found:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return found


def _half_written(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()


def is_complete(stage: Stage, root: str | Path) -> bool:
    return stage_state(stage, root)[0] in ("complete", "unrecorded")


def check_root(root: str | Path) -> Path:
    """A writable root with some free space, checked before any work starts."""
    root = check_writable(root, what="root")
    root.mkdir(parents=True, exist_ok=True)
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
            report(stage=stage.kind, state="waiting")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(
    stage: Stage, root: str | Path, log=print, progress: bool = True, seen: dict | None = None,
    strict: bool = False, context: dict | None = None, verbose: bool = False,
) -> Path:  # fmt: skip
    """Build ``stage`` (and its inputs first) unless complete; return its folder. ``seen`` (key ->
    folder) lets a caller check each shared stage once across several calls. A damaged stage is
    rebuilt with a one-line message, or with ``strict`` refused (StageError). ``verbose``: a build's
    output goes where this process's goes, not to the stage's log.txt."""
    root = Path(root)
    seen = {} if seen is None else seen
    if stage.key in seen:
        return seen[stage.key]
    args = (log, progress, seen, strict, context, verbose)
    inputs = {name: ensure(s, root, *args) for name, s in stage.inputs.items()}
    path = stage.path(root)
    with stage_lock(stage, root, log):
        clean_stage(path)
        state, why = stage_state(stage, root)
        if state == "unrecorded":  # built before fingerprints: trust it once, check it from now on
            update_status(path, outputs=fingerprint(path, stage.spec.outputs))
            log(f"[{stage.rel()}] {stage.kind}: reused (fingerprint recorded)")
        elif state == "complete":
            log(f"[{stage.rel()}] {stage.kind}: reused")
        else:
            if state == "damaged":
                if strict:
                    raise StageError(f"[{stage.rel()}] {stage.kind} is damaged: {why} (strict: not rebuilt)")
                log(f"[{stage.rel()}] {stage.kind}: damaged ({why}); rebuilding")
            _build(stage, path, inputs, log, progress, context or {}, verbose)
    seen[stage.key] = path
    return path


def _build(stage: Stage, path: Path, inputs: dict, log, progress: bool, context: dict, verbose: bool) -> None:
    started = time.time()
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "config.yaml", yaml.safe_dump(
        {"kind": stage.kind, "config": stage.config, "inputs": {n: s.rel() for n, s in stage.inputs.items()}},
        sort_keys=False,
    ))  # fmt: skip
    write_status(path, "running", started)
    log(f"[{stage.rel()}] {stage.kind}: building")
    report(stage=stage.kind, state="building")
    try:
        with captured_output(path / LOG_NAME, enabled=not verbose):
            fields = _run_build(stage, path, inputs, progress, context)
    except BaseException as err:
        write_status(path, "failed", started, error=f"{type(err).__name__}: {err}")
        what = "failed" if isinstance(err, Exception) else "stopped"  # Ctrl-C, a kill
        where = "" if verbose else f"; its output is in {path / LOG_NAME}"
        log(f"[{stage.rel()}] {stage.kind}: {what} after {duration(time.time() - started)}{where}")
        if isinstance(err, OSError) and err.errno == 28:
            raise StageError(f"[{stage.rel()}] no space left on device under {path}") from err
        raise
    missing = [o for o in stage.spec.outputs if not (path / o).exists()]
    if missing:
        write_status(path, "failed", started, error=f"missing outputs {missing}")
        raise StageError(f"[{stage.rel()}] {stage.kind} finished without {missing}")
    write_status(path, "done", started, **(fields or {}), outputs=fingerprint(path, stage.spec.outputs))
    summary = stage_summary(path)
    took = duration(time.time() - started)
    log(f"[{stage.rel()}] {stage.kind}: done in {took}" + (f": {summary}" if summary else ""))


def _run_build(stage: Stage, path: Path, inputs: dict, progress: bool, context: dict) -> dict | None:
    """The kind's build: in the stage folder (resumable), or in a temp folder moved in when done."""
    if stage.spec.resumable:
        return stage.spec.build(stage.config, inputs, path, progress, context)
    tmp = new_dir(path, PARTIAL)
    # the stage folder itself, for work a killed build should not lose (a dataset's LLM-written bios)
    context = {**context, "stage_dir": path}
    try:
        fields = stage.spec.build(stage.config, inputs, tmp / "out", progress, context)
        for item in (tmp / "out").iterdir():
            target = path / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return fields


def stage_summary(path: Path) -> str:
    """What a person wants to know of a finished stage, from what it wrote: a training run's final
    loss, an evaluation's mean exact match per split ("" when neither)."""
    parts = []
    final = (read_status(path) or {}).get("final")
    if isinstance(final, dict) and isinstance(final.get("loss"), int | float):
        parts.append(f"loss {final['loss']:.3f}")
    metrics = path / "eval" / "metrics.json"
    try:
        splits = json.loads(metrics.read_text())["splits"] if metrics.is_file() else {}
        means = {split: m["exact_match"]["mean"] for split, m in splits.items()}
    except (OSError, ValueError, KeyError, TypeError):  # a summary never fails a finished stage
        means = {}
    if means:
        parts.append("QA exact match " + ", ".join(f"P_{s} {100 * v:.1f}%" for s, v in means.items()))
    return ", ".join(parts)
