"""Memorization measures (Part 3.2's "memorization is not extraction"): does a model recite its
pretraining biographies, whatever it can answer about them?

- ``bio_completion``: the bio entry's text up to just before an attribute (its recorded character
  span) is the prompt; greedy generation must reproduce the value and the character the bio has
  right after it (or stop there, at the end of the text), so "Meta" for "Meta Platforms" or
  "October 2" for "October 2, 1996" are wrong. Per attribute and per split of the people.
- ``verbatim``: the first ``k`` tokens of an entry (tokenized whole, as in pretraining) are the
  prompt; the continuation must reproduce the rest of the entry token for token. Reports the
  fraction reproduced exactly and the longest exact prefix in tokens.

Prompts start after an EOS, as every text does in pretraining. Results are plain JSON-able dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biolab.config import from_dict
from biolab.data.dataset import iter_jsonl, read_meta
from biolab.data.people import ATTRIBUTES, SPLITS
from biolab.errors import ConfigError
from biolab.eval.generate import generate_ids, max_new_tokens


@dataclass(frozen=True)
class MemorizationConfig:
    """The ``memorization`` section: which bios are scored, and how the verbatim test is cut."""

    enabled: bool = False
    max_people: int | None = 100  # per split (None: all)
    entries: list | None = field(default_factory=lambda: [0])  # bio entries of each person (None: all)
    k: int = 16  # verbatim: prompt tokens
    length: int | None = None  # verbatim: continuation tokens compared (None: the rest of the entry)
    batch_size: int = 128

    @classmethod
    def from_dict(cls, d: dict) -> MemorizationConfig:
        return from_dict(cls, d, "memorization")

    def validate(self) -> None:
        if self.k < 1 or (self.length is not None and self.length < 1):
            raise ConfigError(f"memorization.k must be >= 1 and memorization.length null or >= 1, got {self}")
        if self.max_people is not None and self.max_people < 1:
            raise ConfigError(f"memorization.max_people must be null or >= 1, got {self.max_people}")
        if self.batch_size < 1:
            raise ConfigError(f"memorization.batch_size must be >= 1, got {self.batch_size}")
        if self.entries is not None and not all(isinstance(e, int) and e >= 0 for e in self.entries):
            raise ConfigError(f"memorization.entries must be null or entry indices >= 0, got {self.entries}")

    def measures(self) -> dict:
        """What the stage measures with (its cache key): everything but ``enabled``."""
        return {"max_people": self.max_people, "entries": self.entries, "k": self.k, "length": self.length,
                "batch_size": self.batch_size}  # fmt: skip


def select_bios(
    data_dir: str | Path, splits=SPLITS, max_people: int | None = None, entries=None
) -> list[tuple[dict, str]]:
    """(bio, split of its person) for the chosen splits; ``max_people`` keeps the first people by
    id of each split, ``entries`` the given entry indices (None: all)."""
    if not set(splits) <= set(SPLITS) or not splits:
        raise ConfigError(f"splits must be a non-empty subset of {SPLITS}, got {splits}")
    read_meta(data_dir)
    split = {p["id"]: p["split"] for p in iter_jsonl(Path(data_dir) / "people.jsonl")}
    keep = {pid for pid, s in split.items() if s in splits}
    if max_people is not None:
        keep = {pid for s in splits for pid in sorted(p for p in keep if split[p] == s)[:max_people]}
    entries = None if entries is None else set(entries)
    bios = [
        (b, split[b["person_id"]])
        for b in iter_jsonl(Path(data_dir) / "bios.jsonl")
        if b["person_id"] in keep and (entries is None or b["entry"] in entries)
    ]
    if not bios:
        raise ConfigError(f"no bios for splits {splits} (max_people={max_people}, entries={entries})")
    return bios


def completion_prompt(text: str, span: list[int]) -> tuple[str, str]:
    """(prompt, expected continuation) for the value at ``span``. The space before a value belongs
    to its first token in training ("on" + " October"), so the prompt stops before it; the
    expected text ends with the character after the value, "" at the end of the text."""
    start, end = span
    cut = len(text[:start].rstrip(" "))
    return text[:cut], text[cut : end + 1]


def completion_correct(generation: str, expected: str, at_end: bool) -> bool:
    """The value and its following character reproduced; at the end of a bio, exactly the value."""
    return generation == expected if at_end else generation.startswith(expected)


def _check_positions(model, needed: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and needed > limit:
        raise ConfigError(f"prompts plus continuations need {needed} positions; the model has {limit}")


def _decode(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, clean_up_tokenization_spaces=False)


def bio_completion(
    model, tokenizer, data_dir: str | Path, attributes=ATTRIBUTES, splits=SPLITS,
    max_people: int | None = None, entries=None, batch_size: int = 128, progress: bool = False,
) -> dict:  # fmt: skip
    """Exact reproduction of each attribute (and optionally "name": its first occurrence) from the
    entry's prefix: ``{"splits": {split: {attribute: acc, "mean": acc}}, "bios": {split: n}}``."""
    bad = [a for a in attributes if a not in (*ATTRIBUTES, "name")]
    if bad or not attributes:
        raise ConfigError(f"attributes must be among {ATTRIBUTES} or 'name', got {list(attributes)}")
    bios = select_bios(data_dir, splits, max_people, entries)
    eos = tokenizer.eos_token_id
    hits: dict[str, np.ndarray] = {}
    for a in attributes:
        spans = [b["spans"][a] if a != "name" else b["spans"]["name"][0] for b, _ in bios]
        pairs = [completion_prompt(b["text"], sp) for (b, _), sp in zip(bios, spans, strict=True)]
        prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
        max_new = max_new_tokens(tokenizer, [e for _, e in pairs])
        _check_positions(model, 1 + max(len(ids) for ids in prompts) + max_new)
        gen = generate_ids(
            model, tokenizer, [[eos, *ids] for ids in prompts], batch_size, max_new_tokens=max_new,
            progress=progress,
        )  # fmt: skip
        hits[a] = np.array([
            completion_correct(_decode(tokenizer, g), e, sp[1] == len(b["text"]))
            for g, (_, e), sp, (b, _) in zip(gen, pairs, spans, bios, strict=True)
        ])  # fmt: skip
    result: dict = {"splits": {}, "bios": {}}
    for split in splits:
        sel = np.array([s == split for _, s in bios])
        if sel.any():
            row = {a: float(hits[a][sel].mean()) for a in attributes}
            row["mean"] = float(np.mean(list(row.values())))
            result["splits"][split] = row
            result["bios"][split] = int(sel.sum())
    return result


def longest_prefix(generated: list[int], target: list[int]) -> int:
    """Number of leading tokens ``generated`` shares with ``target``."""
    n = 0
    for g, t in zip(generated, target, strict=False):
        if g != t:
            break
        n += 1
    return n


def verbatim(
    model, tokenizer, data_dir: str | Path, k: int = 16, length: int | None = None, splits=SPLITS,
    max_people: int | None = None, entries=None, batch_size: int = 64, progress: bool = False,
) -> dict:  # fmt: skip
    """From the first ``k`` tokens of each entry, is the rest (or its next ``length`` tokens)
    reproduced exactly? Entries of at most ``k`` tokens are skipped and counted."""
    if k < 1 or (length is not None and length < 1):
        raise ConfigError(f"k and length must be >= 1, got k={k}, length={length}")
    bios = select_bios(data_dir, splits, max_people, entries)
    ids = tokenizer([b["text"] for b, _ in bios], add_special_tokens=False)["input_ids"]
    rows = [
        (s, x[:k], x[k:] if length is None else x[k : k + length])
        for (_, s), x in zip(bios, ids, strict=True)
    ]
    skipped = sum(not t for _, _, t in rows)
    rows = [r for r in rows if r[2]]
    if not rows:
        raise ConfigError(f"every selected bio has at most k={k} tokens")
    longest = max(len(t) for _, _, t in rows)
    _check_positions(model, 1 + k + longest)
    eos = tokenizer.eos_token_id
    gen = generate_ids(
        model, tokenizer, [[eos, *p] for _, p, _ in rows], batch_size, max_new_tokens=longest,
        progress=progress,
    )  # fmt: skip
    prefix = np.array([longest_prefix(g, t) for g, (_, _, t) in zip(gen, rows, strict=True)])
    total = np.array([len(t) for _, _, t in rows])
    result: dict = {"k": k, "length": length, "skipped": skipped, "splits": {}}
    for split in splits:
        sel = np.array([s == split for s, _, _ in rows])
        if sel.any():
            result["splits"][split] = {
                "entries": int(sel.sum()),
                "exact": float((prefix[sel] == total[sel]).mean()),
                "prefix_mean": float(prefix[sel].mean()),
                "prefix_median": float(np.median(prefix[sel])),
                "prefix_frac": float((prefix[sel] / total[sel]).mean()),
                "target_mean": float(total[sel].mean()),
            }
    return result
