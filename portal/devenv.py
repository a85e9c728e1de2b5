"""`python -m portal.devenv > .env`: a development `.env` with fresh random keys.

Runs without Django so `make demo` can write it before anything is configured.
"""

import base64
import os
import secrets

print(
    "# Written by `make demo` for local development. See .env.example for every variable.\n"
    "DEBUG=true\n"
    f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
    f"FIELD_ENCRYPTION_KEY={base64.urlsafe_b64encode(os.urandom(32)).decode()}"
)
