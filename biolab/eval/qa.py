"""QA evaluation: generate an answer for "{question} Answer:" and score exact match per attribute
and split; teacher-forced first-token accuracy; the majority baseline computed from the data.

Exact match compares the whole value (the birth date in full). A value's own final period and the
sentence's period are one character in the training text ("Dow Inc."), so both sides drop one
trailing period before comparing; anything else extra or missing is wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from biolab.config import from_dict
from biolab.data.dataset import BIOD, iter_jsonl, read_meta
from biolab.data.people import ATTRIBUTES, SPLITS
from biolab.data.qa import format_prompt
from biolab.device import on_accelerator
from biolab.errors import ConfigError
from biolab.eval.fill import fill_answers
from biolab.eval.generate import generate_answers, left_pad, max_new_tokens, prompt_ids
from biolab.io import atomic_write_text, write_json
from biolab.model import is_masked_lm


@dataclass(frozen=True)
class EvalConfig:
    """The ``eval`` section: how QA (and task-set) answers are generated."""

    max_people: int | None = None  # per split, the first by id (None: all)
    batch_size: int = 128  # on the CPU
    num_beams: int = 1  # 1: greedy; the paper's beam search is 4
    gpu_batch_size: int = 512  # on CUDA or MPS, where a 128-question batch leaves the GPU idle

    def batch_size_on(self, device) -> int:
        """The batch for a model on ``device``: ``gpu_batch_size`` on a GPU, ``batch_size`` elsewhere."""
        return self.gpu_batch_size if on_accelerator(device) else self.batch_size

    @classmethod
    def from_dict(cls, d: dict) -> EvalConfig:
        return from_dict(cls, d, "eval")

    def validate(self) -> None:
        if self.max_people is not None and self.max_people < 1:
            raise ConfigError(f"eval.max_people must be null or >= 1, got {self.max_people}")
        for key in ("batch_size", "gpu_batch_size", "num_beams"):
            if getattr(self, key) < 1:
                raise ConfigError(f"eval.{key} must be >= 1, got {getattr(self, key)}")


def check_qa_dataset(meta: dict, data_dir: str | Path) -> None:
    """QA finetuning and evaluation ask the six person attributes; a bioD dataset (Part 3.3) has K
    attributes of its own and is for capacity only, as run.py has it: refused before any work."""
    if meta.get("config", {}).get("style") == BIOD:
        raise ConfigError(
            f"data_dir={data_dir} is a bioD dataset: it has none of the six QA attributes; bioD is for "
            "capacity (scripts/capacity.py, or run.py with qa_eval=none probes=[])"
        )


def normalize(answer: str) -> str:
    answer = answer.strip()
    return answer[:-1] if answer.endswith(".") else answer


def is_correct(prediction: str, answer: str) -> bool:
    return normalize(prediction) == normalize(answer)


def qa_items(data_dir: str | Path, splits=SPLITS, max_people: int | None = None) -> list[dict]:
    """QA pairs of the chosen splits, read from the dataset (the split is never recomputed);
    ``max_people`` keeps the first people by id of each split."""
    check_qa_dataset(read_meta(data_dir), data_dir)
    items = [q for q in iter_jsonl(Path(data_dir) / "qa.jsonl") if q["split"] in splits]
    if max_people is not None:
        keep = set()
        for split in splits:
            ids = sorted({q["person_id"] for q in items if q["split"] == split})
            keep.update(ids[:max_people])
        items = [q for q in items if q["person_id"] in keep]
    return items


@torch.no_grad()
def first_token_correct(model, tokenizer, items: list[dict], batch_size: int = 64) -> np.ndarray:
    """Teacher forced: is the answer's first token the argmax after "Answer:"?"""
    device = next(model.parameters()).device
    prompts = prompt_ids(tokenizer, [format_prompt(q["question"]) for q in items])
    firsts = [tokenizer(" " + q["answer"], add_special_tokens=False)["input_ids"][0] for q in items]
    hits = np.zeros(len(items), dtype=bool)
    for s in range(0, len(items), batch_size):
        ids, mask = left_pad(prompts[s : s + batch_size], tokenizer.pad_token_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        hits[s : s + batch_size] = logits.argmax(-1).cpu().numpy() == np.array(firsts[s : s + batch_size])
    return hits


def majority_baseline(data_dir: str | Path, items: list[dict]) -> dict[str, float]:
    """Accuracy of always answering the most common P_train value (paper: 13.7% company city)."""
    people = list(iter_jsonl(Path(data_dir) / "people.jsonl"))
    mode = {
        a: Counter(p[a] for p in people if p["split"] == "train").most_common(1)[0][0] for a in ATTRIBUTES
    }
    acc = {a: float(np.mean([q["answer"] == mode[a] for q in items if q["attribute"] == a]))
           for a in ATTRIBUTES}  # fmt: skip
    acc["mean"] = float(np.mean(list(acc.values())))
    return acc


def metrics_table(metrics: dict) -> str:
    head = f"{'split':<6} {'metric':<12}" + "".join(f"{a[:12]:>13}" for a in [*ATTRIBUTES, "mean"])
    lines = [head]
    for split, m in metrics["splits"].items():
        for key in ("exact_match", "first_token", "majority"):
            row = m[key]
            lines.append(
                f"{split:<6} {key:<12}" + "".join(f"{100 * row[a]:>13.1f}" for a in [*ATTRIBUTES, "mean"])
            )
    return "\n".join(lines)


def evaluate_qa(
    model, tokenizer, data_dir: str | Path, out: str | Path | None = None, splits=SPLITS,
    max_people: int | None = None, batch_size: int = 128, num_beams: int = 1, progress: bool = True,
    show_table: bool = True, extra: dict | None = None,
) -> dict:  # fmt: skip
    """Exact match, first-token accuracy and majority baseline per attribute and split (a masked LM
    fills one mask per answer token, ``biolab.eval.fill``, and is right only if all are); writes
    ``predictions.jsonl`` and ``metrics.json`` into ``out`` and prints a table. ``extra`` fields go
    into metrics.json (e.g. which training the model came from)."""
    items = qa_items(data_dir, splits, max_people)
    if not items:
        raise ConfigError(f"no QA pairs for splits {splits} in {data_dir}")
    prompts = [format_prompt(q["question"]) for q in items]
    if is_masked_lm(model):  # masks filled in one bidirectional pass; no beam search to be had
        if num_beams != 1:
            raise ConfigError("a masked LM fills its answer's masks at once: use eval.num_beams=1")
        answers = [q["answer"] for q in items]
        preds, first = fill_answers(model, tokenizer, prompts, answers, batch_size, progress)
    else:
        new_tokens = max_new_tokens(tokenizer, [" " + q["answer"] + "." for q in items])
        preds = generate_answers(model, tokenizer, prompts, batch_size, num_beams, new_tokens, progress)
        first = first_token_correct(model, tokenizer, items, batch_size)
    correct = np.array([is_correct(p, q["answer"]) for p, q in zip(preds, items, strict=True)])
    metrics: dict = {"data_dir": str(Path(data_dir).resolve()), "num_beams": num_beams,
                     "batch_size": batch_size, "device": str(next(model.parameters()).device),
                     "max_people": max_people, **(extra or {}), "splits": {}}  # fmt: skip
    for split in splits:
        sel = [i for i, q in enumerate(items) if q["split"] == split]
        if not sel:
            continue
        m = {}
        for key, hits in (("exact_match", correct), ("first_token", first)):
            row = {
                a: float(np.mean([hits[i] for i in sel if items[i]["attribute"] == a])) for a in ATTRIBUTES
            }
            row["mean"] = float(np.mean(list(row.values())))
            m[key] = row
        m["majority"] = majority_baseline(data_dir, [items[i] for i in sel])
        m["questions"] = len(sel)
        metrics["splits"][split] = m
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        rows = [
            json.dumps({"person_id": q["person_id"], "attribute": q["attribute"], "split": q["split"],
                        "prompt": pr, "prediction": p, "answer": q["answer"], "correct": bool(c)},
                       ensure_ascii=False)
            for q, pr, p, c in zip(items, prompts, preds, correct, strict=True)
        ]  # fmt: skip
        atomic_write_text(out / "predictions.jsonl", "\n".join(rows) + "\n")
        write_json(out / "metrics.json", metrics)
    if show_table:
        print(metrics_table(metrics))
    return metrics
