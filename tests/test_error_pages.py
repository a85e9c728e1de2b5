"""DEBUG error pages (and the error emails built the same way) hide credentials inside
URL-shaped settings, request metadata and variables."""

import secrets
import sys

import pytest
from django.views.debug import ExceptionReporter

from portal.crypto import hide_url_credentials

# Made at run time: the page also shows this file's source around each frame.
PW = {name: secrets.token_hex(8) for name in ("redis", "pg", "nested", "mail", "meta", "frame")}


def crash(url):
    raise RuntimeError("the cache is down")


@pytest.fixture
def error_page(settings, rf):
    settings.DEBUG = True
    redis = f"redis://:{PW['redis']}@redis.internal:6379/0"
    settings.REDIS_URL = redis
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis}
    }
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": redis}
    settings.REPLICA_DATABASE_URL = f"postgres://portal:{PW['pg']}@db.internal:5432/portal"
    settings.WAREHOUSE = {"targets": [{"url": f"https://loader:{PW['nested']}@dw.example.com/"}]}
    settings.MAIL_RELAYS = (f"smtp+tls://relay:{PW['mail']}@smtp.example.com:587",)
    # runserver copies the environment into request.META
    request = rf.get("/admin/", DATABASE_URL=f"postgres://portal:{PW['meta']}@db.internal/portal")
    try:
        crash(f"redis://:{PW['frame']}@redis.internal:6379/1")
    except RuntimeError:
        reporter = ExceptionReporter(request, *sys.exc_info())
    return reporter


def test_technical_500_page_hides_passwords_in_urls(error_page):
    for page in (error_page.get_traceback_html(), error_page.get_traceback_text()):
        shown = [name for name, password in PW.items() if password in page]
        assert not shown
        assert "redis.internal:6379" in page  # where it points stays visible
        assert "db.internal:5432" in page


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("redis://:pw@redis.internal:6379/0", "redis://:********@redis.internal:6379/0"),
        ("postgres://portal:pw@db/portal", "postgres://portal:********@db/portal"),
        ("rediss://token@cache.example.com", "rediss://********@cache.example.com"),
        ("redis://:p@ss@cache:6379", "redis://:********@cache:6379"),
        ("down: amqp://u:p%40ss@mq:5672/ and more", "down: amqp://u:********@mq:5672/ and more"),
        ("https://portal.example.com/pay/x", "https://portal.example.com/pay/x"),
        ("https://example.com/users/@me", "https://example.com/users/@me"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
        ("sqlite:////data/portal.sqlite3", "sqlite:////data/portal.sqlite3"),
    ],
)
def test_hide_url_credentials(text, hidden):
    assert hide_url_credentials(text) == hidden
