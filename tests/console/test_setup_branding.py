"""The portal's own name and words for staff: invitations (text and HTML), the pages their
link opens, and the password-reset pages and mail never say "Django administration"."""

import re

import pytest
from django.urls import reverse

from portal.models import Invitation
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

STAFF_PAGES = [
    "/admin/login/",
    "/admin/password_reset/",
    "/accounts/password_reset/",
    "/accounts/password_reset/done/",
    "/accounts/reset/done/",
    "/accounts/reset/MQ/no-such-token/",
]


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_staff_pages_carry_the_portals_name(client, path):
    page = client.get(path, follow=True)
    html = page.content.decode()
    assert page.status_code == 200
    assert "Django" not in html
    assert re.search(r"<title>[^<]*\| Halo Partner Portal</title>", html)
    assert '<div id="site-name"><a href="/admin/">Halo Partner Portal</a></div>' in html


def test_a_logged_in_password_change_is_branded(personas):
    page = personas.client(personas.owner_a).get("/accounts/password_change/")
    assert "Django" not in page.content.decode()


def test_password_reset_mail_speaks_for_the_portal(client, personas, mailoutbox):
    client.post("/accounts/password_reset/", {"email": personas.owner_a.email})
    [message] = mailoutbox
    assert message.subject == "Choose a new password for Halo Partner Portal"
    assert "your Halo Partner Portal account (owner-a)" in message.body
    assert "Django" not in message.body


def test_the_invitation_is_the_portals_own_email_and_page(personas, client, mailoutbox):
    owner = personas.client(personas.owner_a)
    owner.post(
        reverse("admin:portal_invitation_add"), {"email": "new@example.com", "role": "admin"}
    )
    [message] = mailoutbox
    assert message.subject == f"You are invited to {personas.tenant_a.name} on Halo Partner Portal"
    link = re.search(r"https?://\S+/invitation/\S+/", message.body)[0]
    [(html, kind)] = message.alternatives
    assert kind == "text/html"
    assert f'href="{link}"' in html and "Accept the invitation" in html
    assert personas.tenant_a.name in html and "admin" in html and "Django" not in html

    page = client.get("/invitation/" + link.split("/invitation/", 1)[1])
    text = page.content.decode()
    assert "Choose a password" in text and "Halo Partner Portal" in text
    assert "Django" not in text and "password reset" not in text.lower()

    answer = client.post(
        "/invitation/" + link.split("/invitation/", 1)[1],
        {"new_password1": PASSWORD, "new_password2": PASSWORD},
    )
    assert answer.status_code == 302 and answer["Location"] == reverse("admin:index")
    assert Invitation.objects.get().accepted_at is not None
    home = client.get(answer["Location"]).content.decode()
    assert f"Set up {personas.tenant_a.name}" in home  # the guided setup greets them
