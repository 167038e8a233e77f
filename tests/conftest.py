import pytest

from biolab.data.pools import load_pools
from biolab.data.templates import load_templates


@pytest.fixture(scope="session")
def pools():
    return load_pools()


@pytest.fixture(scope="session")
def bioS_templates():
    return load_templates("bioS")


@pytest.fixture(scope="session")
def bioR_templates():
    return load_templates("bioR")
