"""Rendering biographies: bioS (strict templates) and bioR-style (freer), with the paper's
augmentations (multiM, permute, fullname, couple, Part 3.2's reverse) and exact character spans of
every value.

Spans are code-point offsets into ``text`` (Python string indices), recorded while rendering,
so nothing downstream ever re-parses a biography.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from json.encoder import encode_basestring
from operator import attrgetter

import numpy as np

from biolab.data.people import ATTRIBUTES, PRONOUNS, Person
from biolab.data.templates import NAME, Template, TemplateSet
from biolab.errors import ConfigError

# bioS "couple" ordering and bioR merged clauses both pair the attributes this way.
PAIRS = (("birth_date", "birth_city"), ("university", "major"), ("company", "company_city"))
STREAM_BIOS = 3
_VALUES = attrgetter(*ATTRIBUTES)

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


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class BioSPlan:
    """The draws of a bioS chunk: for every entry (person order, then entry order), the variant of
    each of its sentences."""

    variants: tuple  # compiled sentences, as _bioS_variants numbers them
    sentences: np.ndarray  # (entries, sentences): indices into variants
    person: np.ndarray  # (entries,): index into the chunk's people
    entry: np.ndarray  # (entries,): the entry number within its person
    parts: dict | None = field(default=None, repr=False)  # the variants taken apart, for bioS_jsonl


@lru_cache(maxsize=8)
def _bioS_variants(per_attr: tuple, reverse: bool) -> tuple[tuple, dict | None]:
    """Every sentence a bioS entry can use, with templates numbered across the attributes: first
    ``(template * len(PRONOUNS) + pronoun) * 2 + use_name``, then with ``reverse`` the anonymous form of
    each (template, pronoun) and NAME_SENTENCE; and the sentences taken apart (see _sentence_parts)."""
    named = [t.compile(p, u, True) for ts in per_attr for t in ts for p in PRONOUNS for u in (False, True)]
    if reverse:
        named += [*(anonymous(named[2 * i + 1]) for i in range(len(named) // 2)), NAME_SENTENCE]
    return tuple(named), _sentence_parts(tuple(named))


def plan_bios_bioS(
    people: list[Person],
    templates: TemplateSet,
    rng: np.random.Generator,
    multi: int = 1,
    permute: int = 0,
    fullname: bool = False,
    couple: bool = False,
    reverse: int = 0,
) -> BioSPlan:
    """Draw the templates and sentence orders of ``render_bios_bioS(people, ...)``."""
    check_reverse(reverse, fullname)
    n = len(people)
    per_attr = tuple(tuple(templates[a]) for a in ATTRIBUTES)
    counts = np.array([len(ts) for ts in per_attr])
    tids = rng.integers(0, counts, size=(n, multi, 6))
    order = _orders(rng, n, multi, permute, couple)  # (n, multi, orders, 6): attribute indices
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each attribute's first template number
    who = np.arange(n)[:, None, None, None]
    template = first[order] + tids[who, np.arange(multi)[None, :, None, None], order]
    pronoun = np.array([PRONOUNS.index(p.pronoun) for p in people], dtype=int)[who]
    by_pronoun, k = template * len(PRONOUNS) + pronoun, np.arange(6)
    if reverse:
        n_named = 2 * len(PRONOUNS) * int(counts.sum())
        sentences = np.where(k < reverse, n_named + by_pronoun, by_pronoun * 2 + (k == reverse))
        if reverse == REVERSE_LAST:
            name_sentence = np.full((*sentences.shape[:-1], 1), n_named + n_named // 2)
            sentences = np.concatenate([sentences, name_sentence], -1)
    else:
        sentences = by_pronoun * 2 + (fullname | (k == 0))
    per = sentences.shape[1] * sentences.shape[2]
    variants, parts = _bioS_variants(per_attr, bool(reverse))
    return BioSPlan(
        variants,
        sentences.reshape(n * per, -1),
        np.repeat(np.arange(n), per),
        np.tile(np.arange(per), n),
        parts,
    )


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
    return _render_plan(
        people, plan_bios_bioS(people, templates, rng, multi, permute, fullname, couple, reverse)
    )


def _render_plan(people: list[Person], plan: BioSPlan) -> list[Bio]:
    bios = []
    for row, i, entry in zip(plan.sentences.tolist(), plan.person.tolist(), plan.entry.tolist(), strict=True):
        bio = render_pieces([plan.variants[v] for v in row], people[i])
        bio.entry = entry
        bios.append(bio)
    return bios


def bios_jsonl(bios: list[Bio]) -> tuple[str, list[int], list[int]]:
    """The bios.jsonl lines of ``bios``, and each text's length in characters and in words."""
    return (
        "".join(b.to_json() + "\n" for b in bios),
        [len(b.text) for b in bios],
        [b.text.count(" ") + 1 for b in bios],
    )


def _esc(s: str) -> str:
    return encode_basestring(s)[1:-1]  # JSON escapes one character at a time: pieces escape apart


def _sentence_parts(variants: tuple) -> dict | None:
    """Each compiled sentence as its head, the name slot and the literal after it, the value slot and
    the literal after it (either slot may be absent), in arrays over the variants; None for a sentence
    of another shape. ``t2_esc[v, absorbed, spaced]``: the last literal escaped, without its leading
    "." when the value ends in one, with the space before the next sentence."""
    heads, t1s, attrs, t2s = [], [], [], []
    for head, slots in variants:
        rest = list(slots)
        t1s.append(rest.pop(0)[1] if rest and rest[0][0] == NAME else None)
        a, t2 = rest.pop(0) if rest and rest[0][0] else (None, "")
        if rest:
            return None
        heads.append(head)
        attrs.append(len(ATTRIBUTES) if a is None else ATTRIBUTES.index(a))  # past the end: no value
        t2s.append(t2)
    has_name = [t is not None for t in t1s]
    t1s = [t or "" for t in t1s]
    return {
        "head_len": np.array([len(h) for h in heads]),
        "head_esc": _objects([_esc(h) for h in heads]),
        "has_name": np.array(has_name),
        "t1_len": np.array([len(t) for t in t1s]),
        "t1_dot": np.array([t[:1] == "." for t in t1s]),
        "t1_esc": np.array([(_esc(t), _esc(t[1:])) for t in t1s], dtype=object),
        "attr": np.array(attrs),
        "t2_len": np.array([len(t) for t in t2s]),
        "t2_dot": np.array([t[:1] == "." for t in t2s]),
        "t2_esc": np.array([[(_esc(x), _esc(x + " ")) for x in (t, t[1:])] for t in t2s], dtype=object),
        "spaces": np.array([(h + t1 + t2).count(" ") for h, t1, t2 in zip(heads, t1s, t2s, strict=True)]),
    }


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@lru_cache(maxsize=64)
def _numbers(after: str, size: int) -> np.ndarray:
    """``str(i) + after`` for i < size: a span number with the JSON that follows it."""
    return _objects([f"{i}{after}" for i in range(size)])


def _span_separators(n_names: int) -> list[str]:
    """What Bio.to_json writes after each span number: attributes' [start, end], then the names'."""
    out = []
    for following in (*ATTRIBUTES[1:], None):
        out += [", ", f'], "{following}": [' if following else '], "name": [[']
    for i in range(n_names):
        out += [", ", "], [" if i + 1 < n_names else "]]}}\n"]
    return out


def bioS_jsonl(people: list[Person], plan: BioSPlan) -> tuple[str, list[int], list[int]]:
    """``bios_jsonl(render_bios_bioS(...))`` for the same draws, byte for byte, computed for the whole
    chunk at once: each span a sum of piece lengths, the lines one join of pieces, each piece looked up
    in a table (a sentence's literals, a person's escaped values, a number's digits)."""
    parts = plan.parts
    vid, who = plan.sentences, plan.person[:, None]  # (entries, sentences) variants, (entries, 1) people
    if parts is None:
        return bios_jsonl(_render_plan(people, plan))
    has_name, attr = parts["has_name"][vid], parts["attr"][vid]
    n_attrs = len(ATTRIBUTES)
    if (  # every entry has each attribute once, and the name in the same sentences (a fixed span count)
        not (has_name == has_name[:1]).all()
        or not has_name[0].any()
        or not (np.sort(attr, 1)[:, :n_attrs] == np.arange(n_attrs)).all()
    ):
        return bios_jsonl(_render_plan(people, plan))
    names = [p.full_name for p in people]
    name_len = np.array([len(x) for x in names])[who]
    # values repeat across people: each distinct one is measured and escaped once; code 0 is no value
    distinct = {"": 0}
    codes = np.array([[distinct.setdefault(v, len(distinct)) for v in vs] for vs in map(_VALUES, people)])
    codes = np.concatenate([codes, np.zeros((len(people), 1), int)], 1)[who, attr]  # (entries, sentences)
    strings = list(distinct)
    value_len = np.array([len(v) for v in strings])[codes]

    absorb1 = has_name & np.array([x[-1] == "." for x in names])[who] & parts["t1_dot"][vid]  # "Dow Inc."
    absorb2 = np.array([v[-1:] == "." for v in strings])[codes] & parts["t2_dot"][vid]
    head = parts["head_len"][vid]
    named = has_name * name_len + parts["t1_len"][vid] - absorb1
    length = head + named + value_len + parts["t2_len"][vid] - absorb2
    end = np.cumsum(length + 1, 1) - 1
    start = end - length
    pos = np.argsort(attr, 1, kind="stable")[:, :n_attrs]  # the sentence of each attribute
    value_start = np.take_along_axis(start + head + named, pos, 1)
    value_end = value_start + np.take_along_axis(value_len, pos, 1)
    name_start = (start + head)[:, has_name[0]]
    spans = np.concatenate(
        [np.stack([value_start, value_end], -1), np.stack([name_start, name_start + name_len], -1)], 1
    )
    spans = spans.reshape(len(vid), -1)
    spaces = parts["spaces"][vid] + np.array([v.count(" ") for v in strings])[codes]
    spaces += has_name * np.array([x.count(" ") for x in names])[who]
    words = vid.shape[1] + spaces.sum(1)  # one more word than spaces; a space between sentences

    columns = [
        _objects([f'{{"person_id": {p.id}, "entry": ' for p in people])[plan.person],
        _numbers(', "text": "', int(plan.entry.max()) + 1)[plan.entry],
    ]
    name_esc = _objects([_esc(x) for x in names])[plan.person]
    value_esc = _objects([_esc(v) for v in strings])
    last = vid.shape[1] - 1
    for k in range(vid.shape[1]):  # the pieces of sentence k, leaving out columns that are all ""
        if head[:, k].any():
            columns.append(parts["head_esc"][vid[:, k]])
        if has_name[0, k]:
            columns += [name_esc, parts["t1_esc"][vid[:, k], absorb1[:, k].astype(int)]]
        if (attr[:, k] < n_attrs).any():
            columns.append(value_esc[codes[:, k]])
        columns.append(parts["t2_esc"][vid[:, k], absorb2[:, k].astype(int), int(k < last)])
    columns.append(f'", "spans": {{"{ATTRIBUTES[0]}": [')
    size = 1 << int(spans.max()).bit_length()  # a power of two: few tables for all chunks
    columns += [
        _numbers(after, size)[spans[:, j]] for j, after in enumerate(_span_separators(int(has_name[0].sum())))
    ]
    lines = np.empty((len(vid), len(columns)), dtype=object)
    for j, column in enumerate(columns):
        lines[:, j] = column
    return "".join(lines.ravel().tolist()), end[:, -1].tolist(), words.tolist()


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
