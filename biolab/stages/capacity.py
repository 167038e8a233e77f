"""The capacity stage (Part 3.3): bits of knowledge the pretrained model holds, at its own precision
and quantized, in ``capacity.json``."""

from __future__ import annotations

import json
from pathlib import Path

from biolab.data.tokens import Corpus
from biolab.eval.capacity import CapacityConfig, measure_with_quantized
from biolab.io import write_json
from biolab.model import load_model
from biolab.stages.kind import Kind
from biolab.stages.manifest import Run, StageMissing, check_stage, stage_json
from biolab.stages.rows import Reader, Readout, flag, row

# capacity.csv: everything an outside script needs to recompute R from p1, p2, N and P
CAPACITY_COLUMNS = ("experiment", "run", "data", "style", "model", "arch", "quant", "N", "P", "exposures",
                    "exposures_asked", "p1", "p2", "name_bits", "value_bits", "diversity_bits", "bits", "R",
                    "R_max", "log2_N0", "log2_S0", "K", "C", "D", "L", "T", "setting")  # fmt: skip
# the long rows of results.csv: capacity_<metric>, attribute = precision
CAPACITY_METRICS = ("bits", "R", "R_max")


def build_capacity(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    model_dir = Path(inputs["pretrain"]) / "model"
    model, tokenizer = load_model(model_dir)
    corpus = Corpus(inputs["corpus"])
    c = CapacityConfig.from_dict(cfg["capacity"])
    prefix = () if corpus.domain_token_id is None else (corpus.domain_token_id,)
    rows = measure_with_quantized(model, tokenizer, inputs["data"], corpus.bio_ids, c, progress, prefix)
    trained = json.loads((Path(inputs["pretrain"]) / "config.json").read_text())
    exposures = (trained.get("exposures") or {}).get("exposures")
    Path(out).mkdir(parents=True, exist_ok=True)
    record = {"config": cfg["capacity"], "exposures": exposures, "trained": trained.get("exposures"),
              "model": trained.get("model"), "rows": rows}  # fmt: skip
    write_json(Path(out) / "capacity.json", record)


def check_capacity(cfg: dict) -> None:
    CapacityConfig.from_dict(cfg["capacity"])


def capacity_metrics(run: Run) -> dict:
    """The capacity stage's ``capacity.json`` (the trained exposures and a row per model precision)."""
    path, data = stage_json(run, "capacity", "capacity.json")
    if not isinstance(data.get("rows"), list) or not data["rows"]:
        raise StageMissing(f"{run.name}: {path} has no rows")
    return data


CAPACITY = Kind("capacity", ("capacity.json",), build_capacity, check_capacity, runs_model=True)


def capacity_records(run: Run, strict: bool, notes: list) -> list[dict]:
    """One record per precision of the run's model (COLUMNS); [] with a note when the stage is missing."""
    try:
        data = capacity_metrics(run)
    except StageMissing as err:
        flag(str(err), strict, notes)
        return []
    trained = data.get("trained") or {}
    model = run.get("model")
    arch = (data.get("model") or pretrained_model_keys(run)).get("arch")
    out = []
    for r in data["rows"]:
        rec = {k: r.get(k) for k in CAPACITY_COLUMNS}
        rec.update(experiment=run.experiment, run=run.name, data=run.data, model=model, arch=arch,
                   exposures=data.get("exposures"), exposures_asked=trained.get("asked"),
                   setting=run_setting_text(run))  # fmt: skip
        out.append(rec)
    return out


def run_setting_text(run: Run) -> str:
    """What the pretraining mixed in beside the useful bios, from its corpus and its config: junk bios
    (Part 3.3 Results 10-11) and a domain token (Result 12); "" for neither (or stages not readable)."""
    try:
        corpus = json.loads((check_stage(run, run.stage("corpus"), "corpus") / "meta.json").read_text())
        train = json.loads((check_stage(run, run.stage("pretrain"), "pretrain") / "config.json").read_text())
    except (StageMissing, OSError, ValueError):
        return ""
    parts = []
    if corpus.get("junk"):
        share = (train.get("train") or {}).get("junk_fraction")
        parts.append(f"junk {share:g} of windows, {corpus['junk'].get('bios', 0):,} junk people")
    if corpus.get("domain_token_id") is not None:
        parts.append("domain token")
    return ", ".join(parts)


def pretrained_model_keys(run: Run) -> dict:
    """The model keys of the run's pretraining (capacity.json before it recorded them)."""
    try:
        folder = check_stage(run, run.stage("pretrain"), "pretrain")
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model") or {}
    except (StageMissing, OSError, ValueError):
        return {}


def capacity_rows(run: Run, records: list[dict]) -> list[dict]:
    """The long rows of ``results.csv``: capacity_bits / capacity_R / capacity_R_max per precision."""
    return [row(run, split="train", attribute=r["quant"], metric=f"capacity_{m}", value=r[m], n=r["N"])
            for r in records for m in CAPACITY_METRICS]  # fmt: skip


def read_capacity(run: Run, strict: bool, notes: list) -> Readout:
    records = capacity_records(run, strict, notes)
    return Readout(rows=capacity_rows(run, records), capacity=records)


CAPACITY_READER = Reader("capacity", read_capacity)
