"""Staff join a tenant by invitation (pentest #12, finding 13): an owner could attach any
existing user to their tenant by email, which also made them staff. Now the owner invites,
and nothing changes for the invited person until they accept from the emailed link."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.models import Invitation, Membership
from tests import factories
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

INVITE = reverse("admin:portal_invitation_add")


@pytest.fixture(autouse=True)
def _mail(mailoutbox):
    """Mail goes to the test outbox (the links are read from it)."""


def invite(personas, email, role="admin"):
    """Owner A invites `email`; answers the link the email carries."""
    response = personas.client(personas.owner_a).post(INVITE, {"email": email, "role": role})
    assert response.status_code == 302, response.content.decode()[:2000]
    return link_in(Invitation.objects.get(email__iexact=email))


def link_in(invitation):
    from django.core import mail

    [message] = [m for m in mail.outbox if m.to == [invitation.email]][-1:]
    return re.search(r"https?://\S+/invitation/\S+/", message.body)[0]


def path_of(link):
    return "/invitation/" + link.split("/invitation/", 1)[1]


def tenants_of(user):
    return set(Membership.objects.filter(user=user).values_list("tenant__slug", flat=True))


def test_inviting_an_existing_user_of_another_tenant_changes_nothing_until_accepted(personas):
    link = path_of(invite(personas, personas.owner_b.email.upper()))
    assert tenants_of(personas.owner_b) == {"bravo"}  # no membership of A yet
    client_b = personas.client(personas.owner_b)
    client_b.post(reverse("admin:switch_tenant"), {"tenant": personas.tenant_a.pk})
    home = client_b.get(reverse("admin:index")).content.decode()
    assert personas.tenant_a.name not in home

    page = client_b.get(link)
    assert page.status_code == 200 and "Accept the invitation" in page.content.decode()
    assert tenants_of(personas.owner_b) == {"bravo"}  # looking is not accepting

    accepted = client_b.post(link)
    assert accepted.status_code == 302 and accepted["Location"] == reverse("admin:index")
    member = Membership.objects.get(user=personas.owner_b, tenant=personas.tenant_a)
    assert member.role == "admin"
    home = client_b.get(reverse("admin:index")).content.decode()
    assert f"{personas.tenant_a.name} · at a glance" in home  # the new tenant is active

    # The link works once.
    assert client_b.post(link).status_code == 404
    assert Membership.objects.filter(user=personas.owner_b).count() == 2
    invitation = Invitation.objects.get()
    assert invitation.accepted_by == personas.owner_b and invitation.accepted_at


def test_a_non_staff_user_is_made_staff_only_by_accepting(personas):
    outsider = User.objects.create_user("outsider", "outsider@example.com", PASSWORD)
    link = path_of(invite(personas, "outsider@example.com", role="viewer"))
    outsider.refresh_from_db()
    assert not outsider.is_staff and not tenants_of(outsider)

    browser = Client()
    page = browser.get(link)
    assert "Enter its password to accept" in page.content.decode()
    wrong = browser.post(link, {"password": "not-it"})
    assert wrong.status_code == 400 and not tenants_of(outsider)
    accepted = browser.post(link, {"password": PASSWORD})
    assert accepted.status_code == 302
    outsider.refresh_from_db()
    assert outsider.is_staff and tenants_of(outsider) == {"alpha"}
    assert browser.get(reverse("admin:index")).status_code == 200  # logged in


def test_only_the_invited_account_can_accept(personas):
    link = path_of(invite(personas, personas.owner_b.email))
    intruder = make_user("intruder@example.com")
    refused = personas.client(intruder).post(link)
    assert refused.status_code == 403
    assert "This invitation is for someone else" in refused.content.decode()
    assert not tenants_of(intruder) and tenants_of(personas.owner_b) == {"bravo"}
    # Still usable by the invited account.
    assert personas.client(personas.owner_b).post(link).status_code == 302


def test_someone_new_chooses_a_password_on_a_portal_page(personas):
    link = path_of(invite(personas, "new.person@example.com"))
    browser = Client()
    page = browser.get(link)
    body = page.content.decode()
    assert page.status_code == 200 and "Choose a password" in body
    assert "Halo Partner Portal" in body and personas.tenant_a.name in body
    assert "password reset" not in body.lower() and "reset" not in page.templates[0].name
    assert not User.objects.filter(email="new.person@example.com").exists()

    mismatch = browser.post(link, {"new_password1": "x7-long-horse", "new_password2": "other"})
    assert mismatch.status_code == 400
    assert not User.objects.filter(email="new.person@example.com").exists()

    password = "violet-harbour-1987"
    created = browser.post(link, {"new_password1": password, "new_password2": password})
    assert created.status_code == 302
    user = User.objects.get(email="new.person@example.com")
    assert user.is_staff and user.check_password(password)
    assert tenants_of(user) == {"alpha"}
    assert browser.get(reverse("admin:index")).status_code == 200
    # Used: the link cannot make a second account or reset this one's password.
    again = Client().post(
        link, {"new_password1": "a-b-c-d-e-f-1", "new_password2": "a-b-c-d-e-f-1"}
    )
    assert again.status_code == 404
    user.refresh_from_db()
    assert user.check_password(password)


def test_expired_unknown_and_replaced_links_are_refused(personas):
    old = path_of(invite(personas, "late@example.com"))
    new = path_of(invite(personas, "late@example.com"))  # invited again: the first link dies
    assert Client().get(old).status_code == 404
    Invitation.objects.update(expires=timezone.now())
    for link in (new, "/invitation/not-a-token/"):
        page = Client().get(link)
        assert page.status_code == 404 and "no longer works" in page.content.decode()
        assert Client().post(link, {"new_password1": "a" * 12, "new_password2": "a" * 12})
    assert not User.objects.filter(email="late@example.com").exists()


def test_tokens_are_stored_hashed():
    tenant = factories.tenant("charlie")
    invitation = factories.invitation(tenant)
    stored = str(list(Invitation.objects.values().get().values()))
    assert invitation.token not in stored
    assert Invitation.find(invitation.token) == invitation
    assert len(invitation.token) >= 40  # 256 random bits


def test_owners_only_invite_and_members_cannot_be_invited_twice(personas):
    viewer = personas.client(personas.viewer_a)
    assert viewer.post(INVITE, {"email": "x@example.com", "role": "owner"}).status_code == 403
    again = personas.client(personas.owner_a).post(
        INVITE, {"email": personas.viewer_a.email, "role": "admin"}
    )
    assert again.status_code == 200 and "already a member" in again.content.decode()
    assert not Invitation.objects.exists()


def test_the_email_says_who_invited_whom_to_what(personas, mailoutbox):
    invite(personas, "someone@example.com", role="viewer")
    [message] = mailoutbox
    assert message.to == ["someone@example.com"]
    assert personas.tenant_a.name in message.subject
    assert "owner-a@example.com invited you" in message.body and "as viewer" in message.body
    assert "Nothing changes for you until you accept" in message.body


def make_user(email):
    return User.objects.create_user(email, email, PASSWORD, is_staff=True)
