"""Build planned runs through the stage cache, in one process or several, and file each run's
manifest once its stages are done.

A person follows the build on a ``biolab.console.Board``: a line per running run and the stages'
messages. Worker processes send their messages and progress to it through a queue, so that only
the parent writes to the console (and a worker's own output goes to its stages' logs)."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

from biolab.console import Board, reporting
from biolab.errors import ConfigError
from biolab.pipeline.cache import check_root, ensure
from biolab.pipeline.plan import PlannedRun, is_count, validate_plan
from biolab.stages.manifest import write_manifest

_events = None  # in a worker process: the queue to the parent's board (set by _start_worker)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def build_run(
    run: PlannedRun, root: Path, emit, seen: dict | None = None, strict: bool = False, verbose: bool = False
) -> Path:
    """Build ``run``'s stages and file its manifest; its messages and progress go to ``emit`` as
    Board events. The builds show no progress bars of their own: the board is theirs."""
    seen = {} if seen is None else seen  # each stage is checked once per run, not once per consumer
    manifest = run.manifest
    name = manifest.run

    def log(text: str) -> None:
        emit({"run": name, "message": text})

    log(f"== {manifest.experiment} / {name} ({manifest.scale})")
    context = {k: getattr(manifest, k) for k in ("experiment", "run", "data", "scale")}
    try:
        with reporting(lambda fields: emit({"run": name, **fields})):
            for stage in run.build:
                ensure(stage, root, log, False, seen, strict, context, verbose)
        return write_manifest(root, manifest)
    finally:
        emit({"run": name, "end": True})


def _start_worker(events, threads: int, parent: int) -> None:
    import torch

    global _events
    _events = events
    die_with_parent(parent)
    torch.set_num_threads(threads)


def die_with_parent(parent: int) -> None:
    """End this worker when ``parent`` (the run.py that started it) dies, even by kill -9: otherwise
    it would go on building for nobody, holding its memory and its stage locks. On Linux the kernel
    sends SIGKILL (not SIGTERM, which a library may catch) at the parent's death; elsewhere a thread
    notices the parent gone within a second. Either way the worker dies as if killed with it: its
    stage stays unfinished and is resumed or rebuilt by the next run, its leftovers cleaned."""
    if not _set_parent_death_signal(signal.SIGKILL):
        threading.Thread(target=watch_parent, args=(parent,), name="biolab-orphan-watch", daemon=True).start()
    if os.getppid() != parent:  # it died before the signal was asked for: nobody would send it
        os._exit(1)


def _set_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent: int, every: float = 1.0, stop=os._exit) -> None:
    """Poll until ``parent`` is no longer this process's parent (an orphan is adopted by another
    process), then ``stop(1)``."""
    while os.getppid() == parent:
        time.sleep(every)
    stop(1)


def _build_run_in_worker(run: PlannedRun, root: Path, strict: bool, verbose: bool) -> Path:
    return build_run(run, root, _events.put, strict=strict, verbose=verbose)


def _relay(events, emit) -> None:
    while (event := events.get()) is not None:
        emit(event)


def _build_in_workers(
    runs: list[PlannedRun], root: Path, jobs: int, strict: bool, verbose: bool, emit
) -> list[Path]:
    """Each run in one of ``jobs`` spawned processes, each with its share of the CPU threads; their
    events reach ``emit`` in this process through a queue."""
    ctx = mp.get_context("spawn")
    # A SimpleQueue's put returns once the event is written, so every event of a finished run is
    # in the pipe before its result, and before the end marker put below.
    events = ctx.SimpleQueue()
    relay = threading.Thread(target=_relay, args=(events, emit), name="biolab-relay", daemon=True)
    relay.start()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    try:
        start = (events, threads, os.getpid())
        with ProcessPoolExecutor(jobs, ctx, initializer=_start_worker, initargs=start) as pool:
            order = spread_shared_pretraining(runs)
            submitted = {i: pool.submit(_build_run_in_worker, runs[i], root, strict, verbose) for i in order}
            futures = [submitted[i] for i in range(len(runs))]
            try:
                wait(futures)
            except BaseException:  # Ctrl-C: the runs not started yet are not started any more
                for f in futures:
                    f.cancel()
                raise
    finally:
        events.put(None)
        relay.join()
    return [f.result() for f in futures]


def spread_shared_pretraining(runs: list[PlannedRun]) -> list[int]:
    """The order to start ``runs`` in parallel: round-robin over their pretrainings, so that runs
    sharing one (a finetune grid's points) are not started side by side, where all but one worker
    would wait on the stage lock while other pretrainings could be built. Stable otherwise."""
    groups: dict = {}
    for i, run in enumerate(runs):
        key = run.manifest.folder("pretrain") or ("run", i)
        groups.setdefault(str(key), []).append(i)
    rounds = max(len(g) for g in groups.values()) if groups else 0
    return [g[k] for k in range(rounds) for g in groups.values() if k < len(g)]


def check_jobs(jobs) -> int:
    """``jobs`` as a count of processes: 0 or a negative number once ran in one process silently."""
    if not is_count(jobs):
        raise ConfigError(f"jobs must be an integer >= 1 (processes building runs at once), got {jobs!r}")
    return jobs


def run_experiment(
    runs: list[PlannedRun], root: str | Path, progress: bool = True, log=None, jobs: int = 1,
    strict: bool = False, verbose: bool = False,
) -> list[Path]:  # fmt: skip
    """Build every run's stages through the cache; write its manifest; return the manifest paths.

    ``jobs > 1`` builds runs in that many processes, each with its share of the CPU threads (small
    models use one core better than two); stages shared between runs are built once (stage lock).
    ``strict``: a damaged stage stops the run instead of being rebuilt. ``progress``: a line per
    running run, live on a terminal, plain every tenth of a stage or 30 s elsewhere. ``log`` takes
    the messages (default: printed). ``verbose``: the builds' output (library banners, warnings)
    comes to the console, not to each stage's log.txt, and the lines are plain."""
    check_jobs(jobs)
    root = check_root(root)
    validate_plan(runs)
    parallel = jobs > 1 and len(runs) > 1
    with Board(progress=progress, live=False if verbose else None, log=log, prefix=parallel) as board:
        if parallel:
            return _build_in_workers(runs, root, jobs, strict, verbose, board.handle)
        seen: dict = {}
        return [build_run(run, root, board.handle, seen, strict, verbose) for run in runs]
