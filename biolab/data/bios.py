"""Rendering biographies: bioS (strict templates) and bioR-style (freer), with the paper's
augmentations (multiM, permute, fullname, couple, Part 3.2's reverse) and exact character spans of
every value.

Spans are code-point offsets into ``text`` (Python string indices), recorded while rendering,
so nothing downstream ever re-parses a biography.
"""

from __future__ import annotations

from dataclasses import dataclass
from json.encoder import encode_basestring

import numpy as np

from biolab.data.people import ATTRIBUTES, PRONOUNS, Person
from biolab.data.templates import NAME, Template, TemplateSet
from biolab.errors import ConfigError

# bioS "couple" ordering and bioR merged clauses both pair the attributes this way.
PAIRS = (("birth_date", "birth_city"), ("university", "major"), ("company", "company_city"))
STREAM_BIOS = 3

# Reverse datasets (Part 3.2): sentences before the name refer to the person without naming them;
# reverse=6 closes the entry with a sentence of its own that gives the name.
ANONYMOUS = "The person"
NAME_SENTENCE = ("This person's name is ", ((NAME, "."),))
REVERSE_LAST = 6


def anonymous(sentence: tuple) -> tuple:
    """A compiled bioS sentence whose subject is the name (all bioS templates start with it),
    with ANONYMOUS in its place; compiled for the name, so the verb is already singular."""
    _, ((slot, tail), *rest) = sentence
    assert slot == NAME, "bioS sentences start with the subject"
    return ANONYMOUS + tail, tuple(rest)


def check_reverse(reverse: int, fullname: bool) -> None:
    if not 0 <= reverse <= REVERSE_LAST:
        raise ConfigError(
            f"data.reverse must be 0 (off), 1-5 (the name in sentence reverse+1) or {REVERSE_LAST} "
            f"(a closing name sentence), got {reverse}"
        )
    if reverse and fullname:
        raise ConfigError("data.reverse hides the name before sentence reverse+1: use fullname=false")


def subject_forms(n: int, fullname: bool, reverse: int) -> list[str]:
    """Per sentence position: "name", "pronoun" or "anonymous" (before the name, with reverse)."""
    if reverse:
        return ["anonymous" if k < reverse else "name" if k == reverse else "pronoun" for k in range(n)]
    return ["name" if fullname or k == 0 else "pronoun" for k in range(n)]


@dataclass(slots=True)
class Bio:
    person_id: int
    entry: int
    text: str
    spans: dict  # attribute -> [start, end]; "name" -> [[start, end], ...]

    def to_json(self) -> str:
        """The JSON line, formatted by hand (2x faster than json.dumps, same bytes)."""
        spans = ", ".join(f'"{a}": [{v[0]}, {v[1]}]' for a, v in self.spans.items() if a != "name")
        names = ", ".join(f"[{s}, {e}]" for s, e in self.spans["name"])
        return (
            f'{{"person_id": {self.person_id}, "entry": {self.entry}, '
            f'"text": {encode_basestring(self.text)}, "spans": {{{spans}, "name": [{names}]}}}}'
        )


def render_pieces(sentences: list[tuple], person: Person) -> Bio:
    """Join compiled sentences with spaces, filling values and recording their spans."""
    values = person.__dict__
    name = person.full_name
    buf: list[str] = []
    pos = 0
    spans: dict[str, list[int]] = {}
    names: list[list[int]] = []
    for k, (head, slots) in enumerate(sentences):
        if k:
            head = " " + head
        buf.append(head)
        pos += len(head)
        for slot, tail in slots:
            v = values[slot] if slot else name
            end = pos + len(v)
            if slot:
                spans[slot] = [pos, end]
            else:
                names.append([pos, end])
            if v[-1] == "." and tail[:1] == ".":  # "Dow Inc." absorbs the sentence's "."
                tail = tail[1:]
            buf.append(v)
            buf.append(tail)
            pos = end + len(tail)
    ordered = {a: spans[a] for a in ATTRIBUTES if a in spans}
    ordered["name"] = names
    return Bio(person.id, 0, "".join(buf), ordered)


def render_bio(person: Person, templates: list[Template], fullname: bool = False, reverse: int = 0) -> Bio:
    """One entry from an ordered list of templates: the full name in the first sentence and, with
    ``fullname``, in every sentence; the person's pronoun elsewhere. ``reverse=r`` (bioS): the
    first r sentences say ANONYMOUS, the name comes in sentence r+1 or, for r=6, in a last one."""
    check_reverse(reverse, fullname)
    sentences = []
    for t, form in zip(templates, subject_forms(len(templates), fullname, reverse), strict=True):
        s = t.compile(person.pronoun, use_name=form != "pronoun", lead=True)
        sentences.append(anonymous(s) if form == "anonymous" else s)
    if reverse == REVERSE_LAST:
        sentences.append(NAME_SENTENCE)
    return render_pieces(sentences, person)


def entries_per_person(multi: int, permute: int) -> int:
    """multiM draws M template sets; each appears in max(1, permute) sentence orders."""
    return multi * max(1, permute)


def _orders(rng: np.random.Generator, n: int, multi: int, permute: int, couple: bool) -> np.ndarray:
    """Sentence orders, shape (n, multi, max(1, permute), 6), as attribute indices."""
    if permute == 0:
        return np.broadcast_to(np.arange(6), (n, multi, 1, 6))
    if couple:
        pair_order = rng.random((n, multi, permute, 3)).argsort(-1)
        return np.stack([2 * pair_order, 2 * pair_order + 1], -1).reshape(n, multi, permute, 6)
    return rng.random((n, multi, permute, 6)).argsort(-1)


def render_bios_bioS(
    people: list[Person],
    templates: TemplateSet,
    rng: np.random.Generator,
    multi: int = 1,
    permute: int = 0,
    fullname: bool = False,
    couple: bool = False,
    reverse: int = 0,
) -> list[Bio]:
    """bioS entries for ``people``, in person order then entry order. ``reverse`` (see
    ``render_bio``) draws the same random numbers, so a reverse dataset has the same templates and
    orders as its plain twin: only where the name stands differs."""
    check_reverse(reverse, fullname)
    n = len(people)
    per_attr = [templates[a] for a in ATTRIBUTES]
    # Precompiled sentence variants: table[attr][template][pronoun][use_name].
    table = [
        [[[t.compile(p, u, True) for u in (False, True)] for p in PRONOUNS] for t in ts] for ts in per_attr
    ]
    counts = np.array([len(ts) for ts in per_attr])
    tids = rng.integers(0, counts, size=(n, multi, 6)).tolist()
    orders = _orders(rng, n, multi, permute, couple).tolist()
    pron_index = {p: i for i, p in enumerate(PRONOUNS)}
    anon = [[[anonymous(v[True]) for v in by_p] for by_p in ts] for ts in table] if reverse else None
    bios = []
    for i, person in enumerate(people):
        p = pron_index[person.pronoun]
        entry = 0
        for d in range(multi):
            chosen = tids[i][d]
            for order in orders[i][d]:
                if reverse:  # a separate branch keeps the plain path as fast as before
                    sentences = [
                        anon[a][chosen[a]][p] if k < reverse else table[a][chosen[a]][p][k == reverse]
                        for k, a in enumerate(order)
                    ]
                    if reverse == REVERSE_LAST:
                        sentences.append(NAME_SENTENCE)
                else:
                    sentences = [table[a][chosen[a]][p][fullname or k == 0] for k, a in enumerate(order)]
                bio = render_pieces(sentences, person)
                bio.entry = entry
                bios.append(bio)
                entry += 1
    return bios


class _Uniforms:
    """Uniform draws served from pre-drawn blocks: cheap scalar draws in Python loops."""

    def __init__(self, rng: np.random.Generator, block: int = 1 << 16):
        self.rng, self.block = rng, block
        self.buf: list[float] = []
        self.i = 0

    def next(self) -> float:
        if self.i == len(self.buf):
            self.buf, self.i = self.rng.random(self.block).tolist(), 0
        self.i += 1
        return self.buf[self.i - 1]

    def below(self, k: int) -> int:
        return min(int(self.next() * k), k - 1)

    def shuffle(self, xs: list) -> None:
        for j in range(len(xs) - 1, 0, -1):
            r = self.below(j + 1)
            xs[j], xs[r] = xs[r], xs[j]


def render_bios_bioR(
    people: list[Person],
    templates: TemplateSet,
    rng: np.random.Generator,
    multi: int = 1,
    fullname: bool = False,
    merge_prob: float = 0.7,
    max_fillers: int = 1,
    connective_prob: float = 0.3,
) -> list[Bio]:
    """Freer biographies: each entry merges attribute pairs into one clause with probability
    ``merge_prob``, shuffles its sentences, adds 0..``max_fillers`` neutral sentences, and puts a
    connective in front of some sentences. The first sentence starts with the full name."""
    u = _Uniforms(rng)
    by = templates.by_attributes
    leading = {k: [t for t in ts if t.subject_first] for k, ts in by.items()}
    connectives = templates.connectives
    bios = []
    for person in people:
        for entry in range(multi):
            units: list[tuple[str, ...]] = []
            for pair in PAIRS:
                if pair in by and u.next() < merge_prob:
                    units.append(pair)
                else:
                    units.extend((a,) for a in pair)
            u.shuffle(units)
            for _ in range(u.below(max_fillers + 1)):
                units.insert(u.below(len(units) + 1), ())
            sentences = []
            for k, key in enumerate(units):
                pool = leading[key] if k == 0 and leading[key] else by[key]
                t = pool[u.below(len(pool))]
                use_name = fullname or k == 0
                if k and connectives and t.subject_first and u.next() < connective_prob:
                    head, slots = t.compile(person.pronoun, use_name, False)
                    sentence = (connectives[u.below(len(connectives))] + " " + head, slots)
                else:
                    sentence = t.compile(person.pronoun, use_name, True)
                sentences.append(sentence)
            bio = render_pieces(sentences, person)
            bio.entry = entry
            bios.append(bio)
    return bios


def bio_rng(seed: int, chunk: int) -> np.random.Generator:
    """The random stream of one chunk of people: independent of how chunks are scheduled."""
    return np.random.default_rng([seed, STREAM_BIOS, chunk])
