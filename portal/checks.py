"""System checks for production settings. Ids are stable; the README lists them."""

from django.conf import settings
from django.core.checks import Error, Warning, register

HINTS = {
    "SECRET_KEY": (
        "portal.E001",
        "Set SECRET_KEY to a long random string, e.g. the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`.",
    ),
    "FIELD_ENCRYPTION_KEY": (
        "portal.E002",
        "Set FIELD_ENCRYPTION_KEY to a Fernet key, e.g. the output of `python -c 'from "
        "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`. "
        "Keep it safe: Halo secrets stored with it cannot be read without it.",
    ),
    "ALLOWED_HOSTS": (
        "portal.E003",
        "Set ALLOWED_HOSTS to the portal's host names, comma-separated (e.g. portal.example.com).",
    ),
}


def _missing_settings():
    return [
        Error(f"{name} is not set.", hint=HINTS[name][1], id=HINTS[name][0])
        for name in settings.MISSING_PRODUCTION_SETTINGS
    ]


@register()
def production_settings(app_configs, **kwargs):
    """Without DEBUG the portal refuses to start with missing production settings."""
    return [] if settings.DEBUG else _missing_settings()


@register(deploy=True)
def production_settings_deploy(app_configs, **kwargs):
    """`check --deploy` reports them even on a DEBUG machine (the normal check covers !DEBUG)."""
    return _missing_settings() if settings.DEBUG else []


@register()
def encryption_key_valid(app_configs, **kwargs):
    from portal.crypto import fernet

    try:
        fernet()
    except ValueError:
        return [
            Error(
                "FIELD_ENCRYPTION_KEY is not a valid Fernet key.",
                hint=HINTS["FIELD_ENCRYPTION_KEY"][1],
                id="portal.E004",
            )
        ]
    return []


@register(deploy=True)
def database_for_production(app_configs, **kwargs):
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") and not settings.DEBUG:
        return [
            Warning(
                "DATABASE_URL is SQLite: fine for one machine, but several qcluster workers "
                "on several machines need PostgreSQL.",
                hint="Set DATABASE_URL=postgres://user:password@host:5432/portal and REDIS_URL.",
                id="portal.W001",
            )
        ]
    return []
