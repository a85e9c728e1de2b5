"""People signing in with their Halo account: the authorisation endpoint and its login page,
the ``authorization_code`` grant with PKCE at the token endpoint, and ``GET /api/Users/me``.

Halo's public material on this is thin. What the simulator does, and where it comes from
(the same facts are in ``integrations/halo/contract.py``, to be corrected against a live Halo):

* Halo API applications can use *Authorisation Code (Native Application)* (Halo's guide
  "Creating API Applications", kbid 1823); a native application is a public client: no
  secret. Registering its redirect URLs ("Login Redirect URL") is shown in Benji Pays' Halo
  SSO guide. Applications here say ``authentication_method: "authorization_code"`` and list
  ``redirect_uris``; such an application gets no ``client_credentials`` token.
* The authorisation endpoint is ``<authorisation server>/authorize`` (public integrations
  send people to ``https://<tenant>.halopsa.com/auth/authorize``), with the standard OAuth 2
  query (RFC 6749 §4.1.1) plus PKCE (RFC 7636). **Our choice**: PKCE with ``S256`` is
  required, so the portal is held to it; ``tenant`` is accepted as on the token call.
* An unknown application or an unregistered redirect URL answers an error page and never
  redirects (RFC 6749 §4.1.2.1); other refusals, and Cancel, go back to the redirect URL
  with ``error`` (``access_denied`` for Cancel) and the ``state``.
* **Our choice**: a code lives ``CODE_LIFETIME`` seconds and works once, for the client,
  redirect URL and verifier it was issued for (RFC 6749 §4.1.2, §4.1.3; RFC 7636 §4.6);
  anything else is ``400 {"error": "invalid_grant"}``. The token reply is the
  ``client_credentials`` one; no refresh token or ``id_token`` (the portal needs neither).
* People are Halo *users* (customer contacts, Clients > Users) who log in with their email
  address (or login name) and password. ``GET /api/Users/me`` is in Halo's full v2 document
  (no parameters) and answers the token's own user in the shape of the document's ``Users``
  schema: ``id``, ``name``, ``emailaddress``, ``client_id``, ``client_name``, ``site_id``,
  ``inactive``, ``canaccessinvoices``. That ``canaccessinvoices`` is the user's "Can view
  their invoices" permission (Clients > Users > Permissions, named in Benji Pays' guide) is
  **assumed**. **Our choice**: it needs ``read:customers``; a token with no user behind it
  (``client_credentials``) answers 404. Inactive users cannot log in at the login page.
"""

import base64
import hashlib
import hmac
import html
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .auth import expand
from .state import ApiError

#: Seconds an authorisation code can be exchanged for (our choice; RFC 6749 says short).
CODE_LIFETIME = 300
#: The authorisation request's names (RFC 6749 §4.1.1, RFC 7636 §4.3, Halo's ``tenant``).
AUTHORIZE_PARAMS = (
    "response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
    "code_challenge_method", "tenant",
)  # fmt: skip
#: RFC 7636 §4.1: 43 to 128 unreserved characters.
VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


@dataclass
class User:
    """A Halo user (a customer's contact) who can sign in."""

    id: int
    name: str
    emailaddress: str
    password: str = field(repr=False)
    client_id: int | None = None
    site_id: int | None = None
    login: str = ""
    inactive: bool = False
    canaccessinvoices: bool = False

    @classmethod
    def from_json(cls, data, user_id):
        if not data.get("emailaddress") or not data.get("password"):
            raise ValueError("a user needs emailaddress and password")
        client_id = data.get("client_id")
        return cls(
            id=user_id,
            name=str(data.get("name") or data["emailaddress"]),
            emailaddress=str(data["emailaddress"]),
            password=str(data["password"]),
            client_id=None if client_id is None else int(client_id),
            site_id=None if data.get("site_id") is None else int(data["site_id"]),
            login=str(data.get("login") or ""),
            inactive=bool(data.get("inactive", False)),
            canaccessinvoices=bool(data.get("canaccessinvoices", False)),
        )

    def matches(self, username):
        wanted = username.strip().casefold()
        return wanted in {self.emailaddress.casefold(), self.login.casefold()} - {""}

    def record(self, store):
        """The user as ``/api/Users`` answers: Halo's field names, nulls left out."""
        client = store.live("Client", self.client_id) if self.client_id is not None else None
        out = {
            "id": self.id,
            "name": self.name,
            "emailaddress": self.emailaddress,
            "login": self.login or None,
            "client_id": self.client_id,
            "client_name": client and client.get("name"),
            "site_id": self.site_id,
            "inactive": self.inactive,
            "canaccessinvoices": self.canaccessinvoices,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    user_id: int
    scope: str
    expires_at: float


class SignIn:
    """Users, and the codes handed out at the login page; callers hold the simulator lock."""

    def __init__(self):
        self.users = {}
        self.codes = {}

    def add_user(self, data):
        user = User.from_json(data, max(self.users, default=0) + 1)
        self.users[user.id] = user
        return user

    # -- the authorisation endpoint ---------------------------------------------------

    def authorize(self, method, query, form, applications, tenant, now):
        """``(status, body, content_type, headers)`` for ``GET|POST /auth/authorize``: the
        login page, or a redirect back to the application with a code or an error."""
        sent = form if method == "POST" else query
        params = {name: sent.get(name, "") for name in AUTHORIZE_PARAMS}
        app = applications.get(params["client_id"])
        if app is None or app.authentication_method != "authorization_code":
            return _page(400, "Unknown application", "This application is not set up in Halo.")
        if params["redirect_uri"] not in app.redirect_uris:
            return _page(
                400,
                "Redirect URL not allowed",
                "The redirect URL is not one of this application's login redirect URLs.",
            )
        if params["tenant"] and params["tenant"].lower() != tenant.lower():
            return _page(400, "Unknown tenant", "This Halo has no such tenant.")

        def back(**answer):
            return _redirect(params["redirect_uri"], answer | {"state": params["state"] or None})

        if params["response_type"] != "code":
            return back(error="unsupported_response_type")
        if params["code_challenge_method"] != "S256" or not params["code_challenge"]:
            return back(error="invalid_request", error_description="PKCE (S256) is required")
        if method != "POST":
            return _login(app, params)
        if form.get("action") == "cancel":
            return back(error="access_denied")
        user = next((u for u in self.users.values() if u.matches(form.get("username", ""))), None)
        password = form.get("password", "").encode()
        if user is None or not hmac.compare_digest(user.password.encode(), password):
            return _login(app, params, "The email address or password is not right.", 401)
        if user.inactive:
            return _login(app, params, "This account is inactive.", 403)
        code = secrets.token_urlsafe(32)
        self.codes[code] = Grant(
            app.client_id,
            params["redirect_uri"],
            params["code_challenge"],
            user.id,
            params["scope"],
            now + CODE_LIFETIME,
        )
        return back(code=code)

    # -- the token endpoint -----------------------------------------------------------

    def exchange(self, form, applications, tokens, now, lifetime):
        """``(status, JSON)`` for ``grant_type=authorization_code``."""
        app = applications.get(form.get("client_id", ""))
        secret = form.get("client_secret")  # a native application has none to send
        if app is None or (
            secret is not None
            and not hmac.compare_digest(app.client_secret.encode(), secret.encode())
        ):
            message = "The client id or secret is not valid"
            return 401, {"error": "invalid_client", "error_description": message}
        if app.authentication_method != "authorization_code":
            return 400, {"error": "unauthorized_client"}
        grant = self.codes.pop(form.get("code", ""), None)  # once, whatever happens next
        verifier = form.get("code_verifier", "")
        if (
            grant is None
            or grant.expires_at <= now
            or grant.client_id != app.client_id
            or grant.redirect_uri != form.get("redirect_uri")
            or not VERIFIER.match(verifier)
            or not hmac.compare_digest(challenge_of(verifier), grant.challenge)
        ):
            return 400, {"error": "invalid_grant"}
        scopes = expand(grant.scope or "all") & expand(app.permissions)
        token = tokens.issue(app, scopes, now, lifetime, user_id=grant.user_id)
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(sorted(scopes)),
        }

    # -- GET /api/Users/me ------------------------------------------------------------

    def me(self, token, store):
        user = self.users.get(token.user_id) if token.user_id is not None else None
        if user is None:
            raise ApiError(404, "No user is signed in with this token")
        return user.record(store)


#: ``/api/Users/me`` as the resource checks see it (name, scopes): our choice of scope.
@dataclass(frozen=True)
class UsersResource:
    name: str = "Users"
    read_scope: str = "read:customers"
    edit_scope: str = "edit:customers"


USERS = UsersResource()


def challenge_of(verifier):
    """RFC 7636 §4.2: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _redirect(uri, answer):
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in answer.items() if v is not None]
    return 302, b"", None, {"Location": urlunsplit(parts._replace(query=urlencode(query)))}


STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; background: #eef1f5; margin: 0; color: #1c2330; }
main { max-width: 24rem; margin: 4rem auto; background: #fff; padding: 2rem;
       border-radius: 8px; box-shadow: 0 2px 8px rgba(0,0,0,.1); }
h1 { font-size: 1.4rem; margin-top: 0; } label { display: block; margin-top: 1rem; }
input { width: 100%; box-sizing: border-box; padding: .5rem; font: inherit; }
.buttons { display: flex; gap: .5rem; margin-top: 1.5rem; }
button { padding: .55rem 1.2rem; font: inherit; border-radius: 4px; border: 1px solid #555; }
button.primary { background: #5c2d91; color: #fff; border-color: #5c2d91; }
.error { color: #a4262c; font-weight: 600; } .app { color: #555; }
"""


def _document(title, body):
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · Halo</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    ).encode()


def _page(status, title, message):
    body = f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
    return status, _document(title, body), "text/html; charset=utf-8", {}


def _login(app, params, error="", status=200):
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in params.items()
        if value
    )
    problem = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (
        f"<h1>Sign in to Halo</h1>"
        f'<p class="app">to continue to {html.escape(app.name)}</p>{problem}'
        f'<form method="post" action="authorize">{hidden}'
        f'<label for="username">Email address</label>'
        f'<input id="username" name="username" autocomplete="username" required>'
        f'<label for="password">Password</label>'
        f'<input id="password" name="password" type="password" '
        f'autocomplete="current-password" required>'
        f'<div class="buttons"><button class="primary" name="action" value="signin">'
        f"Sign in</button>"
        f'<button name="action" value="cancel" formnovalidate>Cancel</button></div>'
        f"</form>"
    )
    return status, _document("Sign in", body), "text/html; charset=utf-8", {}
