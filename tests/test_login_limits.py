"""Brute-force and mail-flood limits (pentest #12, finding 5): django-axes locks a username
on one client address after LOGIN_FAILURE_LIMIT wrong passwords, and password-reset mails
are capped per address typed and per client."""

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail
from django.test import Client
from django.urls import reverse

from tests.conftest import PASSWORD

LOGIN = "/admin/login/"


def attempt(client, user, password, **extra):
    return client.post(LOGIN, {"username": user.username, "password": password}, **extra)


def logged_in(client):
    return "_auth_user_id" in client.session


def fail(client, user, times, **extra):
    return [attempt(client, user, "wrong-password", **extra).status_code for _ in range(times)]


def test_the_limit_of_wrong_passwords_locks_out_even_the_right_one(personas):
    assert settings.AXES_FAILURE_LIMIT == 5
    browser = Client()
    user = personas.owner_a
    assert fail(browser, user, 4) == [200] * 4
    locked = attempt(browser, user, "wrong-password")
    assert locked.status_code == 429
    right = attempt(browser, user, PASSWORD)
    assert right.status_code == 429 and not logged_in(browser)
    page = right.content.decode()
    assert "Too many failed logins" in page
    assert "15 minutes" in page and "Reset your password" in page
    assert PASSWORD not in page


def test_other_users_and_the_same_user_elsewhere_are_unaffected(personas):
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    fail(attacker, personas.owner_a, 5)
    assert attempt(attacker, personas.owner_a, PASSWORD).status_code == 429

    # The user from their own address, and another user from the attacker's, log in.
    at_home = Client(REMOTE_ADDR="198.51.100.7")
    assert attempt(at_home, personas.owner_a, PASSWORD).status_code == 302
    assert logged_in(at_home)
    neighbour = Client(REMOTE_ADDR="203.0.113.9")
    assert attempt(neighbour, personas.owner_b, PASSWORD).status_code == 302


def test_the_lockout_ends_after_the_cool_off(personas):
    browser = Client()
    fail(browser, personas.owner_a, 5)
    assert attempt(browser, personas.owner_a, PASSWORD).status_code == 429
    from axes.models import AccessAttempt

    # Instead of waiting: the attempts are made a cool-off older.
    for row in AccessAttempt.objects.all():
        row.attempt_time -= settings.AXES_COOLOFF_TIME + timedelta(seconds=1)
        row.save()
    assert attempt(browser, personas.owner_a, PASSWORD).status_code == 302


def test_a_successful_login_forgets_earlier_failures(personas):
    browser = Client()
    fail(browser, personas.owner_a, 4)
    assert attempt(browser, personas.owner_a, PASSWORD).status_code == 302
    browser.post(reverse("admin:logout"))
    assert fail(browser, personas.owner_a, 4) == [200] * 4


def test_forged_forwarded_for_headers_do_not_reset_the_count(personas):
    browser = Client()
    for n in range(5):
        attempt(browser, personas.owner_a, "wrong-password", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}")
    assert attempt(browser, personas.owner_a, PASSWORD).status_code == 429


def test_behind_a_trusted_proxy_each_client_is_counted_apart(personas, settings):
    settings.PAYMENTS_PROXIES = 1
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    attacker = Client(**proxy, HTTP_X_FORWARDED_FOR="203.0.113.9")
    fail(attacker, personas.owner_a, 5)
    assert attempt(attacker, personas.owner_a, PASSWORD).status_code == 429
    user = Client(**proxy, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert attempt(user, personas.owner_a, PASSWORD).status_code == 302


def test_accounts_login_is_the_same_throttled_login(personas):
    """django.contrib.auth.urls' login page had no template (a 500); it now leads to the
    admin login, keeping where to go next, and never checks a password itself."""
    browser = Client()
    response = browser.get("/accounts/login/?next=/admin/portal/tenant/")
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next=/admin/portal/tenant/"
    posted = browser.post("/accounts/login/", {"username": "owner-a", "password": PASSWORD})
    assert posted.status_code == 302 and not logged_in(browser)
    assert browser.get(reverse("password_change")).status_code == 302  # to the login


# -- password-reset mails --------------------------------------------------------------------


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    from portal import login_limits

    clock = Clock(7200.0)  # the start of an hour
    monkeypatch.setattr(login_limits.ResetMailThrottle, "timer", clock)
    return clock


@pytest.mark.parametrize("url", ["/admin/password_reset/", "/accounts/password_reset/"])
def test_reset_mails_to_one_address_are_capped(personas, clock, url):
    assert settings.PASSWORD_RESET_EMAIL_RATE == "3/hour"
    browser = Client()
    email = personas.owner_a.email
    for n in range(20):
        typed = email.upper() if n % 2 else f" {email} "
        response = browser.post(url, {"email": typed})
        assert response.status_code == 302, n  # the same answer every time
        assert response["Location"].endswith("/password_reset/done/")
    assert len(mail.outbox) == 3
    assert {m.to[0] for m in mail.outbox} == {email}

    # Another user's mail still goes (from elsewhere: this client has used its 20 an hour),
    # and the next window lets this one's through again.
    Client(REMOTE_ADDR="198.51.100.7").post(url, {"email": personas.owner_b.email})
    assert len(mail.outbox) == 4
    clock.now += 3600
    browser.post(url, {"email": email})
    assert len(mail.outbox) == 5


def test_reset_requests_from_one_client_are_capped(personas, clock, settings):
    assert settings.PASSWORD_RESET_IP_RATE == "20/hour"
    settings.PASSWORD_RESET_IP_RATE = "2/hour"
    browser = Client(REMOTE_ADDR="203.0.113.9")
    for email in ("nobody@example.com", personas.owner_a.email, personas.owner_b.email):
        assert browser.post("/admin/password_reset/", {"email": email}).status_code == 302
    assert [m.to[0] for m in mail.outbox] == [personas.owner_a.email]  # the third was over
    elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    elsewhere.post("/admin/password_reset/", {"email": personas.owner_b.email})
    assert [m.to[0] for m in mail.outbox][-1] == personas.owner_b.email


def test_reset_limit_answers_the_page_not_an_error(personas, clock, settings):
    settings.PASSWORD_RESET_EMAIL_RATE = "1/hour"
    browser = Client()
    for _ in range(2):
        done = browser.post(
            "/admin/password_reset/", {"email": personas.owner_a.email}, follow=True
        )
        assert done.status_code == 200
        assert "We’ve emailed you instructions" in done.content.decode()
    assert len(mail.outbox) == 1


def test_a_new_password_from_the_reset_mail_lifts_the_lockout(personas, clock):
    browser = Client()
    fail(browser, personas.owner_a, 5)
    locked = browser.get(LOGIN)  # the login page itself still shows
    assert locked.status_code == 200
    browser.post("/admin/password_reset/", {"email": personas.owner_a.email})
    link = re.search(r"https?://[^/\s]+(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form = browser.get(link, follow=True)
    new = "another-horse-battery-staple"
    done = browser.post(
        form.redirect_chain[-1][0], {"new_password1": new, "new_password2": new}, follow=True
    )
    assert done.status_code == 200 and "Password reset complete" in done.content.decode()
    assert attempt(browser, personas.owner_a, new).status_code == 302
