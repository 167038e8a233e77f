import json
import re
from collections import Counter
from dataclasses import replace

import pytest

from biolab.data.people import ATTRIBUTES, PRONOUNS, format_date, people_jsonl, sample_people
from biolab.errors import ConfigError

DATE = re.compile(
    r"^(January|February|March|April|May|June|July|August|September|October"
    r"|November|December) ([1-9]|1\d|2[0-8]), (19\d\d|20\d\d)$"
)


def test_format_date_matches_paper():
    assert format_date(1996, 10, 2) == "October 2, 1996"


def test_people_are_unique_valid_and_split_in_half(pools):
    people = sample_people(2001, seed=3, pools=pools)
    assert [p.id for p in people] == list(range(2001))
    assert len({p.full_name for p in people}) == 2001
    split = Counter(p.split for p in people)
    assert split == {"train": 1000, "test": 1001}
    hq = dict(zip(pools.company, pools.company_city, strict=True))
    for p in people:
        assert p.full_name == f"{p.first_name} {p.middle_name} {p.last_name}"
        assert DATE.match(p.birth_date), p.birth_date
        assert p.birth_city in pools.city and p.university in pools.university
        assert p.major in pools.major and p.company_city == hq[p.company]
        assert p.pronoun in PRONOUNS and p.group == "main"
        assert set(ATTRIBUTES) <= set(p.to_dict())
    assert set(Counter(p.pronoun for p in people)) == set(PRONOUNS)


def test_attributes_are_roughly_uniform(pools):
    people = sample_people(20000, seed=0, pools=pools)
    months = Counter(p.birth_month for p in people)
    assert len(months) == 12 and min(months.values()) > 20000 / 12 * 0.85
    pron = Counter(p.pronoun for p in people)
    assert min(pron.values()) > 20000 / 3 * 0.9
    years = [int(p.birth_date[-4:]) for p in people]
    assert min(years) == 1900 and max(years) == 2099


def test_same_seed_same_people_other_seed_different(pools):
    a = sample_people(500, 7, pools)
    assert a == sample_people(500, 7, pools)
    assert a != sample_people(500, 8, pools)
    assert sample_people(10, 7, pools, group="celebrity")[0].group == "celebrity"


def test_rejection_sampling_fills_a_tiny_name_space(pools):
    tiny = replace(
        pools,
        first_name=pools.first_name[:2],
        middle_name=pools.middle_name[:2],
        last_name=pools.last_name[:3],
    )
    people = sample_people(12, 0, tiny)  # every one of the 12 possible names
    assert len({p.full_name for p in people}) == 12
    with pytest.raises(ConfigError, match="exceeds the 12 distinct full names"):
        sample_people(13, 0, tiny)


@pytest.mark.parametrize("n", [-1, 0, 1])
def test_too_few_people_is_an_error(pools, n):
    with pytest.raises(ConfigError, match="n_people must be >= 2"):
        sample_people(n, 0, pools)


def test_people_lines_by_hand_equal_json_dumps(pools):
    people = sample_people(5, 0, pools)
    people[1] = replace(people[1], full_name='Zoë "Q"\tDoe', major="A\\B", group="x/y")
    assert people_jsonl(people) == "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in people)
