"""Collect a root's finished numbers as report rows, from the stage folders only.

``collect`` turns the manifests under ``ROOT/runs/`` into long rows: QA exact match, probe accuracies
with their controls, memorization, manipulation tasks and the paper's statements; beside them each
run's setting (people, model, steps, overrides) and each stage's provenance. A number whose
stage is absent, unfinished or lost its files is kept as a row with an empty value and a note (or,
with ``strict``, stops the report): never a number from the wrong place.

Counts are the metrics named ``*_tokens`` / ``*_items``; everything else is a percent, with the count
it is over (``n``: people per attribute for QA and probes, questions for a QA mean, items, bios) and
its Wilson interval. A task row's ``attribute`` is the task (``month_parity``), its ``task`` the run
label (``month_parity-hint_prob0.5__ft``), its ``finetune`` how it was trained (the finetune preset,
or ``mixed QAr=0.8``). The paper's statements (``biolab/data/paper_statements.tsv``) listed in a
manifest's ``paper.statements`` become one ``paper_statement`` row each per experiment, and a
statement with a number fills ``paper_value`` of the P_test row it names.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from biolab.paper import paper_statements
from biolab.report.rows import FORMAT_ERRORS, Report, unreadable
from biolab.stages import READERS
from biolab.stages.manifest import SEP, Run, StageMissing, check_stage, load_runs, stage_dir
from biolab.stages.probe import probe_family
from biolab.stages.rows import blank_row, count, flag, run_statements


def collect(root: str | Path, experiments: str | list[str] | None = None, strict: bool = False) -> Report:
    """Every run's rows, as each stage kind's reader (biolab.stages.READERS) makes them from the
    run's finished folders; StageMissing only escapes with ``strict``."""
    runs = load_runs(root, experiments)
    report = Report(Path(root), runs, [])
    late: list[dict] = []  # the readers' rows that follow every run's own (Reader.after_runs)
    for run in runs:
        report.settings[run.path] = run_setting(run)
        report.provenance[run.path] = [
            {"stage": role, "folder": rel, **stage_provenance(run, rel)} for role, rel in stage_folders(run)
        ]
        for reader in (r for r in READERS if r.reads(run)):
            try:
                out = reader.read(run, strict, report.notes)
            except FORMAT_ERRORS as err:  # a stage file of odd shape: these numbers only are missing
                why = f"{run.path}: its {reader.slot} numbers could not be read: {unreadable(err)}"
                flag(why, strict, report.notes)
                continue
            (late if reader.after_runs else report.rows).extend(out.rows)
            report.probe_data.update({(run.path, p): rows for p, rows in out.probes.items()})
            report.capacity += out.capacity
        for probe in run.probes():
            found = report.probe_data.get((run.path, probe))
            report.probe_families[(run.path, probe)] = probe_family(run, probe, found)
    report.rows += late + statement_rows(runs)
    return report


def statement_rows(runs: list[Run]) -> list[dict]:
    """One ``paper_statement`` row per statement an experiment's manifests list, in their order."""
    known = paper_statements()
    keys: dict[str, dict[str, None]] = {}
    scales: dict[str, set] = {}
    for run in runs:
        keys.setdefault(run.experiment, {}).update(dict.fromkeys(run_statements(run)))
        scales.setdefault(run.experiment, set()).add(str(run.get("scale")))
    rows = []
    for exp, listed in keys.items():
        for key in listed:
            s = known[key]
            rows.append(blank_row(
                experiment=exp, scale=",".join(sorted(scales[exp])), model="", finetune="",
                split="test" if s["value"] is not None else "", attribute=key, task=s["task"],
                metric="paper_statement", paper_value=s["value"], paper_source=s["source"],
                note=s["statement"],
            ))  # fmt: skip
    return rows


def as_dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def stage_file(run: Run, rel: str | None, what: str, name: str) -> dict:
    """A done stage's JSON or YAML file ``name`` as a dict; {} when the stage is not done or the file
    is absent (a root stripped to its numbers still reports, with ``?`` for what it lacks)."""
    try:
        text = (check_stage(run, rel, what) / name).read_text(encoding="utf-8")
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except (StageMissing, OSError, ValueError, yaml.YAMLError):
        return {}
    return as_dict(data)


def stage_config(run: Run, rel: str | None, what: str) -> dict:
    """The config a done stage was built with: config.yaml's ``config`` (the file itself when flat)."""
    doc = stage_file(run, rel, what, "config.yaml")
    return as_dict(doc.get("config", doc))


def people_counts(run: Run) -> tuple[int | None, int | None]:
    """People in the run's dataset (meta.json's count of what was written, else the config's
    n_people) and, for a celebrity dataset, how many of them are celebrities (else None)."""
    rel = run.stage("data")
    meta = stage_file(run, rel, "data", "meta.json")
    counts = as_dict(meta.get("counts"))
    celebrities = count(as_dict(as_dict(counts.get("groups")).get("celebrity")).get("people"))
    for n in (counts.get("people"), as_dict(meta.get("config")).get("n_people"),
              stage_config(run, rel, "data").get("n_people")):  # fmt: skip
        if count(n):
            return count(n), celebrities
    return None, celebrities


def run_setting(run: Run) -> dict:
    """What a reader needs to size a run against the paper: scale, people, model, pretraining steps
    and the command line's overrides (None for a manifest filed before they were recorded)."""
    rel = run.stage("pretrain")
    cfg = stage_config(run, rel, "pretrain")
    status = stage_file(run, rel, "pretrain", "status.json")
    overrides = run.get("overrides")
    people, celebrities = people_counts(run)
    return {
        "scale": run.get("scale"), "model": run.get("model") or as_dict(cfg.get("model")).get("name"),
        "train": run.get("train"), "people": people, "celebrities": celebrities,
        # status first: a run sized by train.exposures finds its steps at the start
        "steps": count(status.get("steps")) or count(as_dict(cfg.get("train")).get("steps")),
        "params": count(status.get("params_no_embeddings")),
        "overrides": None if overrides is None else [str(o) for o in overrides],
    }  # fmt: skip


ROLE_ORDER = (
    "data",
    "junk",
    "corpus",
    "pretrain",
    "eval",
    "probe",
    "memorization",
    "capacity",
    "manipulation",
)


def stage_folders(run: Run) -> list[tuple[str, str]]:
    """(role, folder relative to the root) of every stage the run names, upstream first; the role is
    its slot as words (``probe q_fast``)."""

    def rank(slot: str) -> int:
        head = slot.split(SEP, 1)[0]
        return ROLE_ORDER.index(head) if head in ROLE_ORDER else len(ROLE_ORDER)

    slots = sorted(run.manifest.stages.items(), key=lambda kv: rank(kv[0]))  # stable: in the order filed
    return [(name.replace(SEP, " "), rel) for name, rel in slots]


def stage_provenance(run: Run, rel: str) -> dict:
    """status, git commit, device and seconds as the stage's status.json says, done or not."""
    folder = stage_dir(run, rel)
    try:
        status = as_dict(json.loads((folder / "status.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        status = {"status": "no status.json" if folder.is_dir() else "missing"}
    return {k: status.get(k) for k in ("status", "git_commit", "device", "seconds")}
