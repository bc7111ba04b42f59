"""Two tenants of the billing tests (tests.factories.tenant): an organization each, with an owner, an admin, a
member and an API key."""
import pytest

from tests.factories import tenant


@pytest.fixture
def acme():
    return tenant("acme")


@pytest.fixture
def globex():
    return tenant("globex")
