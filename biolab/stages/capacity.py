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


def build_capacity(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    model_dir = Path(inputs["pretrain"]) / "model"
    model, tokenizer = load_model(model_dir)
    corpus = Corpus(inputs["corpus"])
    c = CapacityConfig.from_dict(cfg["capacity"])
    rows = measure_with_quantized(model, tokenizer, inputs["data"], corpus.bio_ids, c, progress)
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
