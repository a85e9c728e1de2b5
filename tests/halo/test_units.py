"""Pieces of the Halo client that need no simulator: URL derivation, error parsing, the
rate window, backoff, and a few HTTP shapes the simulator does not produce."""

import pytest
import requests
import responses
from django.test import override_settings

from integrations.halo import HaloAuthError, HaloClient, HaloInvalidClient, discover_auth_url
from integrations.halo.addresses import derive_urls, normalise
from integrations.halo.client import _disposition_filename, _retry_after
from integrations.halo.errors import HaloServerError, halo_message
from integrations.halo.ratelimit import BUCKETS, RateLimiter, RetryBudget, _slot_wait, parse_rate
from tests import factories

SITE = "https://acme.halopsa.com"


@pytest.mark.parametrize(
    ("auth", "resource", "expected"),
    [
        ("https://acme.halopsa.com", "", (f"{SITE}/auth", f"{SITE}/api")),
        ("acme.halopsa.com", "", (f"{SITE}/auth", f"{SITE}/api")),
        ("", "https://acme.halopsa.com/", (f"{SITE}/auth", f"{SITE}/api")),
        ("https://acme.halopsa.com/api/", "", (f"{SITE}/auth", f"{SITE}/api")),
        ("", "acme.halopsa.com/auth//", (f"{SITE}/auth", f"{SITE}/api")),
        (" ACME.HaloPSA.com/Auth ", " ", (f"{SITE}/Auth", f"{SITE}/api")),
        (f"{SITE}/auth", f"{SITE}/api", (f"{SITE}/auth", f"{SITE}/api")),
        ("http://halo.local:8080", "", ("http://halo.local:8080/auth", "http://halo.local:8080/api")),
        # Hosted tenants whose auth server lives elsewhere keep what was typed.
        ("https://auth.halo.example/x", SITE, ("https://auth.halo.example/x", f"{SITE}/api")),
        ("", "", ("", "")),
    ],
)  # fmt: skip
def test_derive_urls_without_discovery(auth, resource, expected):
    assert derive_urls(auth, resource) == expected


def test_derive_urls_prefers_the_announced_auth_server():
    asked = []

    def discover(site):
        asked.append(site)
        return "https://login.halo.example/auth"

    assert derive_urls(SITE, "", discover) == ("https://login.halo.example/auth", f"{SITE}/api")
    assert asked == [SITE]
    # An explicit /auth URL is trusted without asking.
    assert derive_urls(f"{SITE}/auth", "", discover)[0] == f"{SITE}/auth"
    assert asked == [SITE]


def test_normalise():
    assert normalise("acme.halopsa.com/api/") == f"{SITE}/api"
    assert normalise("") == ""


def test_discovery_against_the_simulator_and_unreachable_sites(sim):
    assert discover_auth_url(sim.base_url) == sim.auth_url
    assert derive_urls(sim.base_url, "", discover_auth_url) == (sim.auth_url, sim.api_url)
    assert discover_auth_url("http://127.0.0.1:9", timeout=0.5) is None


def _response(status, body, content_type="application/json"):
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.headers["Content-Type"] = content_type
    return response


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"resultCode": 400, "errorMessage": "Client is required"}', "Client is required"),
        ('{"ClassName": "System.Exception", "Message": "Boom", "HResult": -1}', "Boom"),
        ('{"error": "Rate Limit Reached"}', "Rate Limit Reached"),
        ('{"error": "invalid_client", "error_description": "Bad"}', "Bad (invalid_client)"),
        ('"just a string"', "just a string"),
        ("Internal Server Error", "Internal Server Error"),
        ("<html><body>IIS error</body></html>", ""),
        ("", ""),
        ("{}", ""),
    ],
)  # fmt: skip
def test_halo_message_from_every_body_shape(body, message):
    assert halo_message(_response(400, body)) == message


def test_error_sentences_name_the_call_and_what_was_attempted():
    error = HaloServerError(
        "", status=503, method="GET", endpoint="/Invoice", attempted="list invoices"
    )
    assert str(error) == (
        "Halo had an internal error while trying to list invoices (503 on GET /Invoice). "
        "This is usually temporary."
    )
    assert error.transient and not error.permanent and error.ambiguous


def test_retry_after_header_forms():
    assert _retry_after("7") == 7
    assert _retry_after(None) is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert _retry_after("soon") is None


def test_content_disposition_file_names():
    assert _disposition_filename('attachment; filename="a b.pdf"') == "a b.pdf"
    assert _disposition_filename("attachment; filename=plain.pdf") == "plain.pdf"
    header = "attachment; filename=\"?.pdf\"; filename*=UTF-8''%C3%85.pdf"
    assert _disposition_filename(header) == "Å.pdf"
    assert _disposition_filename("inline") is None


# -- rate window ----------------------------------------------------------------------------


def test_parse_rate():
    assert parse_rate("280/300") == (280, 300.0)
    with pytest.raises(ValueError, match="HALO_RATE_LIMIT"):
        parse_rate("0/300")


def test_slot_wait_counts_one_bucket_more_than_the_window():
    width = 30
    current = 100
    counts = {current - BUCKETS: 3, current - 1: 1, current: 1}
    assert _slot_wait(counts, current, 6, now=current * width, width=width) == 0
    # Full: the oldest bucket must leave the window first.
    wait = _slot_wait(counts, current, 5, now=current * width + 5, width=width)
    assert wait == pytest.approx(width - 5)
    # Everything in the current bucket: wait until it leaves the window.
    assert _slot_wait({current: 5}, current, 5, now=current * width, width=width) == pytest.approx(
        (BUCKETS + 1) * width
    )


class FakeClock:
    def __init__(self, now=1_000_000.0):
        self.now = now
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    "caches",
    [
        None,  # the default database cache: HaloRateWindow rows
        {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    ],
    ids=["database", "atomic-incr-cache"],
)
def test_rate_limiter_never_exceeds_the_limit_in_any_window(db, caches):
    overrides = {"CACHES": caches} if caches else {}
    with override_settings(**overrides):
        connection = factories.halo_connection(factories.tenant("rl"))
        clock = FakeClock()
        # Two limiters = two processes sharing the budget.
        limiters = [
            RateLimiter(connection.pk, "10/100", clock=clock, sleep=clock.sleep) for _ in range(2)
        ]
        times = []
        for n in range(35):
            assert limiters[n % 2].acquire(max_wait=1000) is not None
            times.append(clock.now)
        for start in times:
            assert sum(1 for t in times if start <= t < start + 100) <= 10
        assert clock.now - times[0] >= 300
        # Once spent, a wait longer than allowed answers None without taking a slot.
        immediate = [limiters[0].acquire(max_wait=0) for _ in range(11)]
        assert None in immediate
        assert all(r is None for r in immediate[immediate.index(None) :])


def test_backoff_full_jitter_retry_after_and_budget():
    clock = FakeClock(0)
    budget = RetryBudget(20, base=1, cap=4, clock=clock, sleep=clock.sleep)
    error = HaloServerError("", attempted="list clients")
    for _ in range(4):
        budget.backoff(error)
    assert all(0 <= s <= limit for s, limit in zip(clock.slept, [1, 2, 4, 4], strict=True))
    error.retry_after = 3
    budget.backoff(error)
    assert clock.slept[-1] == 3
    error.retry_after = 60
    with pytest.raises(HaloServerError, match=r"gave up after 6 attempts in \d+\.\d s"):
        budget.backoff(error)


# -- HTTP shapes the simulator does not make --------------------------------------------------


@responses.activate
def test_second_401_after_a_fresh_token_is_an_auth_error(db):
    connection = factories.halo_connection(factories.tenant("auth"))
    token_url = f"{connection.auth_url}/token"
    responses.post(token_url, json={"access_token": "t", "expires_in": 3600})
    responses.get(f"{connection.resource_url}/Client/1", status=401)
    with pytest.raises(HaloAuthError) as refused:
        HaloClient(connection).get_client(1)
    assert refused.value.permanent and refused.value.status == 401
    assert [c.request.url.split("?")[0] for c in responses.calls] == [
        token_url,
        f"{connection.resource_url}/Client/1",
        token_url,
        f"{connection.resource_url}/Client/1",
    ]
    assert "tenant=" in responses.calls[0].request.url


@responses.activate
def test_invalid_client_message_says_what_to_do(db):
    connection = factories.halo_connection(factories.tenant("bad"))
    responses.post(
        f"{connection.auth_url}/token",
        status=401,
        json={"error": "invalid_client", "error_description": "The client id or secret is bad"},
    )
    with pytest.raises(HaloInvalidClient) as bad:
        HaloClient(connection).get_token_info()
    assert str(bad.value).startswith(
        "Halo rejected the client ID or secret (invalid_client) (401 on POST /token)"
    )
    assert "Copy the secret again from Configuration > Integrations > HaloPSA API" in str(bad.value)
    assert connection.secret not in responses.calls[0].request.url
