"""A human-readable summary of a written dataset folder."""

from __future__ import annotations

import json
from pathlib import Path

from biolab.data.qa import format_qa


def _first_line(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.loads(f.readline())


def summarize(directory: str | Path, meta: dict, seconds: float | None = None) -> str:
    directory = Path(directory)
    c, cfg = meta["counts"], meta["config"]
    chars, words = meta["bio_length"]["chars"], meta["bio_length"]["words"]
    bits = meta["bits_per_person"]
    bio = _first_line(directory / "bios.jsonl")
    qa = _first_line(directory / "qa.jsonl")
    took = f" in {seconds:.1f}s" if seconds is not None else ""
    per = f"{c['entries_per_person']} per person"
    if c.get("groups"):  # celebrities and minority: each group its own format
        per = ", ".join(f"{g['entries_per_person']} per {name}" for name, g in c["groups"].items())
    return "\n".join([
        f"dataset {cfg['name']} (style {cfg['style']}, seed {cfg['seed']}) -> {directory}{took}",
        f"  people   {c['people']} ({c['train']} train / {c['test']} test)",
        f"  bios     {c['bios']} ({per})",
        f"  qa       {c['qa']}",
        f"  length   {words['mean']} words (min {words['min']}, max {words['max']}),"
        f" {chars['mean']} chars per bio",
        f"  bits     {bits['total']} per person ({bits['attributes']} attributes + "
        f"{bits['name']} name)",
        f"  example  {bio['text']}",
        f"  qa       {format_qa(qa['question'], qa['answer'])}",
    ])  # fmt: skip
