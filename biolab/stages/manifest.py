"""Run manifests: written by the stage runner, read (never recomputing anything) by the report
and the notebooks.

``ROOT/runs/<experiment>/<run>.json`` manifests name each run's stage folders (relative to ROOT);
a stage counts only when its ``status.json`` says done, every stage it was built from is done, and
the file it is read for is still there. Anything else raises StageMissing (a ReportError), whose
message says which folder and why, so the report can flag the row instead of showing a number. Each
stage kind's own reader (``biolab.stages.qa.eval_metrics``, ``biolab.stages.probe.probe_rows``, ...)
is built on ``check_stage``, ``check_upstream``, ``need_file`` and ``read_json`` here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from biolab.errors import ReportError
from biolab.io import write_json
from biolab.stages.kind import is_volatile

MANIFESTS = "runs"
TASK_RUNS = ("manipulation", "tasks32")  # the manifest key of the task runs, then its old name
UPSTREAM = ("data", "corpus", "pretrain")  # what an eval or a probe stage was built from


def write_manifest(root: str | Path, manifest: dict) -> Path:
    """File one run's manifest under ``ROOT/runs/<experiment>/<run>.json``; returns its path."""
    path = Path(root) / MANIFESTS / manifest["experiment"] / f"{manifest['run']}.json"
    write_json(path, manifest)
    return path


class StageMissing(ReportError):
    """A stage a number comes from is absent, unfinished or lost its files."""


@dataclass(frozen=True, eq=False)  # hashed by identity: notebooks key dicts by run
class Run:
    root: Path
    path: Path  # the manifest
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["run"]

    @property
    def experiment(self) -> str:
        return self.manifest["experiment"]

    @property
    def data(self) -> str:
        return self.manifest["data"]

    def get(self, key: str, default=None):
        """Optional manifest fields: scale, model, finetune, train, qa_ratio."""
        return self.manifest.get(key, default)

    @property
    def has_qa(self) -> bool:
        """False for a probe-only experiment (qa_eval none): no QA numbers are expected."""
        return bool(self.manifest["stages"].get("eval"))

    @property
    def paper(self) -> dict:
        return self.manifest.get("paper") or {}

    def probes(self) -> dict[str, str]:
        """probe preset (p_fast, q_fast, ...) -> stage folder, relative to the root."""
        return dict(self.manifest["stages"].get("probe") or {})

    def task_runs(self) -> dict[str, dict]:
        """Manipulation task run label -> its settings (task, mode, qa_ratio, n_train, hint_prob, ...)
        and ``stages`` (tasks, train, eval folders). Manifests filed before the rename say
        ``tasks32`` where they now say ``manipulation``."""
        key = next((k for k in TASK_RUNS if k in self.manifest["stages"]), TASK_RUNS[0])
        stages = self.manifest["stages"].get(key) or {}
        info = self.manifest.get(key) or {}
        return {label: {**(info.get(label) or {}), "stages": dict(st)} for label, st in stages.items()}


def find_manifests(root: str | Path, experiments: str | list[str] | None = None) -> list[Path]:
    """The manifest files under ``root``, of every experiment or of the named one(s)."""
    root = Path(root)
    base = root / MANIFESTS
    if not root.is_dir():
        raise ReportError(f"root={root} does not exist")
    found = sorted(base.glob("*/*.json")) if base.is_dir() else []
    if not found:
        raise ReportError(
            f"no run manifests under {base}/<experiment>/*.json: has the stage runner run here?"
        )
    if experiments is None:
        return found
    wanted = [experiments] if isinstance(experiments, str) else [str(e) for e in experiments]
    known = sorted({p.parent.name for p in found})
    for experiment in wanted:
        if experiment not in known:
            raise ReportError(f"no runs of experiment {experiment!r} under {base}; found: {', '.join(known)}")
    return [p for p in found if p.parent.name in wanted]


def load_runs(root: str | Path, experiments: str | list[str] | None = None) -> list[Run]:
    """Every manifest under ``root`` (or the named experiments'), sorted by experiment then file name."""
    runs = []
    for path in find_manifests(root, experiments):
        manifest = _json_object(path, "manifest", ReportError)
        missing = [k for k in ("experiment", "run", "data", "stages") if k not in manifest]
        if missing or not isinstance(manifest.get("stages"), dict):
            raise ReportError(f"{path}: manifest lacks {', '.join(missing) or 'a stages object'}")
        if manifest["experiment"] != path.parent.name:
            raise ReportError(
                f"{path}: experiment {manifest['experiment']!r} filed under {path.parent.name}/"
            )
        runs.append(Run(Path(root), path, manifest))
    return drop_renamed(runs)


def drop_renamed(runs: list[Run]) -> list[Run]:
    """Each run once: a manifest filed before run names left the logging keys out
    (``bioS_single__train.wandb=disabled`` beside ``bioS_single``, the same stages) is the same run
    under an older name; the shortest name is kept, in the given order. No file is removed."""
    kept: dict = {}
    for run in sorted(runs, key=lambda r: (len(r.name), r.name)):
        kept.setdefault(_identity(run), run)
    chosen = {id(r) for r in kept.values()}
    return [r for r in runs if id(r) in chosen]


def _identity(run: Run):
    """What makes a run itself: its experiment, its stages and the overrides that are not logging keys
    (the manifest itself where it recorded no overrides)."""
    overrides = run.manifest.get("overrides")
    if not isinstance(overrides, list):
        return id(run)
    named = [o for o in overrides if not is_volatile(str(o).split("=", 1)[0].lstrip("+~"))]
    return run.experiment, json.dumps(run.manifest["stages"], sort_keys=True), tuple(map(str, named))


def stage_dir(run: Run, rel: str) -> Path:
    rel = Path(rel)
    return rel if rel.is_absolute() else run.root / rel


def check_stage(run: Run, rel: str | None, what: str) -> Path:
    """The stage folder if it is done; StageMissing naming it otherwise."""
    if not rel:
        raise StageMissing(f"{run.name}: the manifest lists no {what} stage")
    folder = stage_dir(run, rel)
    if not folder.is_dir():
        raise StageMissing(f"{run.name}: {what} stage {rel} does not exist")
    status = folder / "status.json"
    try:
        state = json.loads(status.read_text(encoding="utf-8")).get("status")
    except FileNotFoundError:
        raise StageMissing(f"{run.name}: {what} stage {rel} has no status.json") from None
    except (OSError, ValueError, AttributeError) as err:
        raise StageMissing(f"{run.name}: {what} stage {rel}: unreadable status.json ({err})") from None
    if state != "done":
        raise StageMissing(f"{run.name}: {what} stage {rel} is {state!r}, not done")
    return folder


def check_upstream(run: Run) -> None:
    """StageMissing unless every stage the run's numbers come from (data, corpus, pretraining) is done."""
    stages = run.manifest["stages"]
    for key in UPSTREAM:
        if key in stages:
            check_stage(run, stages[key], key)


def need_file(run: Run, folder: Path, name: str, what: str) -> Path:
    """``folder/name``, or StageMissing when a done stage lost it."""
    path = folder / name
    if not path.is_file():
        rel = path.relative_to(run.root) if path.is_relative_to(run.root) else path
        raise StageMissing(f"{run.name}: {rel} is missing although the {what} stage says done (deleted?)")
    return path


def stage_json(run: Run, key: str, name: str) -> tuple[Path, dict]:
    """The path and JSON object of file ``name`` in the run's done ``key`` stage (``eval``,
    ``memorization``, ``capacity``), once the stages it was built from are done too."""
    check_upstream(run)
    folder = check_stage(run, run.manifest["stages"].get(key), key)
    path = need_file(run, folder, name, key)
    return path, read_json(run, path, key)


def _json_object(path: Path, what: str, error: type[Exception], prefix: str = "") -> dict:
    """``path`` parsed as a JSON object, or ``error`` saying which file and why."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{prefix}{path}: not a readable JSON {what} ({err})") from None
    if not isinstance(data, dict):
        raise error(f"{prefix}{path}: a {what} must be a JSON object")
    return data


def read_json(run: Run, path: Path, what: str) -> dict:
    """A stage file parsed as a JSON object, or StageMissing naming the run and the file."""
    return _json_object(path, what, StageMissing, prefix=f"{run.name}: ")
