import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import ApiToken


@pytest.mark.django_db
def test_token_is_stored_hashed_and_authenticates(personas):
    token, plaintext = ApiToken.issue(personas.tenant_a, ApiToken.Purpose.USAGE, "sync")
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert plaintext not in repr(stored)
    assert ApiToken.authenticate(plaintext, ApiToken.Purpose.USAGE) == token
    assert ApiToken.authenticate(plaintext, ApiToken.Purpose.PDF) is None
    assert ApiToken.authenticate(plaintext + "x", ApiToken.Purpose.USAGE) is None


@pytest.mark.django_db
def test_rotation_keeps_old_secret_for_the_overlap_then_expires(personas):
    old, old_plain = ApiToken.issue(personas.tenant_a, ApiToken.Purpose.PDF, "halo")
    new, new_plain = old.rotate(overlap=timezone.timedelta(hours=1))
    assert ApiToken.authenticate(old_plain, "pdf") == old
    assert ApiToken.authenticate(new_plain, "pdf") == new
    ApiToken.objects.filter(pk=old.pk).update(expires=timezone.now())
    assert ApiToken.authenticate(old_plain, "pdf") is None


@pytest.mark.django_db
def test_revoked_token_is_refused(personas):
    token, plaintext = ApiToken.issue(personas.tenant_a, ApiToken.Purpose.USAGE, "x")
    token.revoked = True
    token.save()
    assert ApiToken.authenticate(plaintext, "usage") is None


@pytest.mark.django_db
def test_admin_shows_plaintext_once(personas):
    client = personas.client(personas.owner_a)
    response = client.post(
        reverse("admin:portal_apitoken_add"), {"name": "RMM", "purpose": "usage"}
    )
    assert response.status_code == 200
    plaintext = response.context["plaintext"]
    assert plaintext.startswith("hpp_usage_") and plaintext in response.content.decode()
    token = ApiToken.objects.get(name="RMM")
    assert token.tenant == personas.tenant_a
    assert ApiToken.authenticate(plaintext, "usage") == token
    for page in (
        reverse("admin:portal_apitoken_changelist"),
        reverse("admin:portal_apitoken_change", args=[token.pk]),
    ):
        assert plaintext not in client.get(page).content.decode()


@pytest.mark.django_db
def test_rotate_action_shows_new_secret_once(personas):
    token, _ = ApiToken.issue(personas.tenant_a, ApiToken.Purpose.PDF, "halo")
    client = personas.client(personas.owner_a)
    response = client.post(
        reverse("admin:portal_apitoken_changelist"),
        {"action": "rotate", "_selected_action": [token.pk]},
    )
    assert response.status_code == 200
    new_plain = response.context["plaintext"]
    assert ApiToken.authenticate(new_plain, "pdf").tenant == personas.tenant_a
    token.refresh_from_db()
    assert token.state == "expiring"
