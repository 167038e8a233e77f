"""Run manifests: written by the stage runner, read (never recomputing anything) by the report
and the notebooks.

``ROOT/runs/<experiment>/<run>.json`` manifests name each run's stage folders (relative to ROOT);
a stage counts only when its ``status.json`` says done, every stage it was built from is done, and
the file it is read for is still there. Anything else raises StageMissing (a ReportError), whose
message says which folder and why, so the report can flag the row instead of showing a number.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
from dataclasses import dataclass
from pathlib import Path

from biolab.errors import ConfigError, ReportError
from biolab.io import write_json
from biolab.pipeline.cache import is_volatile

MANIFESTS = "runs"
CLAIMS = ".claims"  # ROOT/runs/<experiment>/.claims/<run>: runs being built (the report reads *.json only)
TASK_RUNS = ("manipulation", "tasks32")  # the manifest key of the task runs, then its old name
UPSTREAM = ("data", "corpus", "pretrain")  # what an eval or a probe stage was built from
PROBE_COLUMNS = ("model", "data", "probe", "control", "layer", "position", "position_kind", "attribute",
                 "task", "test_acc", "majority", "seen")  # fmt: skip


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


def _check_upstream(run: Run) -> None:
    stages = run.manifest["stages"]
    for key in UPSTREAM:
        if key in stages:
            check_stage(run, stages[key], key)


def _need_file(run: Run, folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if not path.is_file():
        rel = path.relative_to(run.root) if path.is_relative_to(run.root) else path
        raise StageMissing(f"{run.name}: {rel} is missing although the {what} stage says done (deleted?)")
    return path


def eval_metrics(run: Run) -> dict:
    """The QA eval's ``metrics.json`` ({"splits": {"train": {...}, "test": {...}}})."""
    _check_upstream(run)
    folder = check_stage(run, run.manifest["stages"].get("eval"), "eval")
    path = _need_file(run, folder, "eval/metrics.json", "eval")
    metrics = _read_json(run, path, "eval")
    if not isinstance(metrics.get("splits"), dict):
        raise StageMissing(f"{run.name}: {path} has no 'splits'")
    return metrics


def probe_rows(run: Run, probe: str) -> list[dict]:
    """The rows of one probe stage's ``probes.csv`` (strings, as written)."""
    _check_upstream(run)
    folder = check_stage(run, run.probes().get(probe), f"probe {probe}")
    path = _need_file(run, folder, "probes.csv", f"probe {probe}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        lacking = [c for c in PROBE_COLUMNS if c not in (reader.fieldnames or ())]
        if lacking:
            raise StageMissing(f"{run.name}: {path} lacks columns {', '.join(lacking)}")
        rows = list(reader)
    if not rows:
        raise StageMissing(f"{run.name}: {path} has no rows")
    other = sorted({r["data"] for r in rows} - {run.data})
    if other:  # a manifest wired to another dataset's probe would compare the wrong numbers
        raise StageMissing(f"{run.name}: {path} probes data {', '.join(other)}, the manifest says {run.data}")
    return rows


def probe_images(run: Run, probe: str) -> list[Path]:
    """The heatmaps a done probe stage left beside its probes.csv."""
    folder = check_stage(run, run.probes().get(probe), f"probe {probe}")
    return sorted(folder.glob("*.png"))


def _json_object(path: Path, what: str, error: type[Exception], prefix: str = "") -> dict:
    """``path`` parsed as a JSON object, or ``error`` saying which file and why."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{prefix}{path}: not a readable JSON {what} ({err})") from None
    if not isinstance(data, dict):
        raise error(f"{prefix}{path}: a {what} must be a JSON object")
    return data


def _read_json(run: Run, path: Path, what: str) -> dict:
    return _json_object(path, what, StageMissing, prefix=f"{run.name}: ")


def memorization_metrics(run: Run) -> dict:
    """The memorization stage's ``memorization.json`` (bio_completion, verbatim)."""
    _check_upstream(run)
    folder = check_stage(run, run.manifest["stages"].get("memorization"), "memorization")
    data = _read_json(run, _need_file(run, folder, "memorization.json", "memorization"), "memorization")
    for key in ("bio_completion", "verbatim"):
        if not isinstance((data.get(key) or {}).get("splits"), dict):
            raise StageMissing(f"{run.name}: {folder}/memorization.json has no {key} splits")
    return data


def capacity_metrics(run: Run) -> dict:
    """The capacity stage's ``capacity.json`` (the trained exposures and a row per model precision)."""
    _check_upstream(run)
    folder = check_stage(run, run.manifest["stages"].get("capacity"), "capacity")
    data = _read_json(run, _need_file(run, folder, "capacity.json", "capacity"), "capacity")
    if not isinstance(data.get("rows"), list) or not data["rows"]:
        raise StageMissing(f"{run.name}: {folder}/capacity.json has no rows")
    return data


def task_metrics(run: Run, label: str) -> dict:
    """A manipulation task run's ``eval/metrics.json``, once its task set, training and eval are done."""
    _check_upstream(run)
    stages = run.task_runs().get(label, {}).get("stages", {})
    for part in ("tasks", "train"):
        check_stage(run, stages.get(part), f"task {label} {part}")
    folder = check_stage(run, stages.get("eval"), f"task {label} eval")
    data = _read_json(run, _need_file(run, folder, "eval/metrics.json", f"task {label} eval"), "task eval")
    if not isinstance(data.get("splits"), dict):
        raise StageMissing(f"{run.name}: {folder}/eval/metrics.json has no 'splits'")
    return data


def name_clash(run: dict, stages: dict) -> str:
    """The stage entries ``run`` differs in from ``stages`` filed under its name ("": the same run)."""
    mine = run["stages"]
    return ", ".join(sorted(k for k in {*mine, *stages} if mine.get(k) != stages.get(k)))


@contextlib.contextmanager
def claim_runs(runs: list[dict], root: Path, replace_flag: str | None):
    """Check each run's name against the manifest filed under it and the runs other jobs (a parallel
    sweep) are building, then hold a claim on it until this job is done: one job at a time checks."""
    (Path(root) / MANIFESTS).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        with open(Path(root) / MANIFESTS / ".claims.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for run in {r["run"]: r for r in runs}.values():
                folder = Path(root) / MANIFESTS / run["experiment"]
                if replace_flag is not None:
                    check_filed(run, folder / f"{run['run']}.json", replace_flag)
                held.enter_context(claim(run, folder / CLAIMS / run["run"]))
        yield


def check_filed(run: dict, path: Path, replace_flag: str) -> None:
    """A manifest under the run's name must be this run (a rerun): else it would be lost."""
    if not path.is_file():
        return
    try:
        stages = json.loads(path.read_text())["stages"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a run manifest; pass {replace_flag} to replace it") from None
    diff = name_clash(run, stages)
    if diff:
        raise ConfigError(
            f"{path} is a run with other {diff} stages under this name; pass {replace_flag} to replace it, "
            "or use another root"
        )


@contextlib.contextmanager
def claim(run: dict, path: Path):
    """A shared flock on ``path`` while this job builds the run (the OS drops it however the job
    ends); the file holds the run's stages, for another job that wants the same name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it: any content is stale
            f.truncate(0)
            f.write(json.dumps(run["stages"], sort_keys=True))
            f.flush()
        except BlockingIOError:
            f.seek(0)
            diff = name_clash(run, json.loads(f.read() or "{}"))
            if diff:
                raise ConfigError(
                    f"another job is building run {run['experiment']}/{run['run']} with other {diff} "
                    "stages; run them one after the other, or tell them apart with an override"
                ) from None
        fcntl.flock(f, fcntl.LOCK_SH)
        yield
