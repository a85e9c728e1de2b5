import pytest

from tests.browser.conftest import login
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_logs_in_and_sees_tenant_health(page, live_server, personas):
    login(page, live_server, personas.owner_a.username, PASSWORD)
    page.wait_for_selector("caption")
    assert f"{personas.tenant_a.name} · at a glance" in page.text_content("#content-main")
    assert personas.tenant_b.name not in page.content()


def test_switcher_changes_active_tenant(page, live_server, personas):
    from portal.models import Membership
    from tests import factories

    Membership.objects.create(user=personas.owner_a, tenant=personas.tenant_b, role="viewer")
    factories.organisation(personas.tenant_b, name="Bravo Customer")
    login(page, live_server, personas.owner_a.username, PASSWORD)
    page.goto(f"{live_server.url}/admin/portal/organisation/")
    page.select_option("#tenant-switch", str(personas.tenant_b.pk))
    page.wait_for_load_state()
    assert "Bravo Customer" in page.inner_text("#result_list")
