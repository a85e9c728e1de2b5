"""Encryption of secrets at rest (Halo client secrets, processor keys).

`FIELD_ENCRYPTION_KEY` holds one or more comma-separated Fernet keys: the first encrypts,
all decrypt, so keys can be rotated by prepending a new one. Development without a key
derives one from SECRET_KEY; production must set its own (check portal.E002).
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """The stored ciphertext cannot be decrypted with the configured keys."""


@cache
def _fernet(raw_keys):
    keys = [k.strip() for k in raw_keys.split(",") if k.strip()]
    if not keys:
        digest = hashlib.sha256(f"field-encryption:{settings.SECRET_KEY}".encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(k) for k in keys])


def fernet():
    return _fernet(settings.FIELD_ENCRYPTION_KEY)


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
