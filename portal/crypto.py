"""Encryption of secrets at rest (Halo client secrets, processor keys).

`FIELD_ENCRYPTION_KEY` holds one or more comma-separated Fernet keys: the first encrypts,
all decrypt, so keys can be rotated by prepending a new one. Development without a key
derives one from SECRET_KEY; production must set its own (check portal.E002).
"""

import base64
import hashlib
import re
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.views.debug import SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_variables


class SecretUnreadable(Exception):
    """The stored ciphertext cannot be decrypted with the configured keys."""


# scheme://userinfo@ : the userinfo runs to the last "@" before the host's end, so a
# password with a raw "@" is hidden whole.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@", re.I)
HIDDEN = "********"


class Masked(str):
    """A secret string whose repr hides it: locals on debug pages, reprs in logs."""

    __slots__ = ()

    def __repr__(self):
        return "'********'"


def token_digest(token: str) -> str:
    """How the portal stores a secret it hands out once (API tokens, invitation links,
    upload tokens, webhook passwords): its SHA-256, looked up by equality. The tokens are
    long random values, so a plain hash is enough; no salt or stretching is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def hide_url_credentials(text):
    """`redis://:pw@host` -> `redis://:********@host`, `postgres://user:pw@db` ->
    `postgres://user:********@db`, `rediss://token@host` -> `rediss://********@host`."""

    def hide(match):
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user + colon if colon else ''}{HIDDEN}@"

    return _URL_USERINFO.sub(hide, text)


class SecretSafeReporterFilter(SafeExceptionReporterFilter):
    """Hide what `sensitive_variables` and `sensitive_post_parameters` mark on DEBUG error
    pages too (Django shows everything under DEBUG): demo and staging servers run with
    DEBUG on, holding real Halo and Stripe secrets. Credentials inside URLs are hidden
    wherever the page shows them: settings (`REDIS_URL`, a cache's `LOCATION`, `Q_CLUSTER`,
    nested values too), request metadata (runserver copies the environment there, with
    `DATABASE_URL`) and string variables of the traceback."""

    def is_active(self, request):
        return True

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)  # recurses through this method
        return hide_url_credentials(cleansed) if isinstance(cleansed, str) else cleansed

    def cleanse_special_types(self, request, value):
        value = super().cleanse_special_types(request, value)
        return hide_url_credentials(value) if isinstance(value, str) else value


@cache
def _fernet(raw_keys):
    keys = [k.strip() for k in raw_keys.split(",") if k.strip()]
    if not keys:
        digest = hashlib.sha256(f"field-encryption:{settings.SECRET_KEY}".encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(k) for k in keys])


def fernet():
    return _fernet(settings.FIELD_ENCRYPTION_KEY)


@sensitive_variables()  # a crash here must not print the plaintext on a DEBUG error page
def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "A stored secret cannot be decrypted: FIELD_ENCRYPTION_KEY changed. "
            "Restore the old key (comma-separated after the new one) or enter the secret again."
        ) from exc
