"""Knowledge-manipulation task sets (Part 3.2, paper section 6): inverse search, partial retrieval,
classification and comparison items built from a dataset's people, split by the dataset's P_train / P_test.

Our reading of the tasks (the paper names them; which attributes each inverse task uses is ours):

- ``bdate_to_*``: the birth date; ``birth_to_*``: birth date + birth city; ``three_to_*``:
  university + major + company; ``four_to_*``: those three + birth city; ``all_to_*``: all six
  attributes (the company city follows from the company, but "all" names it too). ``*_first``
  asks for the first name, ``*_full`` for the full name.
- ``birth_day`` ("2"), ``birth_year`` ("1996"): partial retrieval of the birth date.
- ``month_parity``: is the birth month even (mod 2, Yes/No); ``month_number``: the month as a
  number 1-12 (the 12 classes of mod 12, written as people write months).
- ``month_compare``: was person A born in a later month of the year than person B (Yes/No).

Choices where the paper is silent:

- Inverse search has one item per distinct query. Every person matching the queried values gives
  an accepted answer (``answers``); the training target is the lowest-id match of the item's
  split. A query matching any P_test person is a test item, so no P_test person's question is
  ever a training item; a query shared by P_train and P_test people therefore counts as test.
- Comparison pairs are ordered pairs of two people of one split (train pairs from P_train, test
  pairs from P_test: P_test people appear in no training item), with different birth months (a tie
  has no later month, and excluding ties keeps chance at 50%); no pair repeats.
- The CoT hint is the extracted facts ("October." or "October; September."). Its text format is
  ``{question} Facts: {hint} Answer: {answer}.`` against ``{question} Answer: {answer}.``: the
  word after the question tells the model which mode to use (the paper's special tokens). Training
  items carry the hint with probability ``hint_prob`` (``use_hint``); test items are meant to be
  run both ways, so their ``use_hint`` is false and ``hint`` is always filled in.
- ``n_train`` / ``n_test`` keep a seeded random subset of items (people, pairs or queries).
"""

from __future__ import annotations

import hashlib
import json
import string
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from biolab.data.dataset import iter_jsonl, read_meta
from biolab.data.people import ATTRIBUTES, MONTHS, SPLITS
from biolab.data.qa import ANSWER_MARK, question_lines
from biolab.errors import ConfigError, DataFileError
from biolab.io import atomic_dir, check_output_dir, write_json

INVERSE = {
    "bdate": ("birth_date",),
    "birth": ("birth_date", "birth_city"),
    "three": ("university", "major", "company"),
    "four": ("birth_city", "university", "major", "company"),
    "all": ATTRIBUTES,
}
INVERSE_TASKS = tuple(f"{k}_to_{w}" for k in INVERSE for w in ("first", "full"))
PARTIAL_TASKS = ("birth_day", "birth_year")
CLASSIFY_TASKS = ("month_parity", "month_number")
COMPARE_TASKS = ("month_compare",)
HINT_TASKS = CLASSIFY_TASKS + COMPARE_TASKS
TASKS = INVERSE_TASKS + PARTIAL_TASKS + HINT_TASKS
HINT_MARK = "Facts:"
FORMAT_VERSION = 1
KIND = "task_set"  # meta.json "kind"; sets written before the rename say "tasks32" and still load
KINDS_READ = (KIND, "tasks32")
STREAM_TASKS = 7  # apart from the people (0-2) and bios (3) streams


def _slots(task: str) -> set[str]:
    if task in INVERSE_TASKS:
        return set(INVERSE[task.split("_to_")[0]])
    return {"name", "name2"} if task in COMPARE_TASKS else {"name"}


@lru_cache(maxsize=1)
def task_questions() -> dict[str, str]:
    """task -> question template, read from package data (``manipulation.tsv``)."""
    out = {}
    path = resources.files("biolab.data") / "manipulation.tsv"
    for path, i, task, sep, template in question_lines("manipulation.tsv"):
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        if not sep or task not in TASKS:
            raise DataFileError(f"{path}:{i}: expected 'task<TAB>question' with a task of {', '.join(TASKS)}")
        if fields != _slots(task):
            want = sorted(_slots(task))
            raise DataFileError(f"{path}:{i}: {task} needs the slots {want}, not {sorted(fields)}")
        out[task] = template
    if set(out) != set(TASKS):
        raise DataFileError(f"{path}: missing questions for {sorted(set(TASKS) - set(out))}")
    return out


def _date(p: dict) -> tuple[int, int, int]:
    """(year, month 1-12, day) of a person's birth date, as people.format_date writes it."""
    month, day, year = p["birth_date"].replace(",", "").split(" ")
    return int(year), MONTHS.index(month) + 1, int(day)


def _item(task, split, people, question, answer, answers=None, hint=None) -> dict:
    return {
        "task": task, "split": split, "person_ids": [p["id"] for p in people], "question": question,
        "answer": answer, "answers": answers or [answer], "hint": hint, "use_hint": False,
    }  # fmt: skip


def _inverse_items(people: list[dict], task: str) -> list[dict]:
    attrs = INVERSE[task.split("_to_")[0]]
    key = "full_name" if task.endswith("_full") else "first_name"
    groups: dict[tuple, list[dict]] = {}
    for p in people:
        groups.setdefault(tuple(p[a] for a in attrs), []).append(p)
    template, items = task_questions()[task], []
    for values, members in groups.items():
        split = "test" if any(m["split"] == "test" for m in members) else "train"
        target = next(m for m in members if m["split"] == split)[key]
        question = template.format(**dict(zip(attrs, values, strict=True)))
        answers = sorted({m[key] for m in members})
        items.append(_item(task, split, members, question, target, answers))
    return items


def _person_item(task: str, p: dict) -> dict:
    year, month, day = _date(p)
    question = task_questions()[task].format(name=p["full_name"])
    answer = {
        "birth_day": str(day), "birth_year": str(year), "month_number": str(month),
        "month_parity": "Yes" if month % 2 == 0 else "No",
    }[task]  # fmt: skip
    hint = f"{MONTHS[month - 1]}." if task in HINT_TASKS else None
    return _item(task, p["split"], [p], question, answer, hint=hint)


def _pair_items(task: str, people: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    months = np.array([_date(p)[1] for p in people], dtype=np.int64)
    possible = len(people) ** 2 - int((np.bincount(months, minlength=13) ** 2).sum())
    if n > possible:
        raise ConfigError(f"{task}: {n} pairs asked, only {possible} pairs with different months exist")
    pairs: dict[tuple[int, int], None] = {}  # insertion-ordered set: the draw order is the file order
    while len(pairs) < n:
        for i, j in rng.integers(0, len(people), (2 * (n - len(pairs)) + 8, 2)).tolist():
            if months[i] != months[j] and len(pairs) < n:
                pairs.setdefault((i, j))
    template, items = task_questions()[task], []
    for i, j in pairs:
        a, b = people[i], people[j]
        question = template.format(name=a["full_name"], name2=b["full_name"])
        answer = "Yes" if months[i] > months[j] else "No"
        hint = f"{MONTHS[months[i] - 1]}; {MONTHS[months[j] - 1]}."
        items.append(_item(task, a["split"], [a, b], question, answer, hint=hint))
    return items


def _take(items: list, n: int | None, rng: np.random.Generator, what: str) -> list:
    if n is None:
        return items
    if n > len(items):
        raise ConfigError(f"{what}: {n} asked, only {len(items)} available")
    return [items[i] for i in np.sort(rng.choice(len(items), n, replace=False))]


def validate_task(task: str, n_train, n_test, hint_prob: float) -> None:
    if task not in TASKS:
        raise ConfigError(f"unknown manipulation task {task!r}; choose from: {', '.join(TASKS)}")
    for k, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise ConfigError(f"{k} must be None (all) or an int >= 0, got {v!r}")
    if not 0 <= hint_prob <= 1:
        raise ConfigError(f"hint_prob must be in [0, 1], got {hint_prob}")


def build_items(
    people: list[dict], task: str, n_train: int | None = None, n_test: int | None = None,
    seed: int = 0, hint_prob: float = 0.5,
) -> list[dict]:  # fmt: skip
    """The task's items (train first, then test); ``people`` as in ``people.jsonl``."""
    validate_task(task, n_train, n_test, hint_prob)

    def rng(sub: int) -> np.random.Generator:
        return np.random.default_rng([seed, STREAM_TASKS, TASKS.index(task), sub])

    limits = {"train": n_train, "test": n_test}
    inverse = _inverse_items(people, task) if task in INVERSE_TASKS else []
    items = []
    for k, split in enumerate(SPLITS):
        if task in COMPARE_TASKS:
            members = [p for p in people if p["split"] == split]
            n = len(members) if limits[split] is None else limits[split]
            items += _pair_items(task, members, n, rng(2 + k))
            continue
        if task in INVERSE_TASKS:
            pool = [it for it in inverse if it["split"] == split]
        else:
            pool = [_person_item(task, p) for p in people if p["split"] == split]
        items += _take(pool, limits[split], rng(k), f"{task} {split} items")
    if task in HINT_TASKS:
        draws = rng(9).random(len(items))
        for it, u in zip(items, draws, strict=True):
            it["use_hint"] = bool(it["split"] == "train" and u < hint_prob)
    return items


def ambiguity(items: list[dict]) -> dict:
    """How often an inverse-search query matches several people (``shared``) and several
    distinct answers (``ambiguous``: two people with the same first name are shared only)."""
    if any(it["task"] not in INVERSE_TASKS for it in items):
        raise ConfigError("ambiguity is defined for inverse-search items only")
    out = {}
    for split in SPLITS:
        sel = [it for it in items if it["split"] == split]
        if sel:
            shared = sum(len(it["person_ids"]) > 1 for it in sel)
            amb = sum(len(it["answers"]) > 1 for it in sel)
            out[split] = {
                "queries": len(sel), "shared": shared, "ambiguous": amb,
                "shared_frac": round(shared / len(sel), 6), "ambiguous_frac": round(amb / len(sel), 6),
                "max_people": max(len(it["person_ids"]) for it in sel),
            }  # fmt: skip
    return out


def format_task_prompt(question: str, hint: bool = False) -> str:
    """The evaluation prompt; with ``hint`` the model is asked to write the facts first."""
    return f"{question} {HINT_MARK if hint else ANSWER_MARK}"


def format_task(question: str, answer: str, hint: str | None = None) -> str:
    """A training text: ``{question} Answer: {answer}.`` or, with a hint,
    ``{question} Facts: {hint} Answer: {answer}.``"""
    end = "" if answer.endswith(".") else "."
    facts = "" if hint is None else f" {HINT_MARK} {hint}"
    return f"{question}{facts} {ANSWER_MARK} {answer}{end}"


def format_item(item: dict, hint: bool | None = None) -> str:
    """An item's training text; ``hint=None`` follows the item's own ``use_hint`` draw."""
    hint = item["use_hint"] if hint is None else hint
    if hint and item["hint"] is None:
        raise ConfigError(f"task {item['task']} has no hint; hints exist for {', '.join(HINT_TASKS)}")
    return format_task(item["question"], item["answer"], item["hint"] if hint else None)


def _norm(text: str) -> str:
    # evaluate.normalize's rule (kept here so the data package does not import torch)
    text = text.strip()
    return text[:-1] if text.endswith(".") else text


def read_generation(generation: str, hint: bool = False) -> tuple[str | None, str | None]:
    """(hint, answer) of a continuation of ``format_task_prompt(question, hint)``; with a hint
    prompt the answer is what follows "Answer:" (None if the model never wrote it)."""
    if not hint:
        return None, generation
    facts, sep, answer = generation.partition(f" {ANSWER_MARK}")
    return facts.strip(), (answer if sep else None)


def is_correct_item(item: dict, generation: str, hint: bool = False) -> bool:
    """Exact match of the answer against any accepted answer (one trailing period ignored)."""
    _, answer = read_generation(generation, hint)
    return answer is not None and _norm(answer) in {_norm(a) for a in item["answers"]}


def hint_correct(item: dict, generation: str) -> bool:
    """Did a hint-mode continuation write the item's facts exactly?"""
    facts, _ = read_generation(generation, hint=True)
    return item["hint"] is not None and _norm(facts) == _norm(item["hint"])


def task_items(data_dir: str | Path, task: str, **kw) -> list[dict]:
    """``build_items`` on a dataset folder's people (keywords as ``build_items``)."""
    read_meta(data_dir)
    return build_items(list(iter_jsonl(Path(data_dir) / "people.jsonl")), task, **kw)


def write_task_set(
    data_dir: str | Path, task: str, out: str | Path, n_train: int | None = None,
    n_test: int | None = None, seed: int = 0, hint_prob: float = 0.5, overwrite: bool = False,
) -> dict:  # fmt: skip
    """Write ``out/items.jsonl`` (one item per line) and ``out/meta.json`` atomically; the same
    dataset and arguments give the same bytes. Returns the meta."""
    validate_task(task, n_train, n_test, hint_prob)
    check_output_dir(out, overwrite)
    data_meta = read_meta(data_dir)
    items = task_items(data_dir, task, n_train=n_train, n_test=n_test, seed=seed, hint_prob=hint_prob)
    data = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items).encode("utf-8")
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "task": task,
        "data": {"name": data_meta["config"]["name"], "sha256": data_meta["sha256"]},
        "config": {"n_train": n_train, "n_test": n_test, "seed": seed, "hint_prob": hint_prob},
        "counts": {split: sum(it["split"] == split for it in items) for split in SPLITS}
        | {"train_with_hint": sum(it["use_hint"] for it in items)},
        "sha256": {"items.jsonl": hashlib.sha256(data).hexdigest()},
    }
    if task in INVERSE_TASKS:
        meta["ambiguity"] = ambiguity(items)
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "items.jsonl").write_bytes(data)
        write_json(tmp / "meta.json", meta)  # last: its presence marks a complete folder
    return meta


def load_task_set(directory: str | Path) -> tuple[dict, list[dict]]:
    """(meta, items) of a task-set folder, checked against the sha256 in its meta."""
    directory = Path(directory)
    path = directory / "meta.json"
    if not path.is_file():
        raise DataFileError(f"{directory}: not a task set (no meta.json)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("kind") not in KINDS_READ or meta.get("format_version") != FORMAT_VERSION:
        raise DataFileError(f"{path}: not a task set of format {FORMAT_VERSION}")
    data = (directory / "items.jsonl").read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["sha256"]["items.jsonl"]:
        raise DataFileError(f"{directory / 'items.jsonl'}: sha256 mismatch (file changed or truncated)")
    return meta, [json.loads(line) for line in data.decode("utf-8").splitlines()]
