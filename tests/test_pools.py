import shutil

import pytest

from biolab.data.pools import EXPECTED_SIZES, FILES, default_pool_dir, limit_values, load_pools
from biolab.errors import DataFileError


def test_paper_pools_load_with_expected_sizes(pools):
    for name, size in EXPECTED_SIZES.items():
        assert len(getattr(pools, name)) == size
    assert len(pools.company_city) == len(pools.company)
    assert pools.n_names == 400 * 400 * 1000


def test_company_city_is_headquarters(pools):
    i = pools.company.index("Abbott Laboratories")
    assert pools.company_city[i] == "Abbott Park, IL"
    # the paper's majority baseline for company city: 36 of 263 are in New York
    assert pools.company_city.count("New York, NY") == 36


def test_package_pools_are_lf_and_licensed():
    root = default_pool_dir()
    assert (root / "LICENSE").is_file() and (root / "NOTICE").is_file()
    for f in FILES.values():
        assert b"\r" not in (root / f).read_bytes()


@pytest.fixture()
def pool_copy(tmp_path):
    dst = tmp_path / "pools"
    shutil.copytree(default_pool_dir(), dst)
    return dst


def test_missing_pool_file_is_named(pool_copy):
    (pool_copy / "city.txt").unlink()
    with pytest.raises(DataFileError, match=r"city\.txt: pool file not found"):
        load_pools(pool_copy)


def test_bad_company_line_names_file_and_line(pool_copy):
    lines = (pool_copy / "company.txt").read_text().splitlines()
    lines[4] = "Acme Corporation without a city"
    (pool_copy / "company.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"company\.txt:5: expected 'Company; City, ST'"):
        load_pools(pool_copy)


def test_wrong_size_and_duplicates_are_errors(pool_copy):
    path = pool_copy / "field.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataFileError, match=r"field\.txt: expected 100 values, found 99"):
        load_pools(pool_copy)
    assert len(load_pools(pool_copy, check_sizes=False).major) == 99
    path.write_text("\n".join([*lines[:-1], lines[0]]) + "\n")
    with pytest.raises(DataFileError, match=r"field\.txt:100: duplicate value"):
        load_pools(pool_copy)


def test_limit_values_keeps_an_even_spread_and_company_headquarters(pools):
    small = limit_values(pools, 10)
    assert small.university == tuple(pools.university[i] for i in range(0, 300, 30))
    assert len(small.city) == len(small.major) == len(small.company) == 10
    hq = dict(zip(pools.company, pools.company_city, strict=True))
    assert all(hq[c] == city for c, city in zip(small.company, small.company_city, strict=True))
    assert (small.first_name, small.last_name) == (pools.first_name, pools.last_name)  # names stay whole
    assert limit_values(pools, 1000) == pools
    with pytest.raises(ValueError, match="at least 2"):
        limit_values(pools, 1)
