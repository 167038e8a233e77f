"""An independent check of a written dataset folder: reads the files, trusts nothing else.

``check_dataset(dir)`` returns a list of problems (empty when the dataset is sound) and counts.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from biolab.data.biod import BioDConfig, symbol_width
from biolab.data.bios import ANONYMOUS, REVERSE_LAST, entries_per_person
from biolab.data.dataset import iter_jsonl, verify_dataset
from biolab.data.llm_bios import LLM_STYLE
from biolab.data.people import ATTRIBUTES, CELEBRITY, GROUPS, MINORITY

_SENTENCE_END = re.compile(r"\.(?= [A-Z])")

# A subject pronoun right before a verb form that disagrees with it.
_BAD = re.compile(r"\b(?:[Tt]hey (?:was|is|has|does)|(?:[Hh]e|[Ss]he) (?:were|are|have|do))\b")


def agreement_errors(text: str) -> list[str]:
    """Subject-verb disagreements such as "They was", "She were", "He have", "They has"."""
    return [m.group(0) for m in _BAD.finditer(text)]


def mask_values(text: str, spans: dict) -> str:
    """Replace each attribute value by "<V>" (keeping a final ".") using its span: values such
    as "St. Louis, MO" hold periods, and a value may occur inside a name ("Kia" in "Kiara")."""
    for s, e in sorted((v for k, v in spans.items() if k != "name"), reverse=True):
        text = text[:s] + ("<V>." if text[e - 1] == "." else "<V>") + text[e:]
    return text


def count_sentences(text: str, spans: dict) -> int:
    """Sentences end at ". " before an upper-case letter, once the values are masked."""
    return len(_SENTENCE_END.findall(mask_values(text, spans))) + 1


def reverse_errors(text: str, spans: dict, person: dict, reverse: int) -> list[str]:
    """A reverse entry names the person in sentence ``reverse`` (0-based; 6 = a closing sentence
    of its own), every sentence before it says ANONYMOUS, and none gives a name part away."""
    masked = mask_values(text, spans)
    at = masked.find(person["full_name"])
    if at < 0:
        return ["the full name is missing"]
    before = _SENTENCE_END.split(masked[: at + 1])  # the name's capital marks its sentence start
    errors = []
    if len(before) - 1 != reverse:
        errors.append(f"name in sentence {len(before)}, expected {reverse + 1}")
    if any(not s.strip().startswith(ANONYMOUS + " ") for s in before[:-1]):
        errors.append(f"a sentence before the name does not start with {ANONYMOUS!r}")
    parts = (person["first_name"], person["middle_name"], person["last_name"])
    if any(re.search(rf"\b{re.escape(w)}\b", masked[:at]) for w in parts):
        errors.append("a part of the name occurs before the name")
    closing = text.endswith(person["full_name"] + ".") and count_sentences(text, spans) == 7
    if reverse == REVERSE_LAST and not closing:
        errors.append("the name is not a closing seventh sentence")
    return errors


def half_split(n: int) -> dict[str, int]:
    """The split of ``n`` people without celebrities: half each; with odd ``n`` P_test has the extra
    person (biolab.data.people.sample_people)."""
    return {k: v for k, v in (("train", n // 2), ("test", n - n // 2)) if v}


def _group_formats(cfg: dict) -> dict[str, tuple[str, int, bool]]:
    """A celebrity dataset's groups: group -> (the split its people must have, bios per person,
    fullname), from meta.json's config alone."""
    return {
        CELEBRITY: (
            "train",
            entries_per_person(cfg["celebrity_multi"], cfg["celebrity_permute"]),
            cfg["celebrity_fullname"],
        ),
        MINORITY: ("test", entries_per_person(cfg["multi"], cfg["permute"]), cfg["fullname"]),
    }


def _check_groups(people: dict, cfg: dict, formats: dict, problem) -> None:
    """Groups, splits, group sizes and disjoint names of a celebrity dataset's people."""
    names: dict[str, set[str]] = {g: set() for g in GROUPS}
    for p in people.values():
        g = p["group"]
        if g not in formats:
            problem(f"person {p['id']}: group {g!r} is not one of {GROUPS}")
            continue
        names[g].add(p["full_name"])
        if p["split"] != formats[g][0]:
            problem(f"person {p['id']}: {g} in split {p['split']!r}, expected {formats[g][0]!r}")
    for name in sorted(names[CELEBRITY] & names[MINORITY]):
        problem(f"full name {name!r} is both a celebrity's and a minority person's")
    sizes = Counter(p["group"] for p in people.values())
    for g, want in ((MINORITY, cfg["n_people"]), (CELEBRITY, cfg["n_celebrities"])):
        if sizes[g] != want:
            problem(f"{sizes[g]} {g} people, expected {want}")


def biod_chunks(value: str, b: BioDConfig) -> list[str]:
    """A bioD value's chunks: joined by ", ", or by " " when a chunk is one symbol."""
    return value.split(", " if b.L > 1 else " ")


def biod_value_errors(chunk_texts: list[str], b: BioDConfig) -> list[str]:
    """How a bioD value (its chunks) breaks Definition 2.2's shape: C chunks of L symbols, each
    symbol one fixed-width lower-case word naming one of T letters."""
    chunks = [c.split(" ") for c in chunk_texts]
    width = symbol_width(b.T)
    errors = []
    if len(chunks) != b.C or any(len(c) != b.L for c in chunks):
        errors.append(
            f"{len(chunks)} chunks of {sorted({len(c) for c in chunks})} symbols, not {b.C} of {b.L}"
        )
    for sym in (s for c in chunks for s in c):
        index = sum((ord(ch) - ord("a")) * 26**i for i, ch in enumerate(reversed(sym)))
        if len(sym) != width or not sym.isascii() or not sym.isalpha() or not sym.islower() or index >= b.T:
            errors.append(f"symbol {sym!r} is not one of T={b.T} ({width} letters)")
            break
    return errors


def _check_biod_values(people: dict, attrs: list[str], b: BioDConfig, problem) -> dict[str, int]:
    """Every value's shape, and per attribute its vocabulary: at most D distinct chunks in use."""
    used: dict[str, set[str]] = {a: set() for a in attrs}
    for p in people.values():
        for a in attrs:
            chunks = biod_chunks(p[a], b)
            for err in biod_value_errors(chunks, b):
                problem(f"person {p['id']}: {a} {p[a]!r}: {err}")
            used[a].update(chunks)
    for a, chunks in used.items():
        if len(chunks) > b.D:
            problem(f"{a}: {len(chunks)} distinct chunks in use, more than D={b.D}")
    return {a: len(c) for a, c in used.items()}


def check_dataset(directory: str | Path, max_problems: int = 20) -> tuple[list[str], dict]:
    """The problems of the dataset folder (at most ``max_problems``) and its counts; a celebrity
    dataset (Result 6) is checked group by group, each against its own format; a bioD dataset
    (Part 3.3) against its K attributes and chunk vocabularies instead of the six."""
    directory = Path(directory)
    problems: list[str] = []

    def problem(msg: str) -> None:
        if len(problems) < max_problems:
            problems.append(msg)

    meta = verify_dataset(directory)
    cfg = meta["config"]
    biod = BioDConfig.from_dict(cfg.get("biod")) if cfg.get("style") == "bioD" else None
    attrs = list(meta.get("attributes", ATTRIBUTES))  # written since bioD; before it, the six
    people = {p["id"]: p for p in iter_jsonl(directory / "people.jsonl")}
    names = Counter(p["full_name"] for p in people.values())
    for name, k in names.items():
        if k > 1:
            problem(f"full name {name!r} used {k} times")
    hq: dict[str, str] = {}
    for p in people.values():
        if biod is None and hq.setdefault(p["company"], p["company_city"]) != p["company_city"]:
            problem(f"company {p['company']!r} has two cities")
        if p["full_name"] != f"{p['first_name']} {p['middle_name']} {p['last_name']}":
            problem(f"person {p['id']}: full_name does not join the name parts")
    splits = Counter(p["split"] for p in people.values())
    # datasets written before celebrities existed lack the key
    formats = _group_formats(cfg) if cfg.get("n_celebrities", 0) else None
    if formats is not None:
        _check_groups(people, cfg, formats, problem)
    elif dict(splits) != (want := half_split(len(people))):
        found = dict(sorted(splits.items(), reverse=True))  # train first, as in want
        problem(f"split is not half/half (with odd n, P_test has one more): {found}, expected {want}")

    def fullname_of(p: dict) -> bool:
        if formats is None or p["group"] not in formats:
            return cfg["fullname"]
        return formats[p["group"]][2]

    entries = Counter()
    name_counts = Counter()
    for b in iter_jsonl(directory / "bios.jsonl"):
        p = people[b["person_id"]]
        text, spans = b["text"], b["spans"]
        entries[b["person_id"]] += 1
        if any(not 0 <= s <= e <= len(text) for s, e in (spans[a] for a in attrs)):
            problem(f"bio {b['person_id']}/{b['entry']}: an attribute span lies outside the text")
            continue
        for a in attrs:
            s, e = spans[a]
            if text[s:e] != p[a]:
                problem(f"bio {b['person_id']}/{b['entry']}: span {a} is {text[s:e]!r}, not {p[a]!r}")
        n_name = text.count(p["full_name"])
        if n_name != len(spans["name"]) or any(text[s:e] != p["full_name"] for s, e in spans["name"]):
            problem(f"bio {b['person_id']}/{b['entry']}: name spans do not match the text")
        if cfg.get("reverse", 0):  # datasets written before reverse existed lack the key
            for err in reverse_errors(text, spans, p, cfg["reverse"]):
                problem(f"bio {b['person_id']}/{b['entry']}: {err}")
        elif not text.startswith(p["full_name"]):
            problem(f"bio {b['person_id']}/{b['entry']}: does not start with the full name")
        if biod is not None and (n_sent := count_sentences(text, spans)) != biod.K:
            problem(f"bio {b['person_id']}/{b['entry']}: {n_sent} sentences, not K={biod.K}")
        if fullname_of(p):
            n_sent = count_sentences(text, spans)
            if n_name != n_sent:
                problem(f"bio {b['person_id']}/{b['entry']}: {n_name} names in {n_sent} sentences")
        elif n_name != 1 and cfg.get("style") != LLM_STYLE:  # a model may name the person again
            problem(f"bio {b['person_id']}/{b['entry']}: full name occurs {n_name} times")
        name_counts[n_name] += 1
        for err in agreement_errors(text):
            problem(f"bio {b['person_id']}/{b['entry']}: agreement error {err!r}")
    per = meta["counts"]["entries_per_person"]
    for pid, p in people.items():
        want = formats[p["group"]][1] if formats is not None and p["group"] in formats else per
        if entries[pid] != want:
            problem(f"person {pid}: {entries[pid]} bios, expected {want}")
    groups = None
    if formats is not None:
        groups = {g: {"people": 0, "bios": 0} for g in GROUPS}
        for pid, p in people.items():
            if p["group"] in groups:
                groups[p["group"]]["people"] += 1
                groups[p["group"]]["bios"] += entries[pid]
        written = meta["counts"].get("groups", {})
        for g in GROUPS:
            mine = {**groups[g], "entries_per_person": formats[g][1]}
            if written.get(g) != mine:
                problem(f"meta.json counts.groups.{g} is {written.get(g)}, the files give {mine}")

    qa = Counter()
    for q in iter_jsonl(directory / "qa.jsonl"):
        p = people[q["person_id"]]
        qa[q["person_id"]] += 1
        if q["answer"] != p[q["attribute"]] or q["split"] != p["split"]:
            problem(f"qa {q['person_id']}/{q['attribute']}: answer or split differs from people")
        if p["full_name"] not in q["question"]:
            problem(f"qa {q['person_id']}/{q['attribute']}: question lacks the full name")
    if any(qa[pid] != len(attrs) for pid in people):
        problem(f"some person does not have exactly {len(attrs)} QA pairs (one per attribute)")
    stats = {
        "people": len(people),
        "bios": sum(entries.values()),
        "names_per_bio": dict(sorted(name_counts.items())),
        "splits": dict(splits),
    }
    if groups is not None:
        stats["groups"] = groups
    if biod is not None:
        stats["chunks_in_use"] = _check_biod_values(people, attrs, biod, problem)
    return problems, stats
