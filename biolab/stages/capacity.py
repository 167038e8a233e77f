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
from biolab.stages.manifest import Run, StageMissing, stage_json
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
    pretrained = done_stage_json(run, "pretrain", "config.json")
    # capacity.json before it recorded the model keys: the pretraining's
    arch = (data.get("model") or pretrained.get("model") or {}).get("arch")
    setting = run_setting_text(done_stage_json(run, "corpus", "meta.json"), pretrained)
    out = []
    for r in data["rows"]:
        rec = {k: r.get(k) for k in CAPACITY_COLUMNS}
        rec.update(experiment=run.experiment, run=run.name, data=run.data, model=run.get("model"), arch=arch,
                   exposures=data.get("exposures"), exposures_asked=trained.get("asked"),
                   setting=setting)  # fmt: skip
        out.append(rec)
    return out


def done_stage_json(run: Run, key: str, name: str) -> dict:
    """File ``name`` of the run's done ``key`` stage, {} when it cannot be read (the record then lacks
    what it would have said)."""
    try:
        return stage_json(run, key, name)[1]
    except StageMissing:
        return {}


def run_setting_text(corpus: dict, pretrained: dict) -> str:
    """What the pretraining mixed in beside the useful bios, from its corpus's meta.json and its
    config.json: junk bios (Part 3.3 Results 10-11) and a domain token (Result 12); "" for neither."""
    parts = []
    if corpus.get("junk"):
        share = (pretrained.get("train") or {}).get("junk_fraction")
        parts.append(f"junk {share:g} of windows, {corpus['junk'].get('bios', 0):,} junk people")
    if corpus.get("domain_token_id") is not None:
        parts.append("domain token")
    return ", ".join(parts)


def capacity_rows(run: Run, records: list[dict]) -> list[dict]:
    """The long rows of ``results.csv``: capacity_bits / capacity_R / capacity_R_max per precision."""
    return [row(run, split="train", attribute=r["quant"], metric=f"capacity_{m}", value=r[m], n=r["N"])
            for r in records for m in CAPACITY_METRICS]  # fmt: skip


def read_capacity(run: Run, strict: bool, notes: list) -> Readout:
    records = capacity_records(run, strict, notes)
    return Readout(rows=capacity_rows(run, records), capacity=records)


CAPACITY_READER = Reader("capacity", read_capacity)
