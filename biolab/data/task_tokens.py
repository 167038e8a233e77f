"""A manipulation task set's training items, tokenized for QA finetuning and mixed training.

``tokenize_task_set`` writes ``items.bin`` / ``items.npz`` / ``items.json`` into a task-set folder
(``biolab.data.manipulation.write_task_set``), in the layout of the corpus's ``qa.bin`` / ``qa.npz``
(``biolab.data.tokens.TextSet``), so ``QABatches`` and ``make_stream`` read them unchanged.

Only P_train items are tokenized: a P_test item cannot reach a training batch by any code path,
whatever reads the file. Each item is written as ``format_item`` writes it (with its CoT hint when
its ``use_hint`` draw says so); ``answer`` points at the first token after the prompt, so the
finetuning loss covers the hint (the model must learn to write it) and the answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biolab.data.manipulation import format_item, format_task_prompt, load_task_set
from biolab.data.tokens import TextSet, write_texts
from biolab.errors import ConfigError

NAME = "items"


def tokenize_task_set(task_dir: str | Path, tokenizer) -> dict:
    """Tokenize the P_train items of ``task_dir`` with ``tokenizer`` (the corpus's); returns the
    tokens' meta (also ``task_dir/items.json``)."""
    meta, items = load_task_set(task_dir)
    rows = [i for i, it in enumerate(items) if it["split"] == "train"]
    if not rows:
        raise ConfigError(f"{task_dir}: task {meta['task']} has no P_train items to train on")
    texts = [format_item(items[i]) for i in rows]
    # the target starts after the prompt and its space: the token holding that character
    starts = [len(format_task_prompt(items[i]["question"], items[i]["use_hint"])) + 1 for i in rows]
    for i, text, start in zip(rows, texts, starts, strict=True):
        if text[: start - 1] != format_task_prompt(items[i]["question"], items[i]["use_hint"]):
            raise ConfigError(f"{task_dir}: item {i}'s training text does not start with its prompt")
    people = [items[i]["person_ids"] for i in rows]
    return write_texts(
        tokenizer, texts, starts, task_dir, NAME,
        item=np.array(rows, dtype=np.int32),  # the row of items.jsonl
        person_id=np.array([p[0] for p in people], dtype=np.int32),
        person_id2=np.array([p[1] if len(p) > 1 else -1 for p in people], dtype=np.int32),
        split=np.ones(len(rows), dtype=np.int8),
        hint=np.array([items[i]["use_hint"] for i in rows], dtype=np.int8),
    )  # fmt: skip


def load_task_texts(task_dir: str | Path) -> TextSet:
    return TextSet.load(task_dir, NAME)
