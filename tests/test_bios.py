import json
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from biolab.data.bios import (
    PAIRS,
    bioS_jsonl,
    bios_jsonl,
    plan_bios_bioS,
    render_bio,
    render_bios_bioR,
    render_bios_bioS,
)
from biolab.data.check import agreement_errors, mask_values
from biolab.data.people import ATTRIBUTES, sample_people
from biolab.data.templates import TemplateSet, parse_template


@pytest.fixture(scope="module")
def people(pools):
    return sample_people(60, seed=1, pools=pools)


def rng():
    return np.random.default_rng(0)


def attribute_order(bio):
    return sorted(ATTRIBUTES, key=lambda a: bio.spans[a][0])


def sentences(bio):
    return re.split(r"(?<=\.) (?=[A-Z])", mask_values(bio.text, bio.spans))


def assert_sound(bio, person, fullname):
    for a in ATTRIBUTES:
        s, e = bio.spans[a]
        assert bio.text[s:e] == person.value(a)
    assert all(bio.text[s:e] == person.full_name for s, e in bio.spans["name"])
    assert bio.text.count(person.full_name) == len(bio.spans["name"])
    assert bio.text.startswith(person.full_name)
    if fullname:
        assert len(bio.spans["name"]) == len(sentences(bio))
    else:
        assert len(bio.spans["name"]) == 1


@pytest.mark.parametrize("fullname", [False, True])
def test_single_has_six_sentences_in_the_paper_order(people, bioS_templates, fullname):
    bios = render_bios_bioS(people, bioS_templates, rng(), fullname=fullname)
    assert len(bios) == len(people)
    for bio, person in zip(bios, people, strict=True):
        assert_sound(bio, person, fullname)
        assert attribute_order(bio) == list(ATTRIBUTES)
        assert len(sentences(bio)) == 6
        assert len(bio.spans["name"]) == (6 if fullname else 1)


def test_permute_reorders_the_same_sentences(people, bioS_templates):
    bios = render_bios_bioS(people, bioS_templates, rng(), permute=5)
    assert [b.entry for b in bios[:5]] == [0, 1, 2, 3, 4]
    orders = set()
    for i, person in enumerate(people):
        entries = bios[5 * i : 5 * i + 5]
        # the same six sentences in each copy (for he/she the name and pronoun take one verb form)
        pronoun = person.pronoun.capitalize()
        masked = [sorted(s.replace(person.full_name, pronoun) for s in sentences(b)) for b in entries]
        if person.pronoun == "they":
            masked = [len(m) for m in masked]
        assert all(m == masked[0] for m in masked)
        for b in entries:
            assert_sound(b, person, False)
            orders.add(tuple(attribute_order(b)))
    assert len(orders) > 50


def test_multi_resamples_templates_and_keeps_order(people, bioS_templates):
    bios = render_bios_bioS(people, bioS_templates, rng(), multi=5)
    differ = 0
    for i, person in enumerate(people):
        entries = bios[5 * i : 5 * i + 5]
        differ += len({b.text for b in entries}) == 5
        for b in entries:
            assert_sound(b, person, False)
            assert attribute_order(b) == list(ATTRIBUTES)
    assert differ == len(people)


def test_multi_permute_fullname(people, bioS_templates):
    bios = render_bios_bioS(people, bioS_templates, rng(), multi=2, permute=1, fullname=True)
    assert len(bios) == 2 * len(people)
    for i, b in enumerate(bios):
        assert_sound(b, people[i // 2], True)
        assert len(b.spans["name"]) == 6
    assert len({tuple(attribute_order(b)) for b in bios}) > 10


def test_couple_keeps_pairs_together(people, bioS_templates):
    bios = render_bios_bioS(people, bioS_templates, rng(), permute=2, couple=True)
    seen = set()
    for b in bios:
        order = attribute_order(b)
        pairs = [tuple(order[k : k + 2]) for k in (0, 2, 4)]
        assert sorted(pairs) == sorted(PAIRS)
        seen.add(tuple(pairs))
    assert len(seen) == 6  # all 3! pair orders occur


def test_value_ending_in_a_period_gets_no_second_one(people, bioS_templates):
    person = replace(people[0], company="Dow Inc.", company_city="Midland, MI")
    bio = render_bio(person, [bioS_templates[a][0] for a in ATTRIBUTES])
    assert ".." not in bio.text and "Dow Inc." in bio.text
    assert_sound(bio, person, False)


def test_bioS_shows_at_least_45_sentence_shapes_per_attribute(pools, bioS_templates):
    many = sample_people(2000, seed=0, pools=pools)
    bios = render_bios_bioS(many, bioS_templates, rng())
    shapes = {a: set() for a in ATTRIBUTES}
    for b, p in zip(bios, many, strict=True):
        for s in re.split(r"(?<=\.) (?=[A-Z][a-z]* )", b.text):
            for a in ATTRIBUTES:
                if p.value(a) in s:
                    masked = s.replace(p.value(a), "<V>").replace(p.full_name, "<N>")
                    masked = re.sub(
                        r"\b(he|she|they|his|her|their|him|them|himself|herself|"
                        r"themselves)\b",
                        "<P>",
                        masked,
                        flags=re.I,
                    )
                    masked = re.sub(r"\b(was|were|is|are|has|have|\w+s)\b", "<VERB>", masked)
                    shapes[a].add(masked)
                    break
    for a in ATTRIBUTES:
        assert len(shapes[a]) >= 45, (a, len(shapes[a]))


@pytest.mark.parametrize("fullname", [False, True])
def test_bioR_entries_are_freer_but_sound(people, bioR_templates, fullname):
    bios = render_bios_bioR(people, bioR_templates, rng(), multi=3, fullname=fullname)
    assert len(bios) == 3 * len(people)
    n_sentences, orders, connective = Counter(), set(), 0
    for i, b in enumerate(bios):
        assert_sound(b, people[i // 3], fullname)
        n_sentences[len(sentences(b))] += 1
        orders.add(tuple(attribute_order(b)))
        connective += any(s.split(",")[0] + "," in bioR_templates.connectives for s in sentences(b))
    assert len(n_sentences) >= 4  # merged clauses and fillers vary the length
    assert len(orders) > 30 and connective > 0


def test_bioR_without_merges_or_fillers_has_six_sentences(people, bioR_templates):
    bios = render_bios_bioR(people, bioR_templates, rng(), merge_prob=0.0, max_fillers=0)
    assert all(len(sentences(b)) == 6 for b in bios)


def test_hand_written_json_equals_json_dumps(people, bioS_templates):
    person = replace(
        people[0], university="University of Puerto Rico at Mayagüez", major='Say "Hi"\\ Studies'
    )
    bio = render_bio(person, [bioS_templates[a][3] for a in ATTRIBUTES], fullname=True)
    bio.entry = 4
    expected = {"person_id": bio.person_id, "entry": 4, "text": bio.text, "spans": bio.spans}
    assert bio.to_json() == json.dumps(expected, ensure_ascii=False)


def name_sentence(bio):
    """0-based index of the sentence holding the (single) full name."""
    masked = mask_values(bio.text, bio.spans)
    start = masked.index(bio.text[slice(*bio.spans["name"][0])])
    return len(re.findall(r"\.(?= [A-Z])", masked[: start + 1]))


@pytest.mark.parametrize(
    ("reverse", "multi", "permute"), [(1, 5, 0), (2, 5, 0), (6, 5, 0), (6, 5, 1), (3, 1, 2)]
)
def test_reverse_moves_the_name_and_keeps_spans(people, bioS_templates, reverse, multi, permute):
    bios = render_bios_bioS(people, bioS_templates, rng(), multi=multi, permute=permute, reverse=reverse)
    plain = render_bios_bioS(people, bioS_templates, rng(), multi=multi, permute=permute)
    per = multi * max(1, permute)
    assert len(bios) == len(plain) == per * len(people)
    for k, (bio, twin) in enumerate(zip(bios, plain, strict=True)):
        person = people[k // per]
        for a in ATTRIBUTES:
            s, e = bio.spans[a]
            assert bio.text[s:e] == person.value(a)
        (s, e), *more = bio.spans["name"]
        assert not more and bio.text[s:e] == person.full_name and bio.text.count(person.full_name) == 1
        parts = sentences(bio)
        assert name_sentence(bio) == reverse and len(parts) == (7 if reverse == 6 else 6)
        assert all(p.startswith("The person ") for p in parts[:reverse])
        assert person.first_name not in bio.text[:s]
        if reverse == 6:
            assert bio.text.endswith(f" This person's name is {person.full_name}.")
        else:
            assert parts[reverse].startswith(person.full_name + " ")
            assert all(p.startswith(person.pronoun.capitalize() + " ") for p in parts[reverse + 1 :])
        # the same random draws as the plain twin: only the subjects differ
        assert attribute_order(bio) == attribute_order(twin)
    assert not any(agreement_errors(b.text) for b in bios)
    if permute:
        assert len({tuple(attribute_order(b)) for b in bios}) > 50


def test_reverse_single_entry_and_verb_agreement(people, bioS_templates):
    person = next(p for p in people if p.pronoun == "they")
    templates = [bioS_templates["birth_date"][0], *(bioS_templates[a][0] for a in ATTRIBUTES[1:])]
    bio = render_bio(person, templates, reverse=1)
    first, second = sentences(bio)[:2]
    assert first == "The person was born on <V>."  # singular, unlike "They were born"
    assert second.startswith(person.full_name + " was ")
    start = bio.text.index(". ") + 2
    assert bio.spans["name"] == [[start, start + len(person.full_name)]]
    last = render_bio(person, templates, reverse=6)
    assert last.text.startswith("The person was born on ") and name_sentence(last) == 6


def awkward(people):
    """People whose values need JSON escapes or end in a "." (also the name, for a template below)."""
    return [
        replace(people[0], company="Dow Inc.", major='Say "Hi"\\ St\tudies'),
        replace(people[1], full_name='Jo "A" Smith.', university="University of Puerto Rico at Mayagüez"),
        *people[2:],
    ]


@pytest.mark.parametrize(
    ("multi", "permute", "fullname", "couple", "reverse"),
    [(1, 0, False, False, 0), (1, 0, True, False, 0), (5, 1, True, False, 0), (2, 3, False, True, 0),
     (5, 0, False, False, 1), (2, 2, False, False, 3), (5, 1, False, False, 6)],
)  # fmt: skip
def test_chunk_lines_at_once_equal_each_bio_to_json(
    people, bioS_templates, multi, permute, fullname, couple, reverse
):
    who = awkward(people)
    args = (multi, permute, fullname, couple, reverse)
    want = bios_jsonl(render_bios_bioS(who, bioS_templates, rng(), *args))
    plan = plan_bios_bioS(who, bioS_templates, rng(), *args)
    assert bioS_jsonl(who, plan) == want
    assert bioS_jsonl(who, replace(plan, parts=None)) == want  # the entry-by-entry way it falls back to
    bios = [json.loads(line) for line in want[0].splitlines()]
    assert want[1] == [len(b["text"]) for b in bios] and want[2] == [len(b["text"].split(" ")) for b in bios]


def test_chunk_lines_absorb_a_period_after_the_name_too(people):
    """A name ending in "." before a template's "." (no shipped template has one)."""
    odd = TemplateSet(
        "bioS", {(a,): [parse_template(f"{{subject}}. Of {{{a}}}.", (a,), "t", "bioS")] for a in ATTRIBUTES}
    )
    who = awkward(people)[:4]
    plan = plan_bios_bioS(who, odd, rng(), multi=2, fullname=True)
    lines, _, _ = bioS_jsonl(who, plan)
    assert lines == bios_jsonl(render_bios_bioS(who, odd, rng(), multi=2, fullname=True))[0]
    assert 'Jo \\"A\\" Smith. Of ' in lines and ".." not in lines
