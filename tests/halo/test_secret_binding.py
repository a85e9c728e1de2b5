"""A stored Halo client secret is only ever sent to the host it was entered for (pentest #12,
finding 2): a tenant admin pointing the connection at a host they control, leaving "Replace
secret" blank and pressing Test connection must not receive it."""

import pytest
import responses

from integrations import connection_test
from integrations.halo import HaloAddressRefused, HaloClient
from integrations.models import HaloConnection
from tests import factories
from tests.halo.test_connection_admin import change_url, form_data, run_url

EVIL = "https://attacker.invalid"


@pytest.fixture
def connection(personas):
    return factories.halo_connection(personas.tenant_a)


def edit(connection, **overrides):
    return (
        form_data(
            name=connection.name,
            auth_url=connection.auth_url,
            resource_url=connection.resource_url,
            halo_tenant=connection.halo_tenant,
            client_id=connection.client_id,
        )
        | overrides
    )


@pytest.mark.parametrize(
    ("field", "value", "label"),
    [
        ("auth_url", f"{EVIL}/auth", "authorisation server URL"),
        ("resource_url", f"{EVIL}/api", "resource server URL"),
        ("halo_tenant", "globex", "Halo tenant name"),
        ("client_id", "another-app", "client ID"),
    ],
)
def test_changing_where_or_as_whom_the_secret_goes_needs_it_again(
    personas, connection, field, value, label
):
    admin = personas.client(personas.owner_a)
    before = HaloConnection.objects.filter(pk=connection.pk).values().get()
    response = admin.post(change_url(connection), edit(connection, **{field: value}))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["new_secret"]
    assert f"You changed the {label}: enter the client secret again" in errors["new_secret"][0]
    assert HaloConnection.objects.filter(pk=connection.pk).values().get() == before

    # With the secret typed again the change is saved, and the secret now goes there.
    typed = edit(connection, **{field: value}) | {"new_secret": "the-secret-for-there"}
    assert admin.post(change_url(connection), typed).status_code == 302
    connection.refresh_from_db()
    assert getattr(connection, field) == value
    assert connection.secret_for(f"{connection.auth_url}/token") == "the-secret-for-there"


def test_unchanged_bindings_keep_the_secret_without_retyping(personas, connection):
    admin = personas.client(personas.owner_a)
    stored = connection.client_secret_encrypted
    data = edit(connection, name="Renamed", scopes="read:customers", webhooks="on")
    assert admin.post(change_url(connection), data).status_code == 302
    connection.refresh_from_db()
    assert (connection.name, connection.client_secret_encrypted) == ("Renamed", stored)


@responses.activate
def test_pentest_scenario_test_connection_never_posts_the_secret_elsewhere(personas, connection):
    """The attack: the URL changed behind the form's back (or before this fix), blank
    secret, Test connection. Nothing is sent to the new host; the page says what to do."""
    secret = connection.secret
    HaloConnection.objects.filter(pk=connection.pk).update(
        auth_url=f"{EVIL}/auth", resource_url=f"{EVIL}/api"
    )
    evil = responses.post(f"{EVIL}/auth/token", json={"access_token": "t", "expires_in": 60})
    page = personas.client(personas.owner_a).post(run_url(connection)).content.decode()
    assert evil.call_count == 0 and len(responses.calls) == 0
    assert "enter it again" in page and secret not in page
    connection.refresh_from_db()
    assert connection.test_status == "failed"
    assert "was entered for https://halo" in connection.test_summary


def test_the_model_answers_the_secret_only_for_the_host_it_was_entered_for(db):
    connection = factories.halo_connection(
        factories.tenant("bound"),
        auth_url="https://acme.halopsa.com/auth",
        resource_url="https://acme.halopsa.com/api",
    )
    secret = connection.secret
    assert connection.secret_for("https://acme.halopsa.com/auth/token") == secret
    assert connection.secret_for("https://ACME.halopsa.com:443/auth/token?x=1") == secret
    for elsewhere in (
        f"{EVIL}/auth/token",
        "http://acme.halopsa.com/auth/token",  # not over plain HTTP either
        "https://acme.halopsa.com:8443/auth/token",
        "https://acme.halopsa.com@attacker.invalid/auth/token",
        "https://acme.halopsa.com.attacker.invalid/auth/token",
        "not a url",
    ):
        with pytest.raises(HaloAddressRefused) as refused:
            connection.secret_for(elsewhere)
        assert refused.value.permanent
        assert secret not in str(refused.value)
        assert "was entered for https://acme.halopsa.com" in str(refused.value)

    # Moving the resource server elsewhere would send the token it buys there: refused too.
    connection.resource_url = f"{EVIL}/api"
    connection.save()
    with pytest.raises(HaloAddressRefused, match="enter it again"):
        connection.secret_for("https://acme.halopsa.com/auth/token")

    # Entering the secret again (the same one) binds it to the new hosts.
    connection.set_secret(secret)
    connection.save()
    connection.refresh_from_db()
    assert connection.secret_for("https://acme.halopsa.com/auth/token") == secret


def test_form_requires_the_secret_when_the_stored_one_belongs_elsewhere(personas, connection):
    """A row whose URLs were changed outside the form: saving it needs the secret again."""
    HaloConnection.objects.filter(pk=connection.pk).update(auth_url=f"{EVIL}/auth")
    connection.refresh_from_db()
    response = personas.client(personas.owner_a).post(change_url(connection), edit(connection))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "was entered for another address" in errors["new_secret"][0]


@responses.activate
def test_the_halo_client_refuses_to_send_the_secret_to_another_host(db):
    connection = factories.halo_connection(factories.tenant("moved"))
    connection.auth_url = f"{EVIL}/auth"
    connection.save()
    responses.post(f"{EVIL}/auth/token", json={"access_token": "t", "expires_in": 60})
    with pytest.raises(HaloAddressRefused) as refused:
        HaloClient(connection, retry_budget=1).get_token_info()
    assert refused.value.permanent and len(responses.calls) == 0
    assert not connection_test.run(connection, save=False).ok
