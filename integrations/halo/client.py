"""The one way the portal talks to a tenant's Halo: `HaloClient(connection)`.

Every call goes through `HaloClient._send`: the shared rate budget, timeouts, counting and
DEBUG logging (never secrets, tokens or bodies). `_call` adds the bearer token (re-fetched
once on a 401), maps failures onto the `HaloError` family and retries transient ones with
backoff inside one `RetryBudget`. Lists, reads and upserts are single generic
implementations parameterised by `RESOURCES`; the named methods are thin aliases.

Inside a web request the client gets a `budget` (`HALO_WEB_BUDGET_SECONDS`, see
`web_budget()`): every retry budget, connect and read timeout and rate-budget wait is capped
by the time left, and a call that runs out raises `HaloTimedOut` instead of holding the web
worker; work that may take longer belongs on the worker (django-q2 tasks).

Creates are never duplicated by a retry: a POST holding creates whose answer was lost (no
response, read timeout, 5xx) is not replayed blindly. With a natural key the client re-reads
Halo to see which creates landed and re-sends only the others; without one it raises.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict, TypeVar, overload
from urllib.parse import unquote

import requests
from django.conf import settings
from django.core.cache import cache
from django.views.decorators.debug import sensitive_variables
from urllib3.exceptions import NewConnectionError
from urllib3.util import Timeout

from integrations.halo import egress
from integrations.halo.contract import contract
from integrations.halo.errors import (
    HaloAddressRefused,
    HaloAuthError,
    HaloBudgetExhausted,
    HaloError,
    HaloInvalidClient,
    HaloRateLimited,
    HaloRedirected,
    HaloServerError,
    HaloTimedOut,
    HaloUnavailable,
    HaloUnexpectedResponse,
    HaloWrongTenant,
    error_for_status,
    halo_message,
)
from integrations.halo.ratelimit import Deadline, RateLimiter, RetryBudget
from integrations.halo.tokens import Token, TokenCache
from portal import metrics
from portal.crypto import Masked

if TYPE_CHECKING:
    from integrations.models import HaloConnection

logger = logging.getLogger("integrations.halo")

#: One Halo record as Halo answers it: decoded JSON, Halo's field names.
Record: TypeAlias = dict[str, Any]
#: A list filter or query value: text, a number or flag, a date (sent as ISO 8601) or
#: several values (sent comma-separated).
QueryValue: TypeAlias = str | int | float | date | list[Any] | tuple[Any, ...] | set[Any]
_T = TypeVar("_T")


class _Clocks(TypedDict, total=False):
    clock: Callable[[], float]
    sleep: Callable[[float], None]


#: A licence's natural key: one per client and vendor SKU.
LICENCE_KEY: tuple[str, ...] = ("client_id", "vendor_product_sku")
#: `find` reads filtered (one read per distinct filter value) up to this many values; past
#: it, one paged read of the whole list is cheaper.
FILTERED_READS_AT_MOST = 3
#: How long Halo's list of currencies is trusted (it changes when an admin adds one).
CURRENCY_TTL = 6 * 3600
#: With less of a web budget left than this, no request is started (it could not finish).
LEAST_ATTEMPT = 0.05


def web_budget(seconds: float | None = None) -> Deadline:
    """A `Deadline` for the Halo calls of one web request: `HALO_WEB_BUDGET_SECONDS` (or
    `seconds`, capped by it). Give it to every client the request makes, as `budget`."""
    cap = settings.HALO_WEB_BUDGET_SECONDS
    return Deadline(cap if seconds is None else min(seconds, cap))


@dataclass(frozen=True)
class Resource:
    path: str
    noun: str
    plural: str
    keys: tuple[str, ...] = ()  # list envelope keys; none: Halo answers a bare array
    read_scope: str = ""
    edit_scope: str = ""
    filters: tuple[str, ...] = ()  # record fields Halo lists can be filtered on

    @property
    def paged(self) -> bool:
        """Whether Halo's document gives this list `pageinate` (else it is read whole)."""
        return contract().accepts("GET", f"/{self.path}", "pageinate")

    @property
    def inactive(self) -> bool:
        """Whether Halo's document gives this list `includeinactive`."""
        return contract().accepts("GET", f"/{self.path}", "includeinactive")


RESOURCES: dict[str, Resource] = {
    res.path: res
    for res in (
        Resource("Client", "client", "clients", ("clients",), "read:customers", "edit:customers"),
        Resource(
            "Site", "site", "sites", ("sites",), "read:customers", "edit:customers",
            filters=("client_id",),
        ),
        Resource("Item", "item", "items", ("items",), "read:items", "edit:items"),
        Resource(
            "SoftwareLicence", "licence", "licences", ("licences", "softwarelicences"),
            "read:softwarelicensing", "edit:softwarelicensing", filters=("client_id", "site_id"),
        ),
        Resource(
            "Invoice", "invoice", "invoices", ("invoices",), "read:invoices", "edit:invoices",
            filters=("client_id",),
        ),
        Resource(
            "RecurringInvoice", "recurring invoice", "recurring invoices", ("invoices",),
            "read:invoices", "edit:invoices", filters=("client_id",),
        ),
        Resource(
            "InvoicePayment", "invoice payment", "invoice payments", ("payments",),
            "read:invoices", "edit:invoices", filters=("invoice_id", "client_id"),
        ),
        Resource(
            "ClientContract", "contract", "contracts", ("contracts",), "read:contracts",
            "edit:contracts", filters=("client_id",),
        ),
        Resource(
            "Attachment", "attachment", "attachments", ("attachments",), "read:invoices",
            "edit:invoices", filters=("type", "unique_id"),
        ),
        Resource("Webhook", "webhook", "webhooks", (), "admin:webhooks", "admin:webhooks"),
        Resource("FieldInfo", "field definition", "field definitions", (), "", "admin"),
        Resource("Currency", "currency", "currencies", (), "read:invoices", ""),
    )
}  # fmt: skip


@dataclass
class RequestStats:
    """What a client (or several sharing one instance) asked of Halo."""

    requests: int = 0  # HTTP requests to the resource server, retries included
    token_requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)  # "GET /Client", "POST /Invoice"...
    retries: int = 0
    waited: float = 0.0  # seconds slept in backoff or for the rate budget
    halo_time: datetime | None = None  # Halo's clock: the Date of its latest answer


class HaloClient:
    def __init__(
        self,
        connection: HaloConnection,
        *,
        stats: RequestStats | None = None,
        session: requests.Session | None = None,
        retry_budget: float | None = None,
        budget: float | Deadline | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """`clock` and `sleep` replace the real ones (`time.time` for token expiry and the
        shared rate window, `time.monotonic` for retry budgets, `time.sleep`): tests pass a
        clock they move by hand and a sleep that moves it.

        `budget`: seconds, or a `Deadline` shared with other clients, that everything this
        client does must fit in (web requests; None: the worker's retry budgets only)."""
        self.connection = connection
        self.stats = stats or RequestStats()
        self.http = session or egress.session()
        self._clocks: _Clocks = {}
        if clock:
            self._clocks["clock"] = clock
        if sleep:
            self._clocks["sleep"] = sleep
        self.tokens = TokenCache(connection, **({"clock": clock} if clock else {}))
        self.limiter = RateLimiter(connection.pk, settings.HALO_RATE_LIMIT, **self._clocks)
        self.timeout: tuple[float, float] = (
            settings.HALO_CONNECT_TIMEOUT,
            settings.HALO_READ_TIMEOUT,
        )
        self.retry_budget: float = (
            settings.HALO_RETRY_BUDGET_SECONDS if retry_budget is None else retry_budget
        )
        self.api_url = connection.resource_url.rstrip("/")
        if budget is not None and not isinstance(budget, Deadline):
            budget = Deadline(budget, **self._clocks)
        self.deadline: Deadline | None = budget

    def __repr__(self) -> str:
        return f"<HaloClient connection={self.connection.pk} {self.api_url}>"

    # -- reading -------------------------------------------------------------------------

    def list(self, resource: str, **filters: QueryValue) -> Iterator[Record]:
        """Every matching record, page by page (a generator; Halo filters as keywords)."""
        res = RESOURCES[resource]
        params = {key: _param(value) for key, value in filters.items()}
        attempted = f"list {res.plural}"
        if not res.paged:
            yield from _rows(res, self._json("GET", res.path, attempted, params=params))[0]
            return
        size = int(params.pop("page_size", settings.HALO_PAGE_SIZE))
        page = int(params.pop("page_no", 1))
        seen_ids: set[object] = set()
        count = 0
        while True:
            paging = {"pageinate": "true", "page_size": size, "page_no": page}
            body = self._json("GET", res.path, attempted, params=params | paging)
            rows, total = _rows(res, body)
            ids = {row.get("id") for row in rows}
            if rows and ids <= seen_ids:
                return  # Halo ignored paging and repeated itself
            seen_ids |= ids
            yield from rows
            count += len(rows)
            # Trust Halo's total when it gives one: a Halo that caps page_size below what
            # was asked answers short pages that are not the last.
            if not rows or (count >= total if total is not None else len(rows) < size):
                return
            page += 1

    def get(self, resource: str, record_id: int | str, **params: QueryValue) -> Record:
        res = RESOURCES[resource]
        query = {key: _param(value) for key, value in params.items()}
        record: Record = self._json(
            "GET", f"{res.path}/{record_id}", f"read {res.noun} {record_id}", params=query
        )
        return record

    def list_clients(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("Client", **filters)

    def get_client(self, client_id: int | str) -> Record:
        return self.get("Client", client_id)

    def list_items(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("Item", **filters)

    def get_item(self, item_id: int | str) -> Record:
        return self.get("Item", item_id)

    def list_licences(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("SoftwareLicence", **filters)

    def get_licence(self, licence_id: int | str) -> Record:
        return self.get("SoftwareLicence", licence_id)

    def list_invoices(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("Invoice", **filters)

    def get_invoice(self, invoice_id: int | str, includedetails: bool = True) -> Record:
        return self.get("Invoice", invoice_id, includedetails=includedetails)

    def list_recurring_invoices(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("RecurringInvoice", **filters)

    def list_invoice_payments(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("InvoicePayment", **filters)

    def list_contracts(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("ClientContract", **filters)

    def get_contract(self, contract_id: int | str) -> Record:
        return self.get("ClientContract", contract_id)

    def list_attachments(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("Attachment", **filters)

    def list_webhooks(self) -> Iterator[Record]:
        return self.list("Webhook")

    def list_field_info(self, **filters: QueryValue) -> Iterator[Record]:
        return self.list("FieldInfo", **filters)

    def currencies(self, fresh: bool = False) -> dict[int, str]:
        """Halo's currencies as `{id: ISO 4217 code}`: an invoice's `currency_code` is one of
        these ids, not a code. Read from `GET /Currency` once per `CURRENCY_TTL` for every
        worker (shared cache); `fresh` reads again (a currency added in Halo meanwhile)."""
        site = hashlib.sha256(self.api_url.encode()).hexdigest()[:16]
        key = f"halo:currencies:{self.connection.pk}:{site}"
        pairs: builtins.list[tuple[int, str]] | None = None if fresh else cache.get(key)
        if pairs is None:
            pairs = [
                (int(row["id"]), str(row.get("code") or "").strip().upper())
                for row in self.list("Currency")
                if isinstance(row, dict) and row.get("id") is not None
            ]
            cache.set(key, pairs, CURRENCY_TTL)
        return dict(pairs)

    def currency_code(self, currency_id: int | str | None) -> str | None:
        """The ISO code of Halo currency `currency_id`, or None when Halo has no such one."""
        if currency_id in (None, ""):
            return None
        try:
            currency_id = int(currency_id)
        except (TypeError, ValueError):
            return None
        return self.currencies().get(currency_id) or self.currencies(fresh=True).get(currency_id)

    def currency_id(self, code: str | None) -> int | None:
        """The id of the Halo currency with ISO code `code`, or None when Halo has none."""
        code = str(code or "").strip().upper()

        def find(currencies: dict[int, str]) -> int | None:
            return next((cid for cid, iso in sorted(currencies.items()) if iso == code), None)

        found = find(self.currencies())
        return found if found is not None else find(self.currencies(fresh=True))

    def get_attachment_bytes(self, attachment_id: int | str) -> tuple[bytes, str, str]:
        """(bytes, filename, content type): Halo answers the raw file, not JSON."""
        response = self._call(
            "GET", f"Attachment/{attachment_id}", f"download attachment {attachment_id}"
        )
        filename = _disposition_filename(response.headers.get("Content-Disposition", ""))
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        return response.content, filename or f"attachment-{attachment_id}", content_type

    # -- writing -------------------------------------------------------------------------

    @overload
    def upsert(
        self,
        resource: str,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] | None = None,
        batch_size: int | None = None,
        find_later: Literal[False] = False,
    ) -> builtins.list[Record]: ...

    @overload
    def upsert(
        self,
        resource: str,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] | None = None,
        batch_size: int | None = None,
        *,
        find_later: bool,
    ) -> builtins.list[Record | None]: ...

    def upsert(
        self,
        resource: str,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] | None = None,
        batch_size: int | None = None,
        find_later: bool = False,
    ) -> builtins.list[Record] | builtins.list[Record | None]:
        """Create (no `id`) or update (with `id`) records; answers the saved records in
        the order given. POSTs arrays of `batch_size` (default `HALO_BATCH_SIZE`).

        `natural_key` names fields that identify a record uniquely (for licences the client
        and vendor SKU): it lets creates be retried safely and their ids be learned when
        Halo does not echo every saved record. Updates Halo does not echo are answered as
        sent, plus their id.

        `find_later`: for a caller writing many batches, who looks records up once with
        `find` at the end instead of after each batch. Creates Halo saved without echoing
        them are answered as None, and a create batch whose answer was lost raises its
        (transient, ambiguous) error without re-reading or re-sending.
        """
        sending = list(records)
        size = batch_size or settings.HALO_BATCH_SIZE
        saved: builtins.list[Record | None] = []
        for start in range(0, len(sending), size):
            saved += self._save_batch(
                RESOURCES[resource], sending[start : start + size], natural_key, find_later
            )
        return saved

    def upsert_clients(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> builtins.list[Record]:
        return self.upsert("Client", records, natural_key, batch_size)

    def upsert_items(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> builtins.list[Record]:
        return self.upsert("Item", records, natural_key, batch_size)

    @overload
    def upsert_licences(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] = LICENCE_KEY,
        batch_size: int | None = None,
        find_later: Literal[False] = False,
    ) -> builtins.list[Record]: ...

    @overload
    def upsert_licences(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] = LICENCE_KEY,
        batch_size: int | None = None,
        *,
        find_later: bool,
    ) -> builtins.list[Record | None]: ...

    def upsert_licences(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] = LICENCE_KEY,
        batch_size: int | None = None,
        find_later: bool = False,
    ) -> builtins.list[Record] | builtins.list[Record | None]:
        """`find_later=True` answers None for licences Halo saved without echoing them."""
        return self.upsert(
            "SoftwareLicence", records, natural_key, batch_size, find_later=find_later
        )

    def upsert_invoices(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> builtins.list[Record]:
        return self.upsert("Invoice", records, natural_key, batch_size)

    def upsert_recurring_invoices(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> builtins.list[Record]:
        return self.upsert("RecurringInvoice", records, natural_key, batch_size)

    def create_invoice_payments(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] = ("invoice_id", "thirdpartyid"),
        batch_size: int | None = None,
    ) -> builtins.list[Record]:
        return self.upsert("InvoicePayment", records, natural_key, batch_size)

    def upsert_contracts(
        self,
        records: Iterable[Mapping[str, Any]],
        natural_key: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> builtins.list[Record]:
        return self.upsert("ClientContract", records, natural_key, batch_size)

    def create_attachment(
        self, filename: str, data: bytes, type: str, unique_id: int | str
    ) -> Record:
        record = {
            "filename": filename,
            "data_base64": base64.b64encode(data).decode(),
            "type": type,
            "unique_id": unique_id,
        }
        [saved] = self.upsert("Attachment", [record], ("type", "unique_id", "filename"))
        return saved

    def upsert_webhook(self, record: Mapping[str, Any]) -> Record:
        [saved] = self.upsert("Webhook", [record], ("url",))
        return saved

    def delete(self, resource: str, record_id: int | str) -> int | str:
        """Delete one record; a 404 after a lost answer counts as deleted."""
        res = RESOURCES[resource]
        retry = self._retry()
        try:
            self._call(
                "DELETE", f"{res.path}/{record_id}", f"delete {res.noun} {record_id}", retry=retry
            )
        except HaloError as error:
            if not (error.status == 404 and retry.attempts):
                raise
        return record_id

    def get_token_info(self, fresh: bool = True) -> dict[str, Any]:
        """Halo's token reply without the token (`token_type`, `expires_in`, `scope`)."""
        token = None if fresh else self.tokens.current()
        return (token or self._fetch_token(self._retry())).reply

    # -- upsert internals ----------------------------------------------------------------

    def read_where(
        self, resource: str, narrowings: Iterable[Mapping[str, QueryValue]]
    ) -> Iterator[Record]:
        """Every record (inactive ones too) matching any of `narrowings` (each a dict of
        list filters, e.g. `{"client_id": 12}`), in one planned read: one filtered read
        each when they are few, else one paged read of the whole list (pages of
        `HALO_LOOKUP_PAGE_SIZE`) filtered here. Never one read per record or per batch."""
        res = RESOURCES[resource]
        distinct = list({tuple(sorted(n.items())): n for n in narrowings}.values())
        base = {"includeinactive": True} if res.inactive else {}
        if distinct and all(distinct) and len(distinct) <= FILTERED_READS_AT_MOST:
            for narrowing in distinct:
                yield from self.list(res.path, **base, **narrowing)
            return
        wanted = {tuple(sorted((f, str(v)) for f, v in n.items())) for n in distinct}
        fields = {f for narrowing in wanted for f, _ in narrowing}
        paging = {"page_size": settings.HALO_LOOKUP_PAGE_SIZE} if res.paged else {}
        for row in self.list(res.path, **base, **paging):
            have = {(f, str(row.get(f))) for f in fields}
            if not distinct or any(set(narrowing) <= have for narrowing in wanted):
                yield row

    def find(
        self, resource: str, records: Sequence[Mapping[str, Any]], natural_key: Sequence[str]
    ) -> builtins.list[Record | None]:
        """The Halo record matching each of `records` by `natural_key`, or None (one
        `read_where` narrowed by the key's fields Halo can filter on)."""
        res = RESOURCES[resource]
        narrowings = [
            {f: v for f in natural_key if f in res.filters and (v := _field(record, f))}
            for record in records
        ]
        index = {record_key(row, natural_key): row for row in self.read_where(resource, narrowings)}
        return [index.get(record_key(record, natural_key)) for record in records]

    def _save_batch(
        self,
        res: Resource,
        batch: Sequence[Mapping[str, Any]],
        natural_key: Sequence[str] | None,
        find_later: bool = False,
    ) -> builtins.list[Record | None]:
        saved: builtins.list[Record | None] = [None] * len(batch)
        pending = list(range(len(batch)))
        retry = self._retry()
        while pending:
            sending = [batch[i] for i in pending]
            creates = [i for i in pending if _is_create(batch[i])]
            try:
                body = self._json(
                    "POST",
                    res.path,
                    _describe(res, sending),
                    json=sending,
                    retry=retry,
                    replay_safe=not creates,
                )
            except HaloError as error:
                if not (error.ambiguous and creates) or find_later:
                    raise
                if not natural_key or not all(_has_key(batch[i], natural_key) for i in creates):
                    raise error.note(
                        f"It was not retried: Halo may have created the {res.plural} already "
                        "and a retry could duplicate them. Check Halo before trying again."
                    ) from None
                # A request Halo did not answer in time may still be working: give it as
                # long again before looking, so a late create is seen rather than repeated.
                self.stats.waited += retry.pause(getattr(error, "settle", 0.0), error)
                found = self.find(res.path, [batch[i] for i in creates], natural_key)
                for i, record in zip(creates, found, strict=True):
                    saved[i] = record
                pending = [i for i in pending if saved[i] is None]
                if pending:
                    self._backoff(retry, error)
                continue
            self._match(res, batch, pending, body, natural_key, saved, find_later)
            pending = []
        return saved

    def _match(
        self,
        res: Resource,
        batch: Sequence[Mapping[str, Any]],
        pending: builtins.list[int],
        body: Any,
        natural_key: Sequence[str] | None,
        saved: builtins.list[Record | None],
        find_later: bool = False,
    ) -> None:
        """Pair Halo's answer with what was sent: in order, or the last object only."""
        returned = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
        if len(returned) == len(pending):
            pairs = list(zip(pending, returned, strict=True))
        else:
            pairs = [(pending[-1], returned[-1])] if returned else []
        for i, record in pairs:
            sent_id = _field(batch[i], "id")
            if sent_id and str(record.get("id")) != str(sent_id):
                raise HaloUnexpectedResponse(
                    f"answered id {record.get('id')} for {res.noun} {sent_id}",
                    method="POST",
                    endpoint=f"/{res.path}",
                    attempted=_describe(res, [batch[i]]),
                )
            saved[i] = record
        for i in pending:
            if saved[i] is None and not _is_create(batch[i]):
                saved[i] = {str(k).lower(): v for k, v in batch[i].items()}
        unknown = [i for i in pending if saved[i] is None]
        if unknown and natural_key and all(_has_key(batch[i], natural_key) for i in unknown):
            if find_later:
                return  # the caller looks them up once, with find()
            found = self.find(res.path, [batch[i] for i in unknown], natural_key)
            for i, record in zip(unknown, found, strict=True):
                saved[i] = record
        if missing := [i for i in unknown if saved[i] is None]:
            raise HaloUnexpectedResponse(
                f"saved {len(pending)} {res.plural} but did not return the ids of "
                f"{len(missing)} new ones, and no natural key was given to find them by",
                method="POST",
                endpoint=f"/{res.path}",
                attempted=_describe(res, [batch[i] for i in missing]),
            )

    # -- HTTP ----------------------------------------------------------------------------

    def _retry(self) -> RetryBudget:
        base, cap = settings.HALO_BACKOFF_BASE, settings.HALO_BACKOFF_CAP
        if self.deadline is None:
            return RetryBudget(self.retry_budget, base, cap, **self._clocks)
        clocks: _Clocks = {
            "clock": self.deadline.clock,
            "sleep": self.deadline.sleep,
            **self._clocks,
        }
        # Backoff ends early enough for one more attempt: else the call would stop on the
        # web budget (HaloTimedOut) and not on what Halo last answered.
        seconds = min(self.retry_budget, self.deadline.remaining() - LEAST_ATTEMPT)
        return RetryBudget(max(seconds, 0.0), base, cap, **clocks)

    def _timeouts(
        self, method: str, label: str, attempted: str, url: str
    ) -> tuple[tuple[float, float], tuple[float, float] | Timeout]:
        """(connect, read) seconds for the next request, and what to pass to requests:
        within a web budget, each capped by the time left, and the two together too."""
        if self.deadline is None:
            return self.timeout, self.timeout
        left = self.deadline.remaining()
        if left < LEAST_ATTEMPT:
            raise self._timed_out(self.deadline, method, label, attempted, url, asked=False)
        connect, read = (min(limit, left) for limit in self.timeout)
        return (connect, read), Timeout(connect=connect, read=read, total=left)

    def _timed_out(
        self,
        deadline: Deadline,
        method: str,
        label: str,
        attempted: str,
        url: str,
        ambiguous: bool = False,
        settle: float = 0.0,
        asked: bool = True,
    ) -> HaloTimedOut:
        return HaloTimedOut(
            f"{deadline.seconds:g} s",
            asked=asked,
            ambiguous=ambiguous,
            settle=settle,
            url=url.split("?")[0],
            method=method,
            endpoint=label.split(" ", 1)[1],
            attempted=attempted,
        )

    def _json(self, method: str, path: str, attempted: str, **kwargs: Any) -> Any:
        """Halo's answer as decoded JSON (None for an empty one)."""
        response = self._call(method, path, attempted, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise HaloUnexpectedResponse(
                "the answer is not JSON", method=method, endpoint=f"/{path}", attempted=attempted
            ) from None

    def _call(
        self,
        method: str,
        path: str,
        attempted: str,
        *,
        retry: RetryBudget | None = None,
        replay_safe: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One logical resource call: token, retries, errors. `replay_safe=False`: do not
        re-send after an answer was lost (raise instead), because the call creates."""
        resource = RESOURCES[path.split("/")[0]]
        label = f"{method} /{resource.path}" + ("/{id}" if "/" in path else "")
        url = f"{self.api_url}/{path}"
        budget = retry or self._retry()

        def attempt() -> requests.Response:
            token = self._access_token(budget)
            response = self._send(method, url, label, budget, attempted, token, **kwargs)
            if response.status_code == 401:
                token = self._access_token(budget, stale=token)
                response = self._send(method, url, label, budget, attempted, token, **kwargs)
            if response.status_code >= 400:
                raise self._error(response, method, f"/{path}", attempted, resource)
            return response

        return self._retrying(budget, attempt, replay_safe)

    def _retrying(
        self, retry: RetryBudget, attempt: Callable[[], _T], replay_safe: bool = True
    ) -> _T:
        while True:
            try:
                return attempt()
            except (HaloBudgetExhausted, HaloTimedOut):
                raise
            except HaloError as error:
                if not error.transient or (error.ambiguous and not replay_safe):
                    raise
                self._backoff(retry, error)

    def _backoff(self, retry: RetryBudget, error: HaloError) -> None:
        self.stats.waited += retry.backoff(error)
        self.stats.retries += 1

    def _access_token(self, retry: RetryBudget, stale: str | None = None) -> str:
        token = self.tokens.current(stale=stale)
        return (token or self._fetch_token(retry)).access_token

    @sensitive_variables()
    def _fetch_token(self, retry: RetryBudget) -> Token:
        conn = self.connection
        url = f"{conn.auth_url.rstrip('/')}/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": conn.client_id,
            "client_secret": conn.secret_for(url),  # only to the host it was entered for
            "scope": conn.scopes or "all",
        }
        params = {"tenant": conn.halo_tenant} if conn.halo_tenant else None

        def attempt() -> Token:
            response = self._send(
                "POST", url, "POST /token", retry, "get an access token", params=params, data=form
            )
            if response.status_code != 200:
                raise self._token_error(response, url)
            return self.tokens.store(_token_reply(response, url))

        return self._retrying(retry, attempt)

    @sensitive_variables()
    def _send(
        self,
        method: str,
        url: str,
        label: str,
        retry: RetryBudget,
        attempted: str,
        token: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Exactly one HTTP request, inside the rate budget, counted and logged."""
        waited = self.limiter.acquire(max_wait=retry.remaining())
        if waited is None or waited > 0:
            metrics.count(metrics.HALO_BUDGET_WAITS)
        if waited is None:
            raise HaloBudgetExhausted(
                method=method,
                endpoint=label.split(" ", 1)[1],
                attempted=attempted,
                retry_after=self.limiter.next_free,
            ).note(f"(HALO_RATE_LIMIT: {settings.HALO_RATE_LIMIT} requests per connection.)")
        self.stats.waited += waited
        timeout, sent_timeout = self._timeouts(method, label, attempted, url)
        if token is None:
            self.stats.token_requests += 1
        else:
            self.stats.requests += 1
            self.stats.by_endpoint[label] += 1
        headers = {"Authorization": Masked(f"Bearer {token}")} if token else {}
        started = time.perf_counter()
        try:
            response = self.http.request(
                method,
                url,
                headers=headers,
                # A urllib3 Timeout (web budget) goes through requests as it is; the stubs
                # know only seconds.
                timeout=sent_timeout,  # type: ignore[arg-type]
                **kwargs,
            )
        except egress.BlockedAddress as blocked:
            raise HaloAddressRefused(
                str(blocked), url=url.split("?")[0], method=method, attempted=attempted
            ) from None
        except requests.RequestException as exc:
            logger.debug(
                "Halo %s failed after %.0f ms: %s (%s)",
                label,
                _ms(started),
                type(exc).__name__,
                attempted,
            )
            settle = timeout[1] if isinstance(exc, requests.ReadTimeout) else 0.0
            if isinstance(exc, requests.Timeout) and self.deadline is not None:
                if self.deadline.remaining() < LEAST_ATTEMPT:  # the web budget cut it short
                    raise self._timed_out(
                        self.deadline, method, label, attempted, url, not _never_sent(exc), settle
                    ) from None
            raise HaloUnavailable(
                _reason(exc, timeout),
                ambiguous=not _never_sent(exc),
                settle=settle,
                url=url.split("?")[0],
                method=method,
                endpoint=label.split(" ", 1)[1],
                attempted=attempted,
            ) from None
        metrics.count(metrics.HALO_REQUESTS)
        if response.status_code == 429:
            metrics.count(metrics.HALO_429S)
        self.stats.halo_time = _date_header(response.headers.get("Date")) or self.stats.halo_time
        logger.debug(
            "Halo %s %s -> %s in %.0f ms (%s)",
            label,
            kwargs.get("params") or "",
            response.status_code,
            _ms(started),
            attempted,
        )
        if 300 <= response.status_code < 400:  # never followed (egress): say where it led
            raise HaloRedirected(
                response.headers.get("Location", "")[:200],
                status=response.status_code,
                method=method,
                endpoint=label.split(" ", 1)[1],
                attempted=attempted,
                url=url.split("?")[0],
            )
        return response

    def _error(
        self,
        response: requests.Response,
        method: str,
        endpoint: str,
        attempted: str,
        resource: Resource,
    ) -> HaloError:
        cls = error_for_status(response.status_code)
        error = cls(
            halo_message(response),
            status=response.status_code,
            method=method,
            endpoint=endpoint,
            attempted=attempted,
            url=self.api_url,
        )
        if isinstance(error, HaloRateLimited):
            error.retry_after = _retry_after(response.headers.get("Retry-After"))
        if response.status_code == 403:
            error.permission = resource.read_scope if method == "GET" else resource.edit_scope
        return error

    def _token_error(self, response: requests.Response, url: str) -> HaloError:
        status, message = response.status_code, halo_message(response)
        cls = error_for_status(status)
        if "invalid_client" in message:
            cls = HaloInvalidClient
        elif status in (400, 401, 403):
            cls = HaloAuthError
        elif status == 500 and self.connection.halo_tenant:
            cls = HaloWrongTenant
        elif status >= 500:
            cls = HaloServerError
        error = cls(
            message,
            status=status,
            method="POST",
            endpoint="/token",
            attempted="get an access token",
            url=url,
        )
        if isinstance(error, HaloRateLimited):
            error.retry_after = _retry_after(response.headers.get("Retry-After"))
        return error


def discover_auth_url(site: str, timeout: float | None = None) -> str | None:
    """The authorisation server Halo announces at `<site>/api/authinfo`, or None."""
    timeout = settings.HALO_DISCOVERY_TIMEOUT if timeout is None else timeout
    try:
        response = egress.session().get(
            f"{site.rstrip('/')}/api/authinfo",
            timeout=Timeout(connect=timeout, read=timeout, total=timeout),  # type: ignore[arg-type]
        )
        auth_url = response.json().get("auth_url") if response.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):  # BlockedAddress too
        return None
    if isinstance(auth_url, str) and auth_url.startswith("http"):
        return auth_url.rstrip("/")
    return None


# -- helpers -------------------------------------------------------------------------------


def _rows(res: Resource, body: Any) -> tuple[builtins.list[Record], int | None]:
    """(records, record_count or None) from any list envelope Halo uses."""
    if isinstance(body, list):
        return body, None
    if isinstance(body, dict):
        total = body.get("record_count")
        for key in res.keys:
            if isinstance(body.get(key), list):
                return body[key], total
        lists = [value for value in body.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0], total
    raise HaloUnexpectedResponse(
        "no list of records in the answer",
        method="GET",
        endpoint=f"/{res.path}",
        attempted=f"list {res.plural}",
    )


def _token_reply(response: requests.Response, url: str) -> dict[str, Any]:
    """Halo's token reply with the token masked, so no local or repr shows it."""
    try:
        reply = response.json()
        return {**reply, "access_token": Masked(reply["access_token"])}
    except (ValueError, KeyError, TypeError):
        raise HaloUnexpectedResponse(
            "the token reply has no access_token", status=response.status_code,
            method="POST", endpoint="/token", attempted="get an access token", url=url,
        ) from None  # fmt: skip


def _param(value: QueryValue) -> str | int | float:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set)):
        return ",".join(str(v) for v in value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _field(record: Mapping[str, Any], name: str) -> Any:
    """A field of a record being sent; Halo matches names case-insensitively."""
    for key, value in record.items():
        if str(key).lower() == name:
            return value
    return None


def _is_create(record: Mapping[str, Any]) -> bool:
    return _field(record, "id") in (None, 0, "", "0")


def _has_key(record: Mapping[str, Any], natural_key: Sequence[str]) -> bool:
    """Whether a sent record carries every natural key field (else it cannot be found)."""
    return bool(natural_key) and all(_field(record, f) not in (None, "") for f in natural_key)


def record_key(record: Mapping[str, Any], natural_key: Sequence[str]) -> tuple[str, ...]:
    """A record's natural key, compared the way Halo matches text (trimmed, any case)."""
    return tuple(str(_field(record, name)).strip().casefold() for name in natural_key)


def _describe(res: Resource, records: Sequence[Mapping[str, Any]]) -> str:
    """What the portal was doing, for error messages: "create licence 'EDR' for client 12"."""
    if len(records) != 1:
        new = sum(map(_is_create, records))
        return f"save {len(records)} {res.plural} ({new} new, {len(records) - new} updates)"
    record = records[0]
    record_id = None if _is_create(record) else _field(record, "id")
    text = f"{'update' if record_id else 'create'} {res.noun}"
    if label := _field(record, "name") or _field(record, "filename"):
        text += f" '{label}'"
    if record_id:
        text += f" {record_id}"
    if client_id := _field(record, "client_id"):
        text += f" for client {client_id}"
    elif invoice_id := _field(record, "invoice_id") or (_field(record, "unique_id")):
        text += f" on invoice {invoice_id}"
    return text


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None when absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _date_header(value: str | None) -> datetime | None:
    """An HTTP Date header as an aware datetime, or None."""
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached Halo (so replaying it is harmless)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectTimeout) or isinstance(reason, NewConnectionError)


def _reason(exc: requests.RequestException, timeout: tuple[float, float]) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {timeout[0]:g} s"
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer within {timeout[1]:g} s"
    text = str(exc)
    if "NameResolutionError" in text or "Name or service not known" in text:
        return "the host name does not resolve"
    if match := re.search(r"\[Errno -?\d+\] ([^'\")]+)", text):
        return match.group(1).strip().lower()
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "the connection closed without an answer"
    return type(exc).__name__


def _disposition_filename(header: str) -> str | None:
    """The file name of a Content-Disposition header, preferring RFC 6266 `filename*`."""
    if match := re.search(r"filename\*\s*=\s*([\w-]*)'[^']*'([^;\s]+)", header, re.IGNORECASE):
        return unquote(match.group(2), encoding=match.group(1) or "utf-8", errors="replace")
    if match := re.search(r'filename\s*=\s*(?:"([^"]*)"|([^;]+))', header, re.IGNORECASE):
        return (match.group(1) or match.group(2)).strip()
    return None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
