"""Scoring a model on a knowledge-manipulation task set (Part 3.2, paper section 6): exact match of
generated answers on P_train and P_test items.

- Every item is asked without the hint (``{question} Answer:``). Items of the classification and
  comparison tasks are asked a second time with the hint prompt (``{question} Facts:``): the model
  must write the facts, then the answer; ``answer_with_hint`` scores the answer, ``hint`` the facts
  (the paper tests both ways, whatever the training mix was).
- Inverse search accepts any name of a person matching the query (``answers``); how often a query
  matches several people is copied from the task set's meta (``ambiguity``).
- ``majority``: answering every item with the most common P_train answer (50% is chance for the
  Yes/No tasks; near 0 for names).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from biolab.data.manipulation import (
    HINT_TASKS,
    format_task,
    format_task_prompt,
    hint_correct,
    is_correct_item,
    load_task_set,
)
from biolab.data.people import SPLITS
from biolab.errors import ConfigError
from biolab.eval.generate import generate_answers, max_new_tokens
from biolab.io import atomic_write_text, write_json


def select_items(items: list[dict], max_items: int | None) -> list[dict]:
    """The first ``max_items`` items of each split, in file order (None: all)."""
    if max_items is not None and (not isinstance(max_items, int) or max_items < 1):
        raise ConfigError(f"max_items must be None or an int >= 1, got {max_items!r}")
    out = []
    for split in SPLITS:
        out += [it for it in items if it["split"] == split][:max_items]
    return out


def continuations(items: list[dict], hint: bool) -> list[str]:
    """What each item's generation should be: the answer, or the facts and then the answer."""
    return [
        format_task(it["question"], it["answer"], it["hint"] if hint else None)[
            len(format_task_prompt(it["question"], hint)) :
        ]
        for it in items
    ]


def evaluate_task_set(
    model, tokenizer, task_dir: str | Path, out: str | Path | None = None, max_items: int | None = None,
    batch_size: int = 128, num_beams: int = 1, progress: bool = False,
) -> dict:  # fmt: skip
    """Exact-match accuracies per split (fractions); writes ``metrics.json`` and
    ``predictions.jsonl`` into ``out`` when given."""
    meta, items = load_task_set(task_dir)
    task = meta["task"]
    chosen = select_items(items, max_items)
    if not any(it["split"] == "test" for it in chosen):
        raise ConfigError(f"{task_dir}: task {task} has no P_test items to score")
    common = Counter(it["answer"] for it in items if it["split"] == "train").most_common(1)
    majority = common[0][0] if common else None
    scores: dict[str, np.ndarray] = {}
    preds: dict[str, list[str]] = {}
    for hint in (False, True) if task in HINT_TASKS else (False,):
        prompts = [format_task_prompt(it["question"], hint) for it in chosen]
        longest = max_new_tokens(tokenizer, continuations(chosen, hint))
        gen = generate_answers(model, tokenizer, prompts, batch_size, num_beams, longest, progress)
        key = "answer_with_hint" if hint else "answer"
        preds[key] = gen
        scores[key] = np.array([is_correct_item(it, g, hint) for it, g in zip(chosen, gen, strict=True)])
        if hint:
            scores["hint"] = np.array([hint_correct(it, g) for it, g in zip(chosen, gen, strict=True)])
    scores["majority"] = np.array([majority in it["answers"] for it in chosen])
    metrics: dict = {"task": task, "task_set": meta["config"], "counts": meta["counts"],
                     "num_beams": num_beams, "splits": {}}  # fmt: skip
    for split in SPLITS:
        sel = np.array([it["split"] == split for it in chosen])
        if sel.any():
            row = {k: float(v[sel].mean()) for k, v in scores.items()}
            metrics["splits"][split] = {**row, "items": int(sel.sum())}
    if "ambiguity" in meta:
        metrics["ambiguity"] = meta["ambiguity"]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps({"split": it["split"], "person_ids": it["person_ids"], "question": it["question"],
                        "answers": it["answers"], **{f"prediction_{k}": p[i] for k, p in preds.items()},
                        **{f"correct_{k}": bool(scores[k][i]) for k in preds}}, ensure_ascii=False)
            for i, it in enumerate(chosen)
        ]  # fmt: skip
        atomic_write_text(out / "predictions.jsonl", "\n".join(lines) + "\n")
        write_json(out / "metrics.json", metrics)
    return metrics
