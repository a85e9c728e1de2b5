"""Production settings: `manage.py check --deploy` is clean with the environment `.env.example`
documents, HTTPS is enforced by default, and no proxy header is trusted unless configured."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import RequestFactory

ROOT = Path(__file__).resolve().parent.parent


def example_environment(**overrides):
    """The variables of .env.example as written, with the secrets it leaves blank (and says
    production must set) filled in, and PostgreSQL, which it names for production."""
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    env |= {
        "SECRET_KEY": "production-" + Fernet.generate_key().decode(),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "DATABASE_URL": "postgres://portal:password@db.internal:5432/portal",
    }
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return keep | env | overrides


def manage(env, *args):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_reports_nothing_for_the_documented_production_environment():
    result = manage(example_environment(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNING" not in result.stderr + result.stdout


def test_production_defaults_enforce_https_and_trust_no_proxy_header():
    env = example_environment()
    for name in ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER"):
        env.pop(name, None)
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env | {"DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["True", "31536000", "True", "True", "None"], shown.stderr
    configured = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env
        | {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert configured.returncode == 0, configured.stderr
    assert configured.stdout.split()[-2:] == ["('HTTP_X_FORWARDED_PROTO',", "'https')"]


def test_a_forwarded_proto_header_is_not_trusted_by_default(settings):
    assert settings.SECURE_PROXY_SSL_HEADER is None
    request = RequestFactory().get("/admin/", HTTP_X_FORWARDED_PROTO="https")
    assert not request.is_secure()


@pytest.mark.django_db
def test_plain_http_is_redirected_except_healthz(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    page = client.get("/admin/login/")
    assert page.status_code == 301 and page["Location"].startswith("https://")
    assert client.get("/healthz").status_code in (200, 503)  # load balancers probe over HTTP
