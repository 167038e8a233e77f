"""The memorization stage (Part 3.2's baseline): bio completion per attribute and verbatim recall of
the training bios by the pretrained model, in ``memorization.json``."""

from __future__ import annotations

from pathlib import Path

from biolab.data.people import ATTRIBUTES
from biolab.eval.memorization import MemorizationConfig, bio_completion, verbatim
from biolab.io import write_json
from biolab.model import load_model
from biolab.stages.kind import Kind
from biolab.stages.manifest import Run, StageMissing, stage_json
from biolab.stages.rows import Reader, Readout, count, flag, pct, row, stats


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


VERBATIM_METRICS = {"exact": "verbatim_exact", "prefix_frac": "verbatim_prefix_frac"}
PROPORTIONS = ("verbatim_exact",)  # of the verbatim metrics: prefix_frac is a mean of fractions, not a rate


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


def read_memorization(run: Run, strict: bool, notes: list) -> Readout:
    return Readout(rows=memorization_rows(run, strict, notes))


MEMORIZATION_READER = Reader("memorization", read_memorization, after_runs=True)
