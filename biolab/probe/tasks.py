"""Probe inputs from a dataset: the 11 tasks, their labels, and where to read the states.

Positions come from the attribute spans recorded at generation time (mapped to tokens with the
model's tokenizer), never from re-parsing text. Every sequence is fed as ``EOS + bio`` as in
pretraining, so bio token ``t`` sits at input index ``t + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from biolab.data.dataset import iter_jsonl, read_meta
from biolab.data.people import ATTRIBUTES, MONTHS, SPLITS
from biolab.data.tokens import tokenize_texts
from biolab.errors import ConfigError

# Paper 4.1: birth date only as its first token (the month, 12 classes); the other five attributes
# as a first-token task and a whole-value task.
TASKS: tuple[tuple[str, str], ...] = (("birth_date", "first"),) + tuple(
    (a, kind) for a in ATTRIBUTES[1:] for kind in ("first", "whole")
)
N_SPECIAL = len(ATTRIBUTES)


@dataclass
class ProbeData:
    """Bio entries (one per person, or several: ``entry`` says which), with labels for every task."""

    person_id: np.ndarray  # [n]
    train: np.ndarray  # [n] bool: the person is in P_train
    bio_ids: list[np.ndarray]  # EOS + bio tokens
    spans: np.ndarray  # [n, 6, 2] token spans [first, end) of each attribute within the bio
    names: list[str]
    labels: np.ndarray  # [n, 11] class index per task
    classes: list[list[str]]  # per task: the class names (first tokens or values)
    entry: np.ndarray | None = None  # [n] which bio entry of its person each row is (None: all `entry`)

    @property
    def n_classes(self) -> np.ndarray:
        return np.array([len(c) for c in self.classes])

    def take(self, rows: np.ndarray) -> ProbeData:
        """The given rows, with the same classes (so labels keep their meaning)."""
        return replace(
            self, person_id=self.person_id[rows], train=self.train[rows],
            bio_ids=[self.bio_ids[i] for i in rows], spans=self.spans[rows],
            names=[self.names[i] for i in rows], labels=self.labels[rows],
            entry=None if self.entry is None else self.entry[rows],
        )  # fmt: skip


def entries_per_person(data_dir: str | Path) -> int:
    """Entries of each person; with celebrity and minority groups, the most any group has."""
    counts = read_meta(Path(data_dir))["counts"]
    groups = counts.get("groups") or {}
    if groups:
        return max(g["entries_per_person"] for g in groups.values())
    return counts["bios"] // counts["people"]


def load_probe_data(
    data_dir: str | Path, tokenizer, max_people: int | None = None, entry: int | list[int] = 0
) -> ProbeData:
    """The ``entry``-th bio (or each of a list of entries, person by person) of the first
    ``max_people`` people (ids are a random order, so this is a random subset with both splits),
    tokenized with the model's tokenizer; labels and classes are shared by all rows."""
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    n_entries = entries_per_person(data_dir)
    entries = [entry] if isinstance(entry, int) else list(entry)
    bad = [e for e in entries if not 0 <= e < n_entries]
    if bad or not entries:
        raise ConfigError(f"entry={entry} but the dataset has {n_entries} entries per person")
    limit = meta["counts"]["people"] if max_people is None else max_people
    if limit < 4:
        raise ConfigError(f"max_people={max_people}: probes need at least 4 people")
    everyone = list(iter_jsonl(data_dir / "people.jsonl"))
    if meta["counts"].get("groups"):
        # the groups are the splits and come one after the other by id: the first `limit` of each half
        half = -(-limit // 2)
        chosen = [p for split in SPLITS for p in [q for q in everyone if q["split"] == split][:half]]
    else:
        chosen = [p for p in everyone if p["id"] < limit]
    by_key = {
        (b["person_id"], b["entry"]): b for b in iter_jsonl(data_dir / "bios.jsonl") if b["entry"] in entries
    }
    # a minority person has fewer entries than a celebrity: only the entries a person has
    pairs = [(p, e) for p in chosen for e in entries if (p["id"], e) in by_key]
    people = [p for p, _ in pairs]
    row_entry = np.array([e for _, e in pairs])
    bios = [by_key[(p["id"], e)] for p, e in pairs]
    char_spans = np.array([[b["spans"][a] for a in ATTRIBUTES] for b in bios], dtype=np.int64)
    ids, offsets, spans = tokenize_texts(
        tokenizer, [b["text"] for b in bios], char_spans, "tokenize probe bios"
    )
    eos = tokenizer.eos_token_id
    bio_ids = [np.concatenate([[eos], ids[offsets[i] : offsets[i + 1]]]) for i in range(len(bios))]

    labels, classes = [], []
    for attribute, kind in TASKS:
        a = ATTRIBUTES.index(attribute)
        if attribute == "birth_date":
            names = list(MONTHS)
            lab = np.array([MONTHS.index(p["birth_date"].split(" ", 1)[0]) for p in people])
        elif kind == "first":
            first = np.array([bio_ids[i][spans[i, a, 0] + 1] for i in range(len(bios))])
            uniq, lab = np.unique(first, return_inverse=True)
            names = [tokenizer.decode([int(u)]) for u in uniq]
        else:
            names, lab = np.unique([p[attribute] for p in people], return_inverse=True)
            names = list(names)
        labels.append(lab)
        classes.append(names)
    return ProbeData(
        person_id=np.array([p["id"] for p in people]),
        train=np.array([p["split"] == "train" for p in people]),
        bio_ids=bio_ids,
        spans=spans,
        names=[p["full_name"] for p in people],
        labels=np.stack(labels, 1),
        classes=classes,
        entry=row_entry,
    )


def special_positions(spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paper 4.1: position k is the token right before the k-th attribute mentioned in the entry.

    Returns bio token indices ``[n, 6]`` and ``seen[n, 6 positions, 6 attributes]``: whether the
    attribute's first token is already in the text at that position (then probing it is copying)."""
    starts = spans[:, :, 0]  # [n, 6]
    pos = np.sort(starts, axis=1) - 1
    seen = starts[:, None, :] <= pos[:, :, None]
    return pos, seen


def token_positions(bio_ids: list[np.ndarray], max_positions: int) -> np.ndarray:
    """Bio token indices 0..max_positions-1 for every entry; -1 past its end."""
    lengths = np.array([len(s) - 1 for s in bio_ids])  # minus the leading EOS
    t = np.arange(max_positions)[None, :]
    return np.where(t < lengths[:, None], t, -1)


def query_inputs(tokenizer, names: list[str], end_token: int | None) -> list[np.ndarray]:
    """Paper 4.2: only the full name, between a start token (EOS) and an end token (EOS by default;
    None: no end token, read the name's last token)."""
    eos = tokenizer.eos_token_id
    tail = [] if end_token is None else [end_token]
    return [np.array([eos, *tokenizer(n, add_special_tokens=False)["input_ids"], *tail]) for n in names]
