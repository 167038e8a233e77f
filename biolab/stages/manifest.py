"""Run manifests: written by the stage runner, read (never recomputing anything) by the report
and the notebooks.

``ROOT/runs/<experiment>/<run>.json`` holds one ``RunManifest``: what the run is (experiment, data,
model, finetune, overrides, the paper numbers it is compared with) and ``stages``, one flat map from
a slot to the stage folder (relative to ROOT) that fills it: ``pretrain``, ``eval``, ``probe/p_fast``,
``manipulation/<label>/train``. Manifests filed before the format had one shape (a string, a
``{preset: folder}`` dict or a nested dict per slot) are read into the same flat map by
``stage_slots``.

A stage counts only when its ``status.json`` says done, every stage it was built from is done, and
the file it is read for is still there. Anything else raises StageMissing (a ReportError), whose
message says which folder and why, so the report can flag the row instead of showing a number. Each
stage kind's own reader (``biolab.stages.qa.eval_metrics``, ``biolab.stages.probe.probe_rows``, ...)
is built on ``check_stage``, ``check_upstream``, ``need_file`` and ``read_json`` here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from biolab.errors import ConfigError, ReportError
from biolab.io import write_json
from biolab.stages.kind import is_volatile

MANIFESTS = "runs"
FORMAT = 2  # 2: stages as one flat {slot: folder} map; manifests without "format" are 1 (nested)
PROBE_SLOT = "probe"  # slot prefix of the probe stages: probe/<preset>
TASK_RUNS = ("manipulation", "tasks32")  # slot prefix of the task runs, then its old name
UPSTREAM = ("data", "junk", "corpus", "pretrain")  # what an eval or a probe stage was built from
SEP = "/"  # between a slot's parts: never in a preset name or a task label (refused by ``slot``)


def slot(*parts: str) -> str:
    """A stage slot (``probe/p_fast``) from its parts, each of which must be a non-empty name."""
    bad = [p for p in parts if not isinstance(p, str) or not p or SEP in p]
    if bad:
        raise ConfigError(f"{bad[0]!r} cannot name a stage slot: a non-empty name without {SEP!r}")
    return SEP.join(parts)


def stage_slots(stages: dict, where: str = "manifest") -> dict[str, str]:
    """``stages`` as one flat ``{slot: folder}`` map, whichever format wrote it: nested dicts become
    ``probe/p_fast``-style slots, the task runs' old name (``tasks32``) becomes ``manipulation``, and
    empty entries (no probes, no eval) are left out. ReportError for a folder that is not a string."""
    if not isinstance(stages, dict):
        raise ReportError(f"{where}: stages must be a JSON object, got {type(stages).__name__}")
    flat: dict[str, str] = {}

    def walk(prefix: list[str], value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk([*prefix, str(key)], inner)
        elif isinstance(value, str) and value:
            flat[SEP.join(prefix)] = value
        elif value:  # None, "" and {} name no stage
            raise ReportError(f"{where}: stages.{'.'.join(prefix)} must be a folder name, got {value!r}")

    for key, value in stages.items():
        walk([TASK_RUNS[0] if key in TASK_RUNS else str(key)], value)
    return flat  # in the order filed: the report lists task runs as the plan listed them


@dataclass(frozen=True)
class RunManifest:
    """One run: what it is and the stage folder of each slot. ``overrides`` is None in a manifest
    filed before they were recorded; ``tasks`` maps a manipulation task run's label to its settings
    (task, mode, qa_ratio, n_train, hint_prob, ...)."""

    experiment: str
    run: str
    data: str
    stages: dict[str, str]
    scale: str | None = None
    model: str | None = None
    train: str | None = None
    finetune: str | None = None
    finetune_method: str | None = None
    grid: str | None = None
    qa_ratio: float = 0.0
    overrides: list[str] | None = None
    paper: dict = field(default_factory=dict)
    probe_kinds: dict[str, str | None] = field(default_factory=dict)
    tasks: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "stages", stage_slots(self.stages, f"run {self.run}"))

    def folder(self, name: str) -> str | None:
        """The folder of slot ``name`` (``pretrain``, ``probe/p_fast``), None when the run has none."""
        return self.stages.get(name)

    def probes(self) -> dict[str, str]:
        """probe preset (p_fast, q_fast, ...) -> stage folder."""
        return self._group(PROBE_SLOT)

    def task_runs(self) -> dict[str, dict]:
        """Manipulation task run label -> its settings and ``stages`` (tasks, train, eval folders)."""
        parts: dict[str, dict] = {}
        for rest, rel in self._group(TASK_RUNS[0]).items():
            label, _, part = rest.rpartition(SEP)
            parts.setdefault(label, {})[part] = rel
        return {label: {**(self.tasks.get(label) or {}), "stages": st} for label, st in parts.items()}

    def _group(self, prefix: str) -> dict[str, str]:
        head = prefix + SEP
        return {k[len(head) :]: v for k, v in self.stages.items() if k.startswith(head)}

    def to_dict(self) -> dict:
        """The manifest as it is filed (``tasks`` under its file name, ``manipulation``, when any)."""
        d = {"format": FORMAT, **dataclasses.asdict(self)}
        tasks = d.pop("tasks")
        return {**d, **({TASK_RUNS[0]: tasks} if tasks else {})}

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest") -> RunManifest:
        """A filed manifest of any format; ReportError naming ``where`` for one that is not a manifest."""
        missing = [k for k in ("experiment", "run", "data", "stages") if k not in d]
        if missing or not isinstance(d.get("stages"), dict):
            raise ReportError(f"{where}: manifest lacks {', '.join(missing) or 'a stages object'}")
        names = {f.name for f in dataclasses.fields(cls)} - {"stages", "tasks"}
        tasks = next((d[k] for k in TASK_RUNS if isinstance(d.get(k), dict)), {})
        kept = {k: v for k, v in d.items() if k in names and v is not None}
        return cls(**kept, stages=stage_slots(d["stages"], where), tasks=tasks)


def write_manifest(root: str | Path, manifest: RunManifest) -> Path:
    """File one run's manifest under ``ROOT/runs/<experiment>/<run>.json``; returns its path."""
    path = Path(root) / MANIFESTS / manifest.experiment / f"{manifest.run}.json"
    write_json(path, manifest.to_dict())
    return path


class StageMissing(ReportError):
    """A stage a number comes from is absent, unfinished or lost its files."""


@dataclass(frozen=True, eq=False)  # hashed by identity: notebooks key dicts by run
class Run:
    """A filed run: its root, the manifest's path and the manifest."""

    root: Path
    path: Path  # the manifest
    manifest: RunManifest

    @property
    def name(self) -> str:
        return self.manifest.run

    @property
    def experiment(self) -> str:
        return self.manifest.experiment

    @property
    def data(self) -> str:
        return self.manifest.data

    def get(self, key: str, default=None):
        """Optional manifest fields: scale, model, finetune, train, qa_ratio, overrides."""
        value = getattr(self.manifest, key, None)
        return default if value is None else value

    def stage(self, name: str) -> str | None:
        """The folder of slot ``name`` (``pretrain``, ``eval``, ``memorization``), relative to the root."""
        return self.manifest.folder(name)

    @property
    def has_qa(self) -> bool:
        """False for a probe-only experiment (qa_eval none): no QA numbers are expected."""
        return bool(self.stage("eval"))

    @property
    def paper(self) -> dict:
        return self.manifest.paper or {}

    def probes(self) -> dict[str, str]:
        """probe preset (p_fast, q_fast, ...) -> stage folder, relative to the root."""
        return self.manifest.probes()

    def task_runs(self) -> dict[str, dict]:
        """Manipulation task run label -> its settings (task, mode, qa_ratio, n_train, hint_prob, ...)
        and ``stages`` (tasks, train, eval folders). Manifests filed before the rename say
        ``tasks32`` where they now say ``manipulation``."""
        return self.manifest.task_runs()


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
        manifest = RunManifest.from_dict(_json_object(path, "manifest", ReportError), str(path))
        if manifest.experiment != path.parent.name:
            raise ReportError(f"{path}: experiment {manifest.experiment!r} filed under {path.parent.name}/")
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
    overrides = run.manifest.overrides
    if not isinstance(overrides, list):
        return id(run)
    named = [o for o in overrides if not is_volatile(str(o).split("=", 1)[0].lstrip("+~"))]
    return run.experiment, json.dumps(run.manifest.stages, sort_keys=True), tuple(map(str, named))


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
    for key in UPSTREAM:
        if run.stage(key):
            check_stage(run, run.stage(key), key)


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
    folder = check_stage(run, run.stage(key), key)
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
