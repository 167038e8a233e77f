"""The memorization stage (Part 3.2's baseline): bio completion per attribute and verbatim recall of
the training bios by the pretrained model, in ``memorization.json``."""

from __future__ import annotations

from pathlib import Path

from biolab.eval.memorization import MemorizationConfig, bio_completion, verbatim
from biolab.io import write_json
from biolab.model import load_model
from biolab.stages.kind import Kind
from biolab.stages.manifest import Run, StageMissing, stage_json


def build_memorization(cfg: dict, inputs: dict, out: Path, progress: bool, context: dict) -> None:
    model, tokenizer = load_model(Path(inputs["pretrain"]) / "model")
    m = MemorizationConfig.from_dict(cfg["memorization"])
    common = dict(max_people=m.max_people, entries=m.entries, batch_size=m.batch_size, progress=progress)
    result = {
        "config": cfg["memorization"],
        "bio_completion": bio_completion(model, tokenizer, inputs["data"], **common),
        "verbatim": verbatim(model, tokenizer, inputs["data"], k=m.k, length=m.length, **common),
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / "memorization.json", result)


def check_memorization(cfg: dict) -> None:
    MemorizationConfig.from_dict(cfg["memorization"])


def memorization_metrics(run: Run) -> dict:
    """The memorization stage's ``memorization.json`` (bio_completion, verbatim)."""
    path, data = stage_json(run, "memorization", "memorization.json")
    for key in ("bio_completion", "verbatim"):
        if not isinstance((data.get(key) or {}).get("splits"), dict):
            raise StageMissing(f"{run.name}: {path} has no {key} splits")
    return data


MEMORIZATION = Kind("memorization", ("memorization.json",), build_memorization, check_memorization,
                    runs_model=True)  # fmt: skip
