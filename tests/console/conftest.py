"""Job pages (portal/job_pages.py): the billing sync world of tests/billing_sync, and staff."""

import pytest
from django.test import Client

from portal.models import Membership
from tests.billing_sync.conftest import _fast_retries, mapped, world  # noqa: F401
from tests.conftest import make_staff


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner(world):  # noqa: F811
    """An owner of the world's tenant, logged in."""
    world.user = make_staff("owner", world.tenant, Membership.Role.OWNER)
    return logged_in(world.user)


@pytest.fixture
def viewer(world):  # noqa: F811
    return logged_in(make_staff("viewer", world.tenant, Membership.Role.VIEWER))


@pytest.fixture
def outsider(world):  # noqa: F811
    """The owner of another tenant."""
    from tests import factories

    return logged_in(make_staff("outsider", factories.tenant("bravo"), Membership.Role.OWNER))
