"""Halo's own API document as the contract every Halo request is held to.

`halo-openapi.json` beside this file is Halo's OpenAPI 3 document ("Halo API v2", as Halo
served it in 2024-09, trimmed to the resources the portal uses; copied from the project's
shared `halo-openapi.json`, whose `source` field says where it came from). It is the
authority on paths, verbs, query parameter names, request field names and field types.
`SUPPLEMENT` adds the few things `halo-api.md` documents that the trimmed document lacks,
each marked with where it comes from.

`contract().check(method, path, query, body)` answers the departures of one request: an
undocumented path or verb, a query name or body field the document does not list, or a
value whose type does not fit. Halo answers the first with 404 and a wrong type with 400;
it silently ignores unknown names, which is why they are worth catching: a call with a
misspelled filter returns unfiltered data. The Halo simulator holds every request to this
(and records departures), and `manage.py halo_conformance` re-checks a request log.

Pure Python: no Django, no I/O beyond reading the document once.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Any, TypeAlias

DOCUMENT = Path(__file__).with_name("halo-openapi.json")

#: A JSON Schema object of the document ({"type": "integer"}, {"$ref": ...}, ...).
Schema: TypeAlias = dict[str, Any]

#: What `halo-api.md` documents beyond the trimmed document (paths relative to the
#: resource server; query names lower case).
SUPPLEMENT: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
    # halo-api.md §3: "plus datesearch, start_date, end_date on /Invoice (documented by Halo
    # since)".
    "query": {("GET", "/Invoice"): {"datesearch": "string", "start_date": "date-time",
                                    "end_date": "date-time"}},
    # halo-api.md §4 Currency: a bare array of id, name, symbol, code, conversion_rate. The
    # trimmed document has the Currency schema but not the path.
    "paths": {("GET", "/Currency"): {},
              # Sign in with Halo (billing/accounts/halo_signin.py), the project's choice:
              # Halo's full v2 document (the one this file's copy was trimmed from:
              # covenanttechnologysolutions/halopsa-rest generator/spec/swagger.json,
              # 2024-09) lists GET /Users/me with no parameters; it answers the token's own
              # user, a `Users` record (schema in the document: client_id, inactive,
              # canaccessinvoices). That `canaccessinvoices` is the user's "Can view their
              # invoices" permission is assumed (Benji Pays' Halo SSO guide names the
              # permission, not the field). The scope guarding it (read:customers) is assumed.
              ("GET", "/Users/me"): {}},
}  # fmt: skip

#: The authorisation server's token call (halo-api.md §1), which the document does not
#: describe: `tenant` in the query (or, a variant, in the form).
TOKEN_QUERY = {"tenant": "string"}
TOKEN_FORM = {"grant_type", "client_id", "client_secret", "scope", "tenant",
              # Sign in with Halo, the project's choice: grant_type=authorization_code with
              # its code, redirect_uri (RFC 6749 §4.1.3) and PKCE's code_verifier (RFC 7636
              # §4.5). Halo offers "Authorisation Code (Native Application)" applications
              # (Halo's guide "Creating API Applications"); that its token call takes the
              # standard names is assumed.
              "code", "redirect_uri", "code_verifier"}  # fmt: skip

#: The authorisation request a person's browser takes to `<auth server>/authorize` (the
#: project's choice, for Sign in with Halo): RFC 6749 §4.1.1 and RFC 7636 §4.3 (PKCE,
#: code_challenge_method=S256), plus `tenant` as on the token call (assumed, for hosted
#: Halo). The path is what public integrations use (`https://<tenant>.halopsa.com/auth/
#: authorize`); Halo's document does not describe its authorisation server.
AUTHORIZE_QUERY = {"response_type", "client_id", "redirect_uri", "scope", "state",
                   "code_challenge", "code_challenge_method", "tenant"}  # fmt: skip


@dataclass(frozen=True)
class Departure:
    """One way a request departs from Halo's document."""

    kind: (
        str  # "undocumented endpoint" | "unknown query parameter" | "unknown field" | "wrong type"
    )
    method: str
    endpoint: str  # the document's path template, e.g. "/Invoice/{id}", or the path sent
    detail: str

    @property
    def refused(self) -> bool:
        """Halo answers these with an error instead of ignoring them."""
        return self.kind in ("undocumented endpoint", "wrong type")

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint}: {self.kind}: {self.detail}"

    def to_json(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "method": self.method,
            "endpoint": self.endpoint,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Operation:
    method: str
    template: str  # "/Invoice/{id}"
    query: dict[str, Schema] = field(default_factory=dict)  # lower-case name -> schema
    body: Schema | None = None  # request body schema


class Contract:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Schema] = {
            name.lower(): schema for name, schema in document["schemas"].items()
        }
        self.operations: list[Operation] = []
        for template, verbs in document["paths"].items():
            for verb, spec in verbs.items():
                query: dict[str, Schema] = {
                    p["name"].lower(): p.get("schema") or {}
                    for p in spec.get("parameters", [])
                    if p.get("in") == "query"
                }
                self.operations.append(Operation(verb.upper(), template, query, spec.get("body")))
        for (verb, template), query in SUPPLEMENT["paths"].items():
            self.operations.append(Operation(verb, template, dict(query)))
        for (verb, template), extra in SUPPLEMENT["query"].items():
            operation = self.operation(verb, template)
            assert operation is not None, f"SUPPLEMENT names {verb} {template}, not in the document"
            operation.query.update({name: _supplement_schema(kind) for name, kind in extra.items()})

    @classmethod
    def load(cls, path: str | Path = DOCUMENT) -> Contract:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    @cached_property
    def _by_length(self) -> dict[int, list[tuple[tuple[str, ...], Operation]]]:
        index: dict[int, list[tuple[tuple[str, ...], Operation]]] = {}
        for operation in self.operations:
            parts = tuple(p.lower() for p in operation.template.strip("/").split("/"))
            index.setdefault(len(parts), []).append((parts, operation))
        return index

    def operation(self, method: str, path: str) -> Operation | None:
        """The documented operation `method path` is (paths case-insensitive; a literal
        segment wins over `{id}`), or None."""
        parts = [p.lower() for p in path.strip("/").split("/") if p]
        best: tuple[int, Operation] | None = None
        for template, operation in self._by_length.get(len(parts), ()):
            if operation.method != method.upper():
                continue
            literal = 0
            for want, got in zip(template, parts, strict=True):
                if want.startswith("{"):
                    continue
                if want != got:
                    break
                literal += 1
            else:
                if best is None or literal > best[0]:
                    best = (literal, operation)
        return best and best[1]

    def accepts(self, method: str, path: str, name: str) -> bool:
        """Whether the document lists query parameter `name` on `method path`."""
        operation = self.operation(method, path)
        return operation is not None and name.lower() in operation.query

    def fields(self, schema_name: str) -> set[str]:
        """The property names of a schema, lower case."""
        return {name.lower() for name in self.schemas[schema_name.lower()].get("properties", {})}

    def check(
        self,
        method: str,
        path: str,
        query: Mapping[str, object] | None = None,
        body: object = None,
    ) -> tuple[Operation | None, list[Departure]]:
        """`(operation or None, [Departure])` for one resource-server request.

        `path` is relative to the resource server (`/Invoice/12`); `query` maps names to
        values (text); `body` is the decoded JSON of a POST (or None).
        """
        method = method.upper()
        operation = self.operation(method, path)
        if operation is None:
            return None, [Departure("undocumented endpoint", method, path, "not in the document")]
        found: list[Departure] = []
        for name, value in (query or {}).items():
            schema = operation.query.get(name.lower())
            if schema is None:
                found.append(Departure("unknown query parameter", method, operation.template, name))
            elif (problem := _query_problem(schema, value)) is not None:
                found.append(
                    Departure(
                        "wrong type", method, operation.template, f"{name}={value!r}: {problem}"
                    )
                )
        if operation.body is not None and body is not None:
            for where, kind, detail in self._value(operation.body, body, "body"):
                found.append(Departure(kind, method, operation.template, f"{where}: {detail}"))
        return operation, found

    def check_token(
        self, query: Mapping[str, object] | None = None, form: Mapping[str, object] | None = None
    ) -> list[Departure]:
        """Departures of a token request to the authorisation server."""
        found = [
            Departure("unknown query parameter", "POST", "/token", name)
            for name in (query or {})
            if name.lower() not in TOKEN_QUERY
        ]
        found += [
            Departure("unknown field", "POST", "/token", f"form: {name}")
            for name in (form or {})
            if name.lower() not in TOKEN_FORM
        ]
        return found

    def check_authorize(self, query: Mapping[str, object] | None = None) -> list[Departure]:
        """Departures of an authorisation request (a person's browser sends it)."""
        return [
            Departure("unknown query parameter", "GET", "/authorize", name)
            for name in (query or {})
            if name.lower() not in AUTHORIZE_QUERY
        ]

    def known(self, schema: Schema, value: Any) -> Any:
        """`value` without the object fields `schema` does not list, at every depth (what
        Halo's deserialiser keeps)."""
        schema = self._resolve(schema)
        if isinstance(value, list) and schema.get("type") == "array":
            return [self.known(schema.get("items") or {}, item) for item in value]
        properties = {k.lower(): v for k, v in (schema.get("properties") or {}).items()}
        if isinstance(value, dict) and properties:
            return {
                name: self.known(properties[str(name).lower()], item)
                for name, item in value.items()
                if str(name).lower() in properties
            }
        return value

    # -- values --------------------------------------------------------------------------

    def _resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[1].lower()]
        return schema

    def _value(self, schema: Schema, value: object, where: str) -> Iterator[tuple[str, str, str]]:
        """Yield `(where, kind, detail)` for every departure inside `value`."""
        nullable = schema.get("nullable", False)
        schema = self._resolve(schema)
        if value is None:
            # Halo's models are .NET: null fits a nullable field, and a reference (object).
            if not nullable and schema.get("type") in ("integer", "number", "boolean"):
                yield where, "wrong type", f"null where the document says {schema['type']}"
            return
        kind = schema.get("type") or ("object" if "properties" in schema else None)
        if kind == "array":
            if not isinstance(value, list):
                yield where, "wrong type", f"{_json_type(value)} where the document says array"
                return
            for index, item in enumerate(value):
                yield from self._value(schema.get("items") or {}, item, f"{where}[{index}]")
        elif kind == "object":
            if not isinstance(value, dict):
                yield where, "wrong type", f"{_json_type(value)} where the document says object"
                return
            properties = {k.lower(): v for k, v in (schema.get("properties") or {}).items()}
            if not properties:
                return  # a free-form object
            for name, item in value.items():
                prop = properties.get(str(name).lower())
                if prop is None:
                    yield f"{where}.{name}", "unknown field", "not in the document"
                else:
                    yield from self._value(prop, item, f"{where}.{name}")
        elif kind is not None and (problem := _scalar_problem(schema, value)) is not None:
            yield where, "wrong type", problem


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    containers: dict[type, str] = {list: "array", dict: "object"}
    return containers.get(type(value), type(value).__name__)


def _scalar_problem(schema: Schema, value: object) -> str | None:
    """Why a JSON scalar does not fit `schema` (None when it fits)."""
    kind, fmt = schema.get("type"), schema.get("format")
    wanted = f"{kind} ({fmt})" if fmt else kind
    mismatch = f"{_json_type(value)} {value!r} where the document says {wanted}"
    if kind == "integer":
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if integral and not isinstance(value, bool) else mismatch
    if kind == "number":
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else mismatch
    if kind == "boolean":
        return None if isinstance(value, bool) else mismatch
    if kind == "string":
        if not isinstance(value, str):
            return mismatch
        if fmt == "date-time" and value and not _is_datetime(value):
            return f"{value!r} is not a date-time"
        if fmt == "uuid" and value and not _is_uuid(value):
            return f"{value!r} is not a GUID"
        if fmt == "byte" and not _is_base64(value):
            return "not base64"
    return None


def _query_problem(schema: Schema, value: object) -> str | None:
    """Why query text does not parse as the parameter's type (None when it does).

    Booleans are not checked: the document types some filters `bool` that Halo's own
    guides and halo-api.md §4 use as dates (`invoicedatestart`, `invoicedateend` on
    /Invoice), so its query booleans are not a type to hold requests to.
    """
    kind, fmt, text = schema.get("type"), schema.get("format"), str(value).strip()
    if kind in ("int", "integer"):
        return None if _is_int(text) else "not a whole number"
    if kind == "List<int>":
        return None if all(_is_int(p) for p in text.split(",") if p.strip()) else "not ids"
    if kind == "date-time" or fmt == "date-time":
        return None if _is_datetime(text) else "not a date-time"
    if fmt == "uuid":
        return None if _is_uuid(text) else "not a GUID"
    return None


def _supplement_schema(kind: str) -> Schema:
    return {"type": "string", "format": "date-time"} if kind == "date-time" else {"type": kind}


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def check_request_log(lines: Iterable[str]) -> list[tuple[str, Departure]]:
    """`[(request, Departure)]` for a simulator request log (`--request-log`: JSON lines of
    method, path, query, body). Paths are the resource server's (`/api/...`) or the token
    call's (`.../token`); other paths (the simulator's `/_sim/`) are not Halo's."""
    found: list[tuple[str, Departure]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            method, path = request["method"], request["path"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"line {number} is not a logged request") from None
        parts = [p for p in path.split("/") if p]
        if parts[-1:] and parts[-1].lower() == "token":
            departures = contract().check_token(request.get("query"), request.get("body"))
        elif parts[:1] and parts[0].lower() == "api":
            _, departures = contract().check(
                method, "/" + "/".join(parts[1:]), request.get("query"), request.get("body")
            )
        else:
            continue
        found += [(f"{method} {path}", departure) for departure in departures]
    return found


@cache
def contract() -> Contract:
    """The project's copy of Halo's document, loaded once per process (on first use, so
    importing this module costs nothing)."""
    return Contract.load()
