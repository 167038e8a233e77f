"""Build planned runs through the stage cache, in one process or several, and file each run's
manifest once its stages are done."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from biolab.pipeline.cache import check_root, ensure
from biolab.pipeline.manifest import write_manifest
from biolab.pipeline.plan import validate_plan


def build_run(
    run: dict, root: Path, progress: bool, log=print, seen: dict | None = None, strict: bool = False
) -> Path:
    seen = {} if seen is None else seen  # each stage is checked once per run, not once per consumer
    log(f"== {run['experiment']} / {run['run']} ({run['scale']})")
    context = {k: run.get(k) for k in ("experiment", "run", "data", "scale")}
    for stage in run["stage_objs"]:
        ensure(stage, root, log, progress, seen, strict, context)
    return write_manifest(root, {k: v for k, v in run.items() if k != "stage_objs"})


def _build_run_in_worker(run: dict, root: Path, progress: bool, threads: int, strict: bool) -> Path:
    import torch

    torch.set_num_threads(threads)
    name = run["run"]
    return build_run(run, root, progress, log=lambda m: print(f"[{name}] {m}", flush=True), strict=strict)


def run_experiment(
    runs: list[dict], root: str | Path, progress: bool = True, log=print, jobs: int = 1, strict: bool = False
) -> list[Path]:
    """Build every run's stages through the cache; write its manifest; return the manifest paths.

    ``jobs > 1`` builds runs in that many processes, each with its share of the CPU threads (small
    models use one core better than two); stages shared between runs are built once (stage lock).
    ``strict``: a damaged stage stops the run instead of being rebuilt."""
    root = check_root(root)
    validate_plan(runs)
    if jobs <= 1 or len(runs) == 1:
        seen: dict = {}
        return [build_run(run, root, progress, log, seen, strict) for run in runs]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_build_run_in_worker, run, root, False, threads, strict) for run in runs]
        return [f.result() for f in futures]
