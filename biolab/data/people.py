"""Sampling the synthetic population: unique full names and six uniformly drawn attributes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from json.encoder import encode_basestring
from operator import attrgetter

import numpy as np

from biolab.data.pools import Pools
from biolab.errors import ConfigError

# The six attributes, in the paper's default sentence order.
ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "company", "company_city")
PRONOUNS = ("he", "she", "they")
# P_train and P_test: every person is in one, half in each (odd n: P_test has one more; celebrity
# datasets: by group); QA finetuning sees P_train only
SPLITS = ("train", "test")
# The two groups of a celebrity dataset (paper Result 6): celebrities, with many bios each, are the
# QA-finetuning (train) people; the minority, with the few bios of the main format, is tested on.
CELEBRITY, MINORITY = "celebrity", "minority"
GROUPS = (CELEBRITY, MINORITY)
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
YEARS = (1900, 2099)  # inclusive
DAYS = 28  # days 1..28 keep every (month, day) valid

# Independent random streams, so that e.g. the split never moves when names are re-drawn. The
# celebrities have streams of their own: adding them leaves the minority as the people it would be
# without them. (bios.py uses 3; a stream seeded [seed, k, 0] equals [seed, k], so no k is shared.)
STREAM_NAMES, STREAM_ATTRIBUTES, STREAM_SPLIT = 0, 1, 2
STREAM_CELEBRITY_NAMES, STREAM_CELEBRITY_ATTRIBUTES = 4, 5


@dataclass(frozen=True)
class Person:
    id: int
    first_name: str
    middle_name: str
    last_name: str
    full_name: str
    pronoun: str
    birth_date: str
    birth_city: str
    university: str
    major: str
    company: str
    company_city: str
    split: str
    group: str = "main"

    def to_dict(self) -> dict:
        return dict(self.__dict__)  # field order; dataclasses.asdict deep-copies and is 5x slower

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)

    @property
    def birth_month(self) -> str:
        return self.birth_date.split(" ", 1)[0]


def people_jsonl(people: list[Person]) -> str:
    """``json.dumps(p.to_dict(), ensure_ascii=False)`` of each person, one a line; by hand (json.dumps
    builds an encoder per call), for the field types of Person: the id an int, every other a string."""
    fields = [f.name for f in dataclasses.fields(Person)]
    assert fields[0] == "id"
    line = "{" + ", ".join(f'"{f}": %{"d" if f == "id" else "s"}' for f in fields) + "}\n"
    strings = attrgetter(*fields[1:])
    return "".join(line % (p.id, *map(encode_basestring, strings(p))) for p in people)


def format_date(year: int, month: int, day: int) -> str:
    """The paper's rendering, e.g. ``October 2, 1996`` (month is 1-based)."""
    return f"{MONTHS[month - 1]} {day}, {year}"


def _unique_name_codes(
    n: int, sizes: tuple[int, int, int], rng: np.random.Generator, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Rejection sampling: draw (first, middle, last) uniformly, keep the first of each duplicate;
    codes in ``exclude`` (names another group holds) are rejected too."""
    total = sizes[0] * sizes[1] * sizes[2]
    taken = 0 if exclude is None else len(exclude)
    codes = np.empty(0, dtype=np.int64)
    while len(codes) < n:
        need = n - len(codes)
        # Expected duplicates are few unless n approaches the name space; oversample a little.
        draw = max(int(need * (1 + 2 * (n + taken) / total)) + 16, need)
        fresh = rng.integers(0, total, size=draw, dtype=np.int64)
        if taken:
            fresh = fresh[~np.isin(fresh, exclude)]
        codes = np.concatenate([codes, fresh])
        _, first = np.unique(codes, return_index=True)
        codes = codes[np.sort(first)]
    return codes[:n]


def _name_sizes(pools: Pools) -> tuple[int, int, int]:
    return len(pools.first_name), len(pools.middle_name), len(pools.last_name)


def _build_people(
    codes: np.ndarray, rng: np.random.Generator, pools: Pools, splits: list[str], group: str, first_id: int
) -> list[Person]:
    """People with the names ``codes`` (ids from ``first_id``) and attributes drawn uniformly from
    ``rng``, in a fixed order of draws: the same rng state gives the same people."""
    n = len(codes)
    sizes = _name_sizes(pools)
    first, rest = np.divmod(codes, sizes[1] * sizes[2])
    middle, last = np.divmod(rest, sizes[2])

    pronoun = rng.integers(0, len(PRONOUNS), n)
    year = rng.integers(YEARS[0], YEARS[1] + 1, n)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, DAYS + 1, n)
    city = rng.integers(0, len(pools.city), n)
    university = rng.integers(0, len(pools.university), n)
    major = rng.integers(0, len(pools.major), n)
    company = rng.integers(0, len(pools.company), n)

    people = []
    for i in range(n):
        f, m, la = pools.first_name[first[i]], pools.middle_name[middle[i]], pools.last_name[last[i]]
        people.append(
            Person(
                id=first_id + i,
                first_name=f,
                middle_name=m,
                last_name=la,
                full_name=f"{f} {m} {la}",
                pronoun=PRONOUNS[pronoun[i]],
                birth_date=format_date(int(year[i]), int(month[i]), int(day[i])),
                birth_city=pools.city[city[i]],
                university=pools.university[university[i]],
                major=pools.major[major[i]],
                company=pools.company[company[i]],
                company_city=pools.company_city[company[i]],
                split=splits[i],
                group=group,
            )
        )
    return people


def _check_population(n: int, pools: Pools) -> None:
    if n < 2:
        raise ConfigError(f"n_people must be >= 2 (a train and a test person), got {n}")
    if n > pools.n_names:
        raise ConfigError(f"n_people={n} exceeds the {pools.n_names} distinct full names the pools allow")


def _minority_codes(n: int, seed: int, pools: Pools) -> np.ndarray:
    return _unique_name_codes(n, _name_sizes(pools), np.random.default_rng([seed, STREAM_NAMES]))


def sample_people(n: int, seed: int, pools: Pools, group: str = "main") -> list[Person]:
    """``n`` people with unique full names; attributes uniform; exactly half train, half test.

    With odd ``n`` the test half has the extra person. The same (n, seed, pools) gives the same
    people on any machine.
    """
    _check_population(n, pools)
    codes = _minority_codes(n, seed, pools)
    is_train = np.zeros(n, dtype=bool)
    is_train[np.random.default_rng([seed, STREAM_SPLIT]).permutation(n)[: n // 2]] = True
    splits = [SPLITS[0] if t else SPLITS[1] for t in is_train.tolist()]
    return _build_people(codes, np.random.default_rng([seed, STREAM_ATTRIBUTES]), pools, splits, group, 0)


def sample_groups(n_minority: int, n_celebrities: int, seed: int, pools: Pools) -> list[Person]:
    """A celebrity dataset's people, the minority first: ``sample_people(n_minority, seed, pools)``
    (same ids, names and attributes) as group MINORITY, all split "test"; then ``n_celebrities``
    celebrities, ids from ``n_minority``, group CELEBRITY, all split "train", with full names no
    minority person has and attributes from streams of their own."""
    _check_population(n_minority, pools)
    if n_celebrities < 1:
        raise ConfigError(f"n_celebrities must be >= 1 for a celebrity dataset, got {n_celebrities}")
    if n_minority + n_celebrities > pools.n_names:
        raise ConfigError(
            f"n_people + n_celebrities = {n_minority + n_celebrities} exceeds the {pools.n_names} "
            "distinct full names the pools allow"
        )
    # the split stream is not drawn: every minority person is a test person
    minority_codes = _minority_codes(n_minority, seed, pools)
    minority = _build_people(
        minority_codes, np.random.default_rng([seed, STREAM_ATTRIBUTES]), pools,
        [SPLITS[1]] * n_minority, MINORITY, 0,
    )  # fmt: skip
    celebrity_codes = _unique_name_codes(
        n_celebrities, _name_sizes(pools), np.random.default_rng([seed, STREAM_CELEBRITY_NAMES]),
        exclude=minority_codes,
    )  # fmt: skip
    celebrities = _build_people(
        celebrity_codes, np.random.default_rng([seed, STREAM_CELEBRITY_ATTRIBUTES]), pools,
        [SPLITS[0]] * n_celebrities, CELEBRITY, n_minority,
    )  # fmt: skip
    return minority + celebrities
