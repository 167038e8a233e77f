"""The probe stage: P-probes at each token position and layer, or Q-probes on the name, trained on
the pretrained model's hidden states (``probes.csv`` and its heatmaps), read back by ``probe_rows``."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from biolab.probe.probes import COLUMNS, PROBE_KINDS, ProbeConfig, run_probe
from biolab.stages.kind import Kind
from biolab.stages.manifest import (
    PROBE_SLOT,
    Run,
    StageMissing,
    check_stage,
    check_upstream,
    need_file,
    stage_dir,
)
from biolab.stages.rows import Reader, Readout, flag, paper_lookup, pct, row, stats

# what a probes.csv must hold to be reported: the writer's columns but those older files may lack
PROBE_COLUMNS = tuple(c for c in COLUMNS if c not in ("train_acc", "n_train", "n"))


def build_probe(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    model = Path(inputs["pretrain"]) / "model"
    run_probe(model, inputs["data"], ProbeConfig.from_dict(cfg["probe"]), out, overwrite=True)


def check_probe(cfg: dict) -> None:
    ProbeConfig.from_dict(cfg["probe"])


def probe_rows(run: Run, probe: str) -> list[dict]:
    """The rows of one probe stage's ``probes.csv`` (strings, as written)."""
    check_upstream(run)
    folder = check_stage(run, run.probes().get(probe), f"probe {probe}")
    path = need_file(run, folder, "probes.csv", f"probe {probe}")
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


def probe_family(run: Run, probe: str, rows: list[dict] | None = None) -> str | None:
    """``p`` or ``q`` for the run's probe preset ``probe`` (any name: the family comes from its kind):
    its probes.csv ``rows`` say the kind, else the manifest's ``probe_kinds``, else (a manifest filed
    before it recorded them, a stage not done) the stage's config.yaml; None when nothing says."""
    kind = rows[0].get("probe") if rows else (run.get("probe_kinds") or {}).get(probe)
    rel = run.probes().get(probe)
    if kind not in PROBE_KINDS and rel:
        try:
            doc = yaml.safe_load((stage_dir(run, rel) / "config.yaml").read_text(encoding="utf-8"))
            kind = doc["config"]["probe"]["kind"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            return None
    return PROBE_KINDS.get(kind)


def query_position(rows: list[dict]) -> str:
    """Where a Q-probe's number is read: the end token after the name when the probe has it (the
    paper's reading), else the name's last token (``probe.end_token=none``)."""
    return "end" if any(r["position"] == "end" for r in rows) else "name_last"


def probe_images(run: Run, probe: str) -> list[Path]:
    """The heatmaps a done probe stage left beside its probes.csv."""
    folder = check_stage(run, run.probes().get(probe), f"probe {probe}")
    return sorted(folder.glob("*.png"))


PROBE = Kind("probe", ("probes.csv",), build_probe, check_probe, resumable=True, runs_model=True)


# (position kind, task) -> metric (ours and the paper's) and the manifest's "paper" key naming the figure
PROBE_METRICS = {
    ("special", "first"): ("pprobe_first_token_acc", "pprobe_first"),
    ("special", "whole"): ("pprobe_whole_attribute_acc", "pprobe_whole"),
    ("query", "first"): ("qprobe_first_token_acc", "qprobe"),
    ("query", "whole"): ("qprobe_whole_attribute_acc", "qprobe"),
}


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
            pv = paper_lookup(run, source, run.data, metric, r["attribute"], position)
            out.append(row(run, **common, metric=metric, value=acc, paper_value=pv,
                            paper_source=source if pv is not None else "", **stats(acc, n)))  # fmt: skip
            majority = metric.replace("_acc", "_majority")
            pv = paper_lookup(run, source, "majority_baseline", metric, r["attribute"], position)
            out.append(row(run, **common, metric=majority, value=majority_acc, paper_value=pv,
                            paper_source=source if pv is not None else "",
                            **stats(majority_acc, n)))  # fmt: skip
        else:
            out.append(row(run, **common, metric=f"{metric}_{r['control']}", value=acc, **stats(acc, n)))
    return out


def read_probes(run: Run, strict: bool, notes: list) -> Readout:
    """Every probe preset's rows; a preset whose stage is missing is one flagged row."""
    out = Readout()
    for probe in run.probes():
        try:
            found = probe_rows(run, probe)
        except StageMissing as err:
            flag(str(err), strict, notes)
            out.rows.append(row(run, split="test", probe=probe, metric="probe", note=str(err)))
            continue
        out.probes[probe] = found
        out.rows += probe_result_rows(run, probe, found)
    return out


PROBE_READER = Reader(PROBE_SLOT, read_probes)
