"""The paper's value pools (names, cities, universities, majors, companies), loaded and checked."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from biolab.errors import DataFileError

# The sizes of the lists the paper's authors released; a mismatch means a corrupted package.
EXPECTED_SIZES = {
    "first_name": 400,
    "middle_name": 400,
    "last_name": 1000,
    "city": 200,
    "university": 300,
    "major": 100,
    "company": 263,
}
FILES = {  # pool name -> file name (the release calls the majors "field")
    "first_name": "first_name.txt",
    "middle_name": "middle_name.txt",
    "last_name": "last_name.txt",
    "city": "city.txt",
    "university": "university.txt",
    "major": "field.txt",
    "company": "company.txt",
}
# "City, ST"; the release also has "Toronto, Canada" (an HQ) and "Washington D.C." (a birth city).
_CITY = re.compile(r"^\S.*(, \S.*|D\.C\.)$")


@dataclass(frozen=True)
class Pools:
    first_name: tuple[str, ...]
    middle_name: tuple[str, ...]
    last_name: tuple[str, ...]
    city: tuple[str, ...]
    university: tuple[str, ...]
    major: tuple[str, ...]
    company: tuple[str, ...]
    company_city: tuple[str, ...]  # headquarters city of company[i]

    @property
    def n_names(self) -> int:
        """Number of distinct full names (first x middle x last)."""
        return len(self.first_name) * len(self.middle_name) * len(self.last_name)


def default_pool_dir() -> Path:
    return Path(str(resources.files("biolab.data") / "pools"))


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFileError(f"{path}: pool file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path}: not UTF-8 ({err})") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    seen: dict[str, int] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip() or line != line.strip():
            raise DataFileError(f"{path}:{i}: empty value or stray whitespace: {line!r}")
        if line in seen:
            raise DataFileError(f"{path}:{i}: duplicate value {line!r} (first on line {seen[line]})")
        seen[line] = i
    return lines


def load_pools(directory: str | Path | None = None, check_sizes: bool = True) -> Pools:
    """Load all pools from ``directory`` (default: the package's copy of the paper's lists).

    ``check_sizes`` compares each list with the paper's size; turn it off for custom pools.
    """
    root = Path(directory) if directory is not None else default_pool_dir()
    values: dict[str, list[str]] = {name: _read_lines(root / f) for name, f in FILES.items()}

    companies, hq = [], []
    for i, line in enumerate(values["company"], 1):
        name, sep, city = line.partition("; ")
        if not sep or not name or not _CITY.match(city):
            raise DataFileError(f"{root / FILES['company']}:{i}: expected 'Company; City, ST', got {line!r}")
        companies.append(name)
        hq.append(city)
    values["company"] = companies
    for i, city in enumerate(values["city"], 1):
        if not _CITY.match(city):
            raise DataFileError(f"{root / FILES['city']}:{i}: expected 'City, ST', got {city!r}")

    if check_sizes:
        for name, expected in EXPECTED_SIZES.items():
            if len(values[name]) != expected:
                raise DataFileError(
                    f"{root / FILES[name]}: expected {expected} values, found {len(values[name])}"
                )
    return Pools(**{k: tuple(v) for k, v in values.items()}, company_city=tuple(hq))


def limit_values(pools: Pools, k: int) -> Pools:
    """Keep ``k`` evenly spread values of each attribute pool (cities, universities, majors, companies
    with their headquarters); names stay whole. A probe trained on a few hundred people sees each class
    of a 300-value pool about once, so small-scale probing runs shrink the pools instead."""
    if k < 2:
        raise ValueError(f"keep at least 2 values per pool, got {k}")

    def spread(n: int) -> list[int]:  # evenly spaced, not the first k: the lists are ordered
        return [(n * i) // k for i in range(k)] if k < n else list(range(n))

    def keep(values: tuple[str, ...], picked: list[int]) -> tuple[str, ...]:
        return tuple(values[i] for i in picked)

    company = spread(len(pools.company))
    return replace(
        pools,
        city=keep(pools.city, spread(len(pools.city))),
        university=keep(pools.university, spread(len(pools.university))),
        major=keep(pools.major, spread(len(pools.major))),
        company=keep(pools.company, company),
        company_city=keep(pools.company_city, company),
    )
