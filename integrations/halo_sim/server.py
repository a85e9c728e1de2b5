"""One simulated Halo instance (``Simulator``) and its HTTP front (``make_server``).

Order of checks on a resource call, so a fault rule is only used up by a call
that would otherwise have worked: count the call, add latency, bearer token
(401), rate limit (429), scope (403), fault queue / random fault rate, then
the store.  Token calls (``POST /auth/token``) are counted and can be faulted
but do not use up the rate limit, which belongs to the resource server.

Every resource call is held to Halo's own API document (``integrations/halo/contract``):
an undocumented path or verb answers 404, a field whose value does not fit its type 400,
and unknown query names and body fields are ignored (dropped before the store sees them),
as Halo does. Each departure is also recorded (``/_sim/departures``, and the request log
when one is configured), so a test run can fail on any request real Halo would not
understand.

Error bodies follow the ``error_body`` variant.  A 500 is the bare text
``Internal Server Error`` (what Halo's front end shows when something breaks)
except under ``error_body=dotnet``, where an escaping .NET exception object is
the more telling shape.  401 and 403 have empty bodies.
"""

import collections
import hmac
import http.server
import json
import mimetypes
import random
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

from integrations.halo.contract import contract

from . import seed as seeds
from .auth import Application, RateLimiter, Tokens
from .config import Config
from .faults import FaultQueue, FaultRule
from .signin import USERS, SignIn
from .state import ApiError, Store, flag, resource
from .webhooks import WebhookDispatcher

#: Longest wait a ``/_sim/.../wait`` call may ask for, in seconds.
MAX_WAIT = 120.0

DOTNET_EXCEPTIONS = {
    400: "System.ArgumentException",
    404: "System.Collections.Generic.KeyNotFoundException",
    500: "System.NullReferenceException",
}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


def json_response(status, data, headers=None):
    body = json.dumps(data, ensure_ascii=False).encode()
    return Response(status, body, "application/json; charset=utf-8", headers or {})


def text_response(status, text):
    return Response(status, text.encode(), "text/plain; charset=utf-8")


DROP = Response(0, drop=True)
MAX_DEPARTURES = 10_000
#: Request log values longer than this are replaced by their length (attachments).
LOG_VALUE_LIMIT = 2_000


class Request:
    """One request as the contract sees it: its documented operation and departures."""

    def __init__(self, method, path, query, body):
        self.method, self.path, self.query, self.raw_body = method, path, query, body
        self.operation, self.departures = None, []
        self.body = None
        if method == "POST" and body:
            try:
                self.body = json.loads(body)
            except ValueError:
                self.body = None  # answered 400 by the store, as Halo does

    @property
    def resource_path(self):
        """The path below the resource server's ``/api``."""
        return "/" + "/".join(p for p in self.path.split("/") if p)[4:]

    def check(self):
        self.operation, self.departures = contract().check(
            self.method, self.resource_path, self.query, self.body
        )

    def known_query(self):
        """The query without the names Halo's document does not list (Halo ignores them)."""
        if self.operation is None:
            return {}
        return {k: v for k, v in self.query.items() if k.lower() in self.operation.query}

    def known_body(self):
        """The body without the fields Halo's document does not know (Halo ignores them)."""
        if self.body is None or self.operation is None or self.operation.body is None:
            return self.raw_body
        return json.dumps(contract().known(self.operation.body, self.body)).encode()

    def to_log(self):
        if self.path.lower().rstrip("/").endswith("/token"):
            body = {name: "…" for name in _form(self.raw_body)}  # names only: it holds secrets
        else:
            body = _shortened(self.body)
        return {"method": self.method, "path": self.path, "query": self.query, "body": body}


def _form(body):
    return {k: v[-1] for k, v in parse_qs((body or b"").decode("utf-8", "replace")).items()}


def _shortened(value):
    if isinstance(value, dict):
        return {k: _shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shortened(v) for v in value]
    if isinstance(value, str) and len(value) > LOG_VALUE_LIMIT:
        return f"<{len(value)} characters>"
    return value


class Simulator:
    """A Halo instance: data, applications, tokens, limits, faults, webhooks,
    and the ``/_sim/`` control API.  Thread-safe; HTTP-agnostic."""

    def __init__(self, tenant=seeds.DEMO_TENANT, seed="demo", config=None):
        self.tenant = tenant
        self.initial_seed = seed
        self.initial_config = (config or Config()).copy()
        self.store = Store(now=self.now, emit=self._emit)
        self.lock = self.store.lock
        self._stopping = threading.Event()
        self._answered = threading.Condition()  # notified as each request is answered
        self.webhooks = WebhookDispatcher(
            lambda: (self.config.webhook_duplicates, self.config.webhook_out_of_order)
        )
        self.departures = []
        self._log_lock = threading.Lock()
        self.reset()

    def reset(self, seed=None):
        """Back to the start: seed data (the initial one unless given), start-up
        config, no tokens, faults, counts or webhook deliveries."""
        with self.lock:
            self.config = self.initial_config.copy()
            self.tokens = Tokens()
            self.rate_limiter = RateLimiter()
            self.faults = FaultQueue()
            self.random = random.Random(0)
            self.notifications = 0
            self.counts = collections.Counter()
            self.statuses = collections.Counter()
            self.webhooks.clear()
            # Departures are not cleared: they belong to whoever sent them, and a test
            # run collects them across resets (see tests/conftest.py).
            self.store.clear()
            self.signin = SignIn()
            apps = seeds.load(self.store, self.initial_seed if seed is None else seed)
            self.applications = {app.client_id: app for app in apps}

    def close(self):
        self._stopping.set()
        with self._answered:
            self._answered.notify_all()
        self.webhooks.close()

    def now(self):
        """Simulator clock: naive UTC plus the configured offset."""
        offset = timedelta(seconds=self.config.clock_offset_seconds)
        return datetime.now(UTC).replace(tzinfo=None) + offset

    def timestamp(self):
        return time.time() + self.config.clock_offset_seconds

    def variant(self, name):
        return self.config.variants[name]

    # -- requests ----------------------------------------------------------------------

    def handle(self, method, path, query, headers, body):
        """Answer one HTTP request; ``query`` keys are lower case."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["_sim"]:
            return self._control(method, parts[1:], body)
        label, target, record_id = self._route(method, parts)
        with self.lock:
            self.counts[label] += 1
        self._pause(self.config.latency_ms / 1000)
        request = Request(method, path, query, body)
        if target == "token":
            request.departures = contract().check_token(query, _form(body))
        elif target == "authorize":
            request.departures = contract().check_authorize(query if method == "GET" else {})
        elif parts[:1] and parts[0].lower() == "api":
            request.check()
        self._record(request)
        if target == "token":
            response = self._faulted(method, "token", lambda: self._token(method, query, body))
        elif target == "authorize":
            response = self._authorize(method, query, body)
        elif request.operation is None or target is None:
            response = self._error(404, "The requested resource was not found")
        elif target == "authinfo":
            response = json_response(200, {"auth_url": f"http://{headers.get('Host', '')}/auth"})
        else:
            response = self._resource_call(method, target, record_id, request, headers)
        with self.lock:
            self.statuses["dropped" if response.drop else str(response.status)] += 1
        with self._answered:
            self._answered.notify_all()
        return response

    def _route(self, method, parts):
        """``(label for request counts, "authinfo" | "token" | Resource | None, record id)``."""
        lowered = [p.lower() for p in parts]
        if lowered in (["api", "authinfo"], ["auth", "token"], ["auth", "authorize"]):
            return f"{method} /{'/'.join(lowered)}", lowered[1], None
        if lowered == ["api", "users", "me"]:
            return f"{method} /Users/me", USERS, None
        if len(parts) in (2, 3) and lowered[0] == "api" and (res := resource(parts[1])):
            record_id = parts[2] if len(parts) == 3 else None
            return f"{method} /{res.name}" + ("/{id}" if record_id else ""), res, record_id
        return f"{method} /{'/'.join(parts)}", None, None

    def _record(self, request):
        """Keep the request's departures, and log the request when configured."""
        if request.departures:
            with self.lock:
                self.departures.extend(
                    {**d.to_json(), "request": f"{request.method} {request.path}"}
                    for d in request.departures
                )
                del self.departures[:-MAX_DEPARTURES]
        if self.config.request_log:
            line = json.dumps(request.to_log(), ensure_ascii=False)
            with self._log_lock, open(self.config.request_log, "a", encoding="utf-8") as log:
                log.write(line + "\n")

    def _pause(self, seconds):
        if seconds > 0:
            self._stopping.wait(seconds)

    def _token(self, method, query, body):
        if method != "POST":
            return self._error(405, "Use POST")
        form = {k.lower(): v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        tenant = query.get("tenant") or form.get("tenant")
        if tenant and tenant.lower() != self.tenant.lower():
            return text_response(500, "Internal Server Error")
        if form.get("grant_type") == "authorization_code":
            with self.lock:
                status, reply = self.signin.exchange(
                    form, self.applications, self.tokens, self.timestamp(),
                    self.config.token_lifetime,
                )  # fmt: skip
            return json_response(status, reply)
        if form.get("grant_type") != "client_credentials":
            return json_response(400, {"error": "unsupported_grant_type"})
        with self.lock:
            app = self.applications.get(form.get("client_id", ""))
            secret = form.get("client_secret", "").encode()
            if app is None or not hmac.compare_digest(app.client_secret.encode(), secret):
                return json_response(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "The client id or secret is not valid",
                    },
                )
            if app.authentication_method != "client_credentials":
                return json_response(400, {"error": "unauthorized_client"})
            scopes = app.grant(form.get("scope") or "all")
            lifetime = self.config.token_lifetime
            token = self.tokens.issue(app, scopes, self.timestamp(), lifetime)
        return json_response(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": lifetime,
                "scope": " ".join(sorted(scopes)),
            },
        )

    def _resource_call(self, method, res, record_id, request, headers):
        query = request.known_query()
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        with self.lock:
            token = (
                self.tokens.valid(value.strip(), self.timestamp())
                if scheme.lower() == "bearer"
                else None
            )
            if token is None:
                return Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            wait = self.rate_limiter.retry_after(
                token.client_id, self.timestamp(), self.config.rate_limit
            )
        if wait is not None:
            return self._rate_limited(wait)
        if method not in ("GET", "POST", "DELETE"):
            return self._error(405, "The requested resource does not support this method")
        needed = res.read_scope if method == "GET" else res.edit_scope
        if needed is not None and needed not in token.scopes:
            return Response(403)
        if refused := [d for d in request.departures if d.refused]:
            return self._error(400, "; ".join(d.detail for d in refused))
        if res is USERS:
            return self._faulted(method, res.name, lambda: self._users_me(token))
        body = request.known_body()
        return self._faulted(
            method, res.name, lambda: self._execute(method, res, record_id, query, body)
        )

    def _authorize(self, method, query, body):
        """People signing in (``signin.py``): the login page, then back with a code."""
        form = _form(body) if method == "POST" else {}
        with self.lock:
            status, page, content_type, headers = self.signin.authorize(
                method, query, form, self.applications, self.tenant, self.timestamp()
            )
        return Response(status, page, content_type, headers)

    def _users_me(self, token):
        try:
            with self.lock:
                return json_response(200, self.signin.me(token, self.store))
        except ApiError as exc:
            return self._error(exc.status, exc.message)

    def _faulted(self, method, endpoint, call):
        """Run ``call`` unless the fault queue or the fault rate says otherwise."""
        with self.lock:
            rule = self.faults.take(method, endpoint)
            unlucky = (
                rule is None
                and endpoint != "token"
                and self.random.random() < self.config.fault_rate
            )
        if unlucky or (rule and rule.kind == "500"):
            return self._error(500, "Object reference not set to an instance of an object.")
        if rule is None:
            return call()
        if rule.kind == "429":
            return self._rate_limited(max(1, round(rule.seconds)))
        if rule.kind == "drop_before":
            return DROP
        if rule.kind == "timeout":
            self._pause(rule.seconds)
        response = call()
        if rule.kind == "drop_after" or rule.then == "drop":
            return DROP
        return response

    def _execute(self, method, res, record_id, query, body):
        try:
            if method == "GET" and record_id is None:
                return self._list(res, query)
            if method == "GET" and res.name == "Attachment":
                return self._attachment(record_id)
            if method == "GET":
                return json_response(
                    200, self.store.get(res, record_id, flag(query.get("includedetails")))
                )
            if method == "POST" and record_id is None:
                return self._post(res, body)
            if method == "DELETE" and record_id is not None:
                return json_response(200, self.store.delete(res, record_id))
            return self._error(405, "The requested resource does not support this method")
        except ApiError as exc:
            return self._error(exc.status, exc.message)

    def _list(self, res, query):
        total, rows, paging = self.store.list(res, query)
        key = res.key
        if res.name == "SoftwareLicence":
            key = None if self.variant("licence_key") == "bare" else self.variant("licence_key")
        if key is None:
            return json_response(200, rows)
        data = {"record_count": total, key: rows}
        if paging and self.variant("envelope") == "paged":
            data.update(paging)
        return json_response(200, data)

    def _post(self, res, body):
        try:
            objects = json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "The request body is not valid JSON") from None
        if not isinstance(objects, list) or not objects:
            raise ApiError(400, f"POST /{res.name} takes a JSON array of objects")
        saved = self.store.save(res, objects, unknown_status=int(self.variant("unknown_update")))
        if len(saved) == 1 or self.variant("post_response") == "last":
            return json_response(201, saved[-1])
        return json_response(201, saved)

    def _attachment(self, record_id):
        filename, data = self.store.attachment(record_id)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'")
        disposition = f'attachment; filename="{ascii_name}"'
        if ascii_name != filename:
            disposition += f"; filename*=UTF-8''{quote(filename)}"
        return Response(200, data, content_type, {"Content-Disposition": disposition})

    def _rate_limited(self, wait):
        requests, seconds = self.config.rate_limit or (300, 300)
        window = f"{seconds // 60} minute" if seconds % 60 == 0 else f"{seconds} second"
        headers = {"Retry-After": str(wait)} if self.variant("retry_after") == "present" else {}
        message = f"Rate Limit Reached - {requests} Requests per rolling {window} window"
        return json_response(429, {"error": message}, headers)

    def _error(self, status, message):
        shape = self.variant("error_body")
        if status == 500 and shape != "dotnet":
            return text_response(500, "Internal Server Error")
        if shape == "text":
            return text_response(status, message)
        if shape == "resultcode":
            return json_response(status, {"resultCode": status, "errorMessage": message})
        if shape == "dotnet":
            exception = DOTNET_EXCEPTIONS.get(status, "System.Exception")
            return json_response(
                status, {"ClassName": exception, "Message": message, "HResult": -2146233088}
            )
        return json_response(status, {"error": message})

    # -- webhooks ------------------------------------------------------------------------

    def _emit(self, event, resource_name, record):
        """Queue a delivery to every active webhook subscribed to ``event`` (under the lock)."""
        hooks = [
            hook
            for hook in self.store.tables["Webhook"].values()
            if hook.get("active")
            and not hook.get("_deleted")
            and any(str(e.get("name", "")).lower() == event for e in hook.get("events") or [])
        ]
        if not hooks:
            return
        rendered = self.store.render(resource(resource_name), record, ("lines",))
        for hook in hooks:
            self.notifications += 1
            self.webhooks.send(
                dict(hook),
                {
                    "id": str(uuid.uuid4()),
                    "webhook_id": hook["id"],
                    "notification_id": self.notifications,
                    "escmsg_id": str(uuid.uuid4()),
                    "event": event,
                    "message": f"{resource_name} {record['id']} {event.split(' ', 1)[1]}",
                    "object_id": record["id"],
                    "timestamp": self.now().strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
                    resource_name.lower(): rendered,
                },
            )

    # -- control API -----------------------------------------------------------------------

    def _control(self, method, parts, body):
        name, rest = (parts[0].lower(), parts[1:]) if parts else ("", [])
        handler = getattr(self, f"_control_{method.lower()}_{name.replace('-', '_')}", None)
        if handler is None:
            return json_response(
                404, {"error": f"no control endpoint {method} /_sim/{'/'.join(parts)}"}
            )
        try:
            data = json.loads(body) if body else {}
            return json_response(200, handler(data, rest))
        except (ValueError, ApiError) as exc:
            return json_response(400, {"error": getattr(exc, "message", str(exc))})

    def _control_resource(self, rest):
        res = resource(rest[0]) if len(rest) == 1 else None
        if res is None:
            raise ValueError("name one resource, e.g. /_sim/state/Invoice")
        return res

    def _live_counts(self):
        with self.lock:
            return {
                name: sum(not r.get("_deleted") for r in rows.values())
                for name, rows in self.store.tables.items()
            }

    def _control_post_reset(self, data, rest):
        self.reset(data.get("seed"))
        return self._live_counts()

    def _control_get_state(self, data, rest):
        if rest:
            name = self._control_resource(rest).name
            return self.store.dump(name)[name]
        with self.lock:
            return {
                "tenant": self.tenant,
                "now": self.now().isoformat(),
                "counts": self._live_counts(),
                "resources": self.store.dump(),
                "applications": [app.to_json() for app in self.applications.values()],
            }

    def _control_post_records(self, data, rest):
        return self.store.save(
            self._control_resource(rest), data if isinstance(data, list) else [data], as_user=True
        )

    def _control_post_generate(self, data, rest):
        try:
            return seeds.generate(self.store, **data)
        except TypeError:
            keys = "clients, items, invoices, licences_per_client, contracts_per_client, seed"
            raise ValueError(f"generate takes {keys}") from None

    def _control_get_config(self, data, rest):
        return self.config.to_json()

    def _control_post_config(self, data, rest):
        with self.lock:
            self.config.update(data)
            return self.config.to_json()

    def _control_get_faults(self, data, rest):
        return self.faults.to_json()

    def _control_post_faults(self, data, rest):
        rules = [FaultRule.from_json(rule) for rule in (data if isinstance(data, list) else [data])]
        with self.lock:
            self.faults.add(rules)
            return self.faults.to_json()

    def _control_delete_faults(self, data, rest):
        with self.lock:
            self.faults.clear()
        return []

    def _control_get_requests(self, data, rest):
        with self.lock:
            return {
                "total": sum(self.counts.values()),
                "by_endpoint": dict(sorted(self.counts.items())),
                "by_status": dict(sorted(self.statuses.items())),
            }

    def _control_post_requests(self, data, rest):
        """``POST /_sim/requests/wait {"answered": n, "timeout": s}``: once ``n`` requests
        have been answered since the counts were last cleared (a slow answer's write is then
        applied), the counts plus ``"done": true``; after ``timeout`` seconds, ``false``."""
        if [part.lower() for part in rest] != ["wait"]:
            raise ValueError("use POST /_sim/requests/wait")
        answered, timeout = int(data.get("answered", 1)), _wait_timeout(data)

        def enough():
            with self.lock:
                return sum(self.statuses.values()) >= answered

        with self._answered:
            done = self._answered.wait_for(lambda: self._stopping.is_set() or enough(), timeout)
        return self._control_get_requests(data, rest) | {"done": bool(done) and enough()}

    def _control_delete_requests(self, data, rest):
        with self.lock:
            self.counts.clear()
            self.statuses.clear()
        return self._control_get_requests(data, rest)

    def _control_get_applications(self, data, rest):
        return [app.to_json() for app in self.applications.values()]

    def _control_post_applications(self, data, rest):
        app = Application.from_json(data)
        with self.lock:
            self.applications[app.client_id] = app
        return app.to_json()

    def _control_get_users(self, data, rest):
        with self.lock:
            return [user.record(self.store) for user in self.signin.users.values()]

    def _control_post_users(self, data, rest):
        """A Halo user who can sign in: emailaddress, password, client_id, canaccessinvoices,
        inactive, name, login, site_id. Answers the user as ``/api/Users/me`` would."""
        with self.lock:
            return self.signin.add_user(data).record(self.store)

    def _control_get_webhook_deliveries(self, data, rest):
        return self.webhooks.deliveries()

    def _control_post_webhook_deliveries(self, data, rest):
        """``POST /_sim/webhook-deliveries/wait {"count": n, "idle": bool, "timeout": s}``:
        once ``n`` attempts are logged (with ``idle``, and nothing is left to send),
        ``{"deliveries": [...], "done": true}``; after ``timeout`` seconds, ``false``."""
        if [part.lower() for part in rest] != ["wait"]:
            raise ValueError("use POST /_sim/webhook-deliveries/wait")
        deliveries, done = self.webhooks.wait(
            int(data.get("count", 1)), bool(data.get("idle", False)), _wait_timeout(data)
        )
        return {"deliveries": deliveries, "done": done}

    def _control_delete_webhook_deliveries(self, data, rest):
        self.webhooks.clear()
        return []

    def _control_get_departures(self, data, rest):
        with self.lock:
            return list(self.departures)

    def _control_delete_departures(self, data, rest):
        """Answer the departures recorded so far and forget them."""
        with self.lock:
            taken, self.departures = self.departures, []
        return taken

    def _control_post_tokens(self, data, rest):
        if [part.lower() for part in rest] != ["expire"]:
            raise ValueError("use POST /_sim/tokens/expire")
        with self.lock:
            self.tokens.expire_all()
        return {"expired": True}


def _wait_timeout(data):
    timeout = float(data.get("timeout", 30))
    if not 0 <= timeout <= MAX_WAIT:
        raise ValueError(f"timeout must be between 0 and {MAX_WAIT:g} seconds")
    return timeout


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: every answer carries Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "HaloSimulator/1.0"
    timeout = 120  # reclaim threads held by idle keep-alive connections
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def _dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {k.lower(): v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            response = self.server.simulator.handle(
                self.command, url.path, query, self.headers, body
            )
        except Exception:
            traceback.print_exc()
            response = text_response(500, "Internal Server Error")
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def date_time_string(self, timestamp=None):
        """The Date header, by the simulator's clock (moved by ``/_sim/config``)."""
        return super().date_time_string(
            self.server.simulator.timestamp() if timestamp is None else timestamp
        )

    def log_message(self, format, *args):
        """Quiet unless verbose; the request line never holds the bearer token or secrets."""
        if self.server.simulator.config.verbose:
            super().log_message(format, *args)


class SimServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up shutdown

    def __init__(self, address, simulator):
        super().__init__(address, Handler)
        self.simulator = simulator

    @property
    def base_url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def make_server(simulator, host="127.0.0.1", port=8765):
    """A server for ``simulator``; call ``serve_forever()`` on it (port 0 = any free port)."""
    return SimServer((host, port), simulator)
