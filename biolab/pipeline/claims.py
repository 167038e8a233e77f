"""Run-name claims: before a job builds its runs, each name is checked against the manifest filed
under it and the runs other jobs (a parallel sweep) are building, and held until the job ends, so that
two different runs never end up under one name (the manifests themselves: biolab.stages.manifest)."""

from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path

from biolab.errors import ConfigError, ReportError
from biolab.stages.manifest import MANIFESTS, RunManifest, stage_slots

CLAIMS = ".claims"  # ROOT/runs/<experiment>/.claims/<run>: runs being built (the report reads *.json only)


def name_clash(run: RunManifest, stages: dict) -> str:
    """The stage slots ``run`` differs in from ``stages`` filed under its name ("": the same run), in
    whichever manifest format ``stages`` was filed."""
    mine, stages = run.stages, stage_slots(stages)
    return ", ".join(sorted(k for k in {*mine, *stages} if mine.get(k) != stages.get(k)))


@contextlib.contextmanager
def claim_runs(runs: list, root: Path, replace_flag: str | None):
    """Check each run's name against the manifest filed under it and the runs other jobs (a parallel
    sweep) are building, then hold a claim on it until this job is done: one job at a time checks."""
    (Path(root) / MANIFESTS).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        with open(Path(root) / MANIFESTS / ".claims.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for run in {r.manifest.run: r.manifest for r in runs}.values():
                folder = Path(root) / MANIFESTS / run.experiment
                if replace_flag is not None:
                    check_filed(run, folder / f"{run.run}.json", replace_flag)
                held.enter_context(claim(run, folder / CLAIMS / run.run))
        yield


def check_filed(run: RunManifest, path: Path, replace_flag: str) -> None:
    """A manifest under the run's name must be this run (a rerun): else it would be lost."""
    if not path.is_file():
        return
    try:
        diff = name_clash(run, json.loads(path.read_text())["stages"])
    except (ValueError, KeyError, TypeError, ReportError):
        raise ConfigError(f"{path} is not a run manifest; pass {replace_flag} to replace it") from None
    if diff:
        raise ConfigError(
            f"{path} is a run with other {diff} stages under this name; pass {replace_flag} to replace it, "
            "or use another root"
        )


@contextlib.contextmanager
def claim(run: RunManifest, path: Path):
    """A shared flock on ``path`` while this job builds the run (the OS drops it however the job
    ends); the file holds the run's stages, for another job that wants the same name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it: any content is stale
            f.truncate(0)
            f.write(json.dumps(run.stages, sort_keys=True))
            f.flush()
        except BlockingIOError:
            f.seek(0)
            diff = name_clash(run, json.loads(f.read() or "{}"))
            if diff:
                raise ConfigError(
                    f"another job is building run {run.experiment}/{run.run} with other {diff} "
                    "stages; run them one after the other, or tell them apart with an override"
                ) from None
        fcntl.flock(f, fcntl.LOCK_SH)
        yield
