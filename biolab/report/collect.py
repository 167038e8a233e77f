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

from biolab.data.people import ATTRIBUTES
from biolab.errors import ConfigError, ReportError
from biolab.paper import check_statements, paper_statements, paper_value
from biolab.report.capacity import capacity_records, capacity_rows
from biolab.report.rows import (
    FORMAT_ERRORS,
    QA_ATTRIBUTES,
    Report,
    blank_row,
    count,
    flag,
    pct,
    row,
    stats,
    unreadable,
)
from biolab.stages.manifest import Run, StageMissing, check_stage, load_runs, stage_dir
from biolab.stages.memorization import memorization_metrics
from biolab.stages.probe import probe_family, probe_rows, query_position
from biolab.stages.qa import eval_metrics
from biolab.stages.tasks import task_metrics

QA_KEYS = {"exact_match": "qa_exact_match", "first_token": "qa_first_token", "majority": "qa_majority"}
# our exact match / majority on P_test is the paper's qa_test_acc (its baseline row for the majority)
QA_PAPER = {"qa_exact_match": "qa_test_acc", "qa_majority": "qa_test_acc"}
# (position kind, task) -> metric (ours and the paper's) and the manifest's "paper" key naming the figure
PROBE_METRICS = {
    ("special", "first"): ("pprobe_first_token_acc", "pprobe_first"),
    ("special", "whole"): ("pprobe_whole_attribute_acc", "pprobe_whole"),
    ("query", "first"): ("qprobe_first_token_acc", "qprobe"),
    ("query", "whole"): ("qprobe_whole_attribute_acc", "qprobe"),
}
TASK_METRICS = {"answer": "task_answer", "answer_with_hint": "task_answer_with_hint", "hint": "task_hint",
                "majority": "task_majority"}  # fmt: skip
VERBATIM_METRICS = {"exact": "verbatim_exact", "prefix_frac": "verbatim_prefix_frac"}
PROPORTIONS = ("verbatim_exact",)  # of the verbatim metrics: prefix_frac is a mean of fractions, not a rate
# a share of the task set itself (how many inverse queries match several people), not an accuracy
DESCRIPTIVE = ("task_shared_queries",)


def _lookup(run: Run, source: str | None, data: str, metric: str, attribute: str, position=None,
            method: str | None = None) -> float | None:  # fmt: skip
    if not source:
        return None
    try:
        return paper_value(source, data, metric, attribute, position, method)
    except ConfigError as err:  # a mis-wired manifest is an error, not "the paper has no number"
        raise ReportError(f"{run.path}: {err}") from None


def qa_rows(run: Run, strict: bool = False, notes: list | None = None) -> list[dict]:
    """QA exact match, first-token accuracy and majority per split and attribute (percent).

    P_test exact match is what the paper reports; when it cannot be read its rows stay, flagged."""
    source, method = run.paper.get("qa"), run.paper.get("qa_method")

    def qa_row(split, metric, attribute, value=None, note="", n=None):
        pv = None
        if split == "test" and metric in QA_PAPER:
            data = "majority_baseline" if metric == "qa_majority" else run.data
            pv = _lookup(
                run, source, data, QA_PAPER[metric], attribute, None, method if data == run.data else None
            )
        return row(run, split=split, attribute=attribute, metric=metric, value=value, paper_value=pv,
                    paper_source=source if pv is not None else "", note=note, **stats(value, n))  # fmt: skip

    def missing(note):
        flag(note, strict, notes)
        return [qa_row("test", "qa_exact_match", a, note=note) for a in QA_ATTRIBUTES]

    try:
        splits = eval_metrics(run)["splits"]
    except StageMissing as err:
        return missing(str(err))
    if not isinstance(splits.get("test"), dict):
        return missing(f"{run.name}: the eval's metrics.json has no test split")
    rows = []
    for split in ("train", "test"):  # P_train is optional (an eval of P_test only)
        counts = qa_counts((splits.get(split) or {}).get("questions"))
        for key, metric in QA_KEYS.items():
            block = (splits.get(split) or {}).get(key)
            if split != "test" and not isinstance(block, dict):
                continue
            for a in QA_ATTRIBUTES:
                value = pct(block.get(a)) if isinstance(block, dict) else None
                note = (
                    ""
                    if value is not None
                    else f"{run.name}: the eval's metrics.json has no {split} {key} {a}"
                )
                if note:
                    flag(note, strict, notes)
                rows.append(qa_row(split, metric, a, value, note, counts.get(a)))
    return rows


def qa_counts(questions) -> dict[str, int]:
    """Attribute -> questions it is over: each person has one question per attribute, so people per
    attribute, and every question for the mean (an uneven total has no per-attribute count)."""
    if not isinstance(questions, int) or questions <= 0:
        return {}
    per = questions // len(ATTRIBUTES) if questions % len(ATTRIBUTES) == 0 else None
    return {**dict.fromkeys(ATTRIBUTES, per), "mean": questions}


def _last_layer(rows: list[dict]) -> dict[str, int]:
    last: dict[str, int] = {}
    for r in rows:
        if r["control"] == "none":
            last[r["position_kind"]] = max(last.get(r["position_kind"], -1), int(r["layer"]))
    return last


def probe_result_rows(run: Run, probe: str, rows: list[dict]) -> list[dict]:
    """Last-layer test accuracy at the six special positions (P) or the query's end token (Q), with
    the controls and the majority class; token positions stay in the heatmaps."""
    last = _last_layer(rows)
    query_pos = query_position(rows)
    out = []
    for r in rows:
        kind = r["position_kind"]
        if kind not in ("special", "query") or int(r["layer"]) != last.get(kind):
            continue
        if kind == "query" and r["position"] != query_pos:
            continue
        metric, paper_key = PROBE_METRICS[(kind, r["task"])]
        # the paper reads its Q-probe at the end token only; a name_last state is not its number
        source = run.paper.get(paper_key) if (kind == "special" or query_pos == "end") else None
        position = int(r["position"][1:]) if kind == "special" else None
        common = dict(split="test", probe=probe, attribute=r["attribute"], position=r["position"])
        acc, majority_acc = pct(r["test_acc"]), pct(r["majority"])
        n = r.get("n")  # P_test people (older probes.csv files may lack it: no interval then)
        if r["control"] == "none":
            pv = _lookup(run, source, run.data, metric, r["attribute"], position)
            out.append(row(run, **common, metric=metric, value=acc, paper_value=pv,
                            paper_source=source if pv is not None else "", **stats(acc, n)))  # fmt: skip
            majority = metric.replace("_acc", "_majority")
            pv = _lookup(run, source, "majority_baseline", metric, r["attribute"], position)
            out.append(row(run, **common, metric=majority, value=majority_acc, paper_value=pv,
                            paper_source=source if pv is not None else "",
                            **stats(majority_acc, n)))  # fmt: skip
        else:
            out.append(row(run, **common, metric=f"{metric}_{r['control']}", value=acc, **stats(acc, n)))
    return out


def collect(root: str | Path, experiments: str | list[str] | None = None, strict: bool = False) -> Report:
    """Every run's rows; StageMissing only escapes with ``strict``."""
    runs = load_runs(root, experiments)
    report = Report(Path(root), runs, [])
    for run in runs:
        report.settings[run.path] = run_setting(run)
        report.provenance[run.path] = [
            {"stage": role, "folder": rel, **stage_provenance(run, rel)} for role, rel in stage_folders(run)
        ]
        try:
            rows, probe_data, capacity = run_numbers(run, strict, report.notes)
        except FORMAT_ERRORS as err:  # a stage file of odd shape: this run's numbers only are missing
            flag(f"{run.path}: its numbers could not be read: {unreadable(err)}", strict, report.notes)
            continue
        report.rows += rows
        report.probe_data.update(probe_data)
        for probe in run.probes():
            found = probe_data.get((run.path, probe))
            report.probe_families[(run.path, probe)] = probe_family(run, probe, found)
        report.capacity += capacity
    report.rows += knowledge_rows(runs, strict, report.notes)  # memorization, tasks, the paper's statements
    return report


def run_numbers(run: Run, strict: bool, notes: list) -> tuple[list[dict], dict, list[dict]]:
    """One run's rows, its probes.csv rows per (run path, probe) and its capacity records."""
    rows: list[dict] = qa_rows(run, strict, notes) if run.has_qa else []
    probe_data = {}
    for probe in run.probes():
        try:
            found = probe_rows(run, probe)
        except StageMissing as err:
            flag(str(err), strict, notes)
            rows.append(row(run, split="test", probe=probe, metric="probe", note=str(err)))
            continue
        probe_data[(run.path, probe)] = found
        rows += probe_result_rows(run, probe, found)
    capacity = capacity_records(run, strict, notes) if run.manifest["stages"].get("capacity") else []
    return rows + capacity_rows(run, capacity), probe_data, capacity


def _statements(run: Run) -> list[str]:
    try:
        return check_statements(run.paper.get("statements"))
    except ConfigError as err:  # a typo in a manifest is an error, not "the paper says nothing"
        raise ReportError(f"{run.path}: {err}") from None


def memorization_rows(run: Run, strict: bool, notes: list) -> list[dict]:
    """BIO completion per attribute and split, verbatim exact / prefix per split."""
    try:
        data = memorization_metrics(run)
    except StageMissing as err:
        flag(str(err), strict, notes)
        return [row(run, split="test", metric="bio_completion", attribute="mean", note=str(err))]
    rows = []
    bios = data["bio_completion"].get("bios") or {}
    for split, block in data["bio_completion"]["splits"].items():
        scored = [a for a in block if a != "mean"]
        for a in (*ATTRIBUTES, "name", "mean"):
            if a in block:
                value = pct(block[a])
                n = count(bios.get(split))
                if a == "mean" and n:
                    n *= len(scored)  # the mean is over every (bio, attribute) completion
                rows.append(row(run, split=split, metric="bio_completion", attribute=a, value=value,
                                **stats(value, n)))  # fmt: skip
    for split, block in data["verbatim"]["splits"].items():
        entries = block.get("entries")
        for key, metric in VERBATIM_METRICS.items():
            value = pct(block.get(key))
            rows.append(row(run, split=split, metric=metric, value=value,
                            **stats(value, entries, metric in PROPORTIONS)))  # fmt: skip
        rows.append(row(run, split=split, metric="verbatim_prefix_tokens", value=block.get("prefix_mean"),
                        **stats(None, entries)))  # fmt: skip
    return rows


def _paper_for(run: Run, task: str, metric: str) -> tuple[float | None, str]:
    known = paper_statements()
    hits = [known[k] for k in _statements(run) if known[k]["task"] == task and known[k]["metric"] == metric]
    hits = [h for h in hits if h["value"] is not None]
    if len(hits) > 1:
        keys = ", ".join(h["key"] for h in hits)
        raise ReportError(f"{run.path}: paper.statements gives several numbers for {task} {metric}: {keys}")
    return (hits[0]["value"], hits[0]["source"]) if hits else (None, "")


def task_rows(run: Run, label: str, info: dict, strict: bool, notes: list) -> list[dict]:
    """Exact match per split without and with the hint at test time, the hint itself, the majority
    answer, the share of inverse queries matching several people, and the item counts."""
    task = info.get("task", label.split("__")[0])
    how = info.get("finetune") if info.get("mode") != "mixed" else f"mixed QAr={info.get('qa_ratio'):g}"

    def task_row(split, metric, value=None, note="", raw=False, n=None):
        pv, source = _paper_for(run, task, metric) if split == "test" else (None, "")
        value = value if raw else pct(value)
        return row(run, finetune=how, split=split, attribute=task, task=label, metric=metric, value=value,
                    paper_value=pv, paper_source=source, note=note,
                    **stats(value, n, not raw and metric not in DESCRIPTIVE))  # fmt: skip

    try:
        metrics = task_metrics(run, label)
    except StageMissing as err:
        flag(str(err), strict, notes)
        return [task_row("test", "task_answer", note=str(err))]
    rows = []
    for split, block in metrics["splits"].items():
        for key, metric in TASK_METRICS.items():
            if key in block:
                rows.append(task_row(split, metric, block[key], n=block.get("items")))
        if split in (metrics.get("ambiguity") or {}):
            shared = metrics["ambiguity"][split]
            rows.append(
                task_row(split, "task_shared_queries", shared["shared_frac"], n=shared.get("queries"))
            )
    for split, n in (metrics.get("counts") or {}).items():
        if split in ("train", "test"):
            rows.append(task_row(split, "task_items", n, raw=True))
    return rows


def statement_rows(runs: list[Run]) -> list[dict]:
    """One ``paper_statement`` row per statement an experiment's manifests list, in their order."""
    known = paper_statements()
    keys: dict[str, dict[str, None]] = {}
    scales: dict[str, set] = {}
    for run in runs:
        keys.setdefault(run.experiment, {}).update(dict.fromkeys(_statements(run)))
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


def knowledge_rows(runs: list[Run], strict: bool, notes: list) -> list[dict]:
    """Every memorization, task and statement row of ``runs`` (none for a run without such stages)."""
    rows = []
    for run in runs:
        if run.manifest["stages"].get("memorization"):
            rows += memorization_rows(run, strict, notes)
        for label, info in run.task_runs().items():
            rows += task_rows(run, label, info, strict, notes)
    return rows + statement_rows(runs)


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
    rel = run.manifest["stages"].get("data")
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
    rel = run.manifest["stages"].get("pretrain")
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


def stage_folders(run: Run) -> list[tuple[str, str]]:
    """(role, folder relative to the root) of every stage the run names, upstream first."""
    stages = run.manifest["stages"]
    out = [(k, stages[k]) for k in ("data", "corpus", "pretrain", "eval") if isinstance(stages.get(k), str)]
    out += [(f"probe {p}", rel) for p, rel in run.probes().items() if isinstance(rel, str)]
    for kind in ("memorization", "capacity"):
        if isinstance(stages.get(kind), str):
            out.append((kind, stages[kind]))
    for label, info in run.task_runs().items():
        out += [(f"{label} {part}", rel) for part, rel in info["stages"].items() if isinstance(rel, str)]
    return out


def stage_provenance(run: Run, rel: str) -> dict:
    """status, git commit, device and seconds as the stage's status.json says, done or not."""
    folder = stage_dir(run, rel)
    try:
        status = as_dict(json.loads((folder / "status.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        status = {"status": "no status.json" if folder.is_dir() else "missing"}
    return {k: status.get(k) for k in ("status", "git_commit", "device", "seconds")}
