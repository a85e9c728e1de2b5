"""In-memory Halo data and the business rules behind it.

One generic implementation serves every resource.  A ``Resource`` spec says
what differs (list key, scopes, required fields, filters, defaults) and a few
hooks carry the real rules: invoice lines and totals, payments moving invoice
amounts, custom fields, webhooks subscriptions, attachments.

Records are stored complete, with lower-case keys, in ``Store.tables``; what
an API call answers is made by ``Store.render`` (nulls, hidden and optional
fields left out).  Deleting leaves a tombstone (``"_deleted": true``) that
only ``/_sim/state`` shows; for the API the record is gone (404, absent from
lists, unknown to updates), SoftwareLicence included.  Every public method
takes ``Store.lock``, so a batch POST is atomic: it is checked whole before
anything is applied.
"""

import base64
import binascii
import copy
import operator
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: Field types Halo's typed models enforce; a value that does not convert is a 400.
INT_FIELDS = frozenset(
    {
        "client_id", "site_id", "invoice_id", "contract_id", "main_site_id", "toplevel_id",
        "type", "unique_id", "subtype", "authentication_type", "eventno", "licence_id",
        "_itemid", "count", "currency_code", "method",
    }
)  # fmt: skip
NUMBER_FIELDS = frozenset(
    {
        "amount", "price", "purchase_price", "baseprice", "costprice", "recurringprice",
        "recurringcost", "total", "unit_price", "qty_order", "tax_rate",
    }
)  # fmt: skip
BOOL_FIELDS = frozenset(
    {"inactive", "is_active", "deleted", "active", "posted", "voided", "isrecurringitem"}
)
DATE_FIELDS = frozenset(
    {
        "datecreated", "date_created", "last_modified", "invoice_date", "duedate", "datepaid",
        "start_date", "end_date", "startdate", "enddate", "date", "nextcreationdate",
    }
)  # fmt: skip
#: Fields naming another record; a value that names nothing is a 400.
REFERENCES = {
    "client_id": "Client",
    "site_id": "Site",
    "main_site_id": "Site",
    "contract_id": "ClientContract",
    "invoice_id": "Invoice",
}
#: Webhook event numbers are our choice; subscriptions match on the name.
EVENTS = {1: "invoice created", 2: "invoice updated", 3: "invoice paid", 4: "client updated"}
#: Halo's currencies (``GET /Currency``): id, name, symbol, ISO code, rate. An invoice's
#: ``currency_code`` is one of these ids, its ``currency`` the symbol. The ids and the
#: default (1, the tenant's base currency) are our choice; Halo only says they are ids.
CURRENCIES = (
    (1, "Pound Sterling", "£", "GBP", 1.0),
    (2, "US Dollar", "$", "USD", 1.27),
    (3, "Euro", "€", "EUR", 1.17),
    (4, "Australian Dollar", "A$", "AUD", 1.93),
    (5, "Canadian Dollar", "C$", "CAD", 1.74),
)
BASE_CURRENCY = 1
#: Agreement subtypes a partner can pick on a ClientContract.
CONTRACT_SUBTYPES = {1: "Managed Services", 2: "Pay As You Go", 3: "Project Work"}
ATTACHMENT_TYPE_INVOICE = 3
#: Webhook.method is an integer; 1 is POST (our choice).
WEBHOOK_POST = 1
CENT = 0.005


class ApiError(Exception):
    """A refusal Halo would answer: HTTP status plus a terse message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_datetime(value):
    """ISO-8601 text (date only, ``Z`` or an offset allowed) as naive UTC; None if not a date."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if parsed.tzinfo:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def flag(value):
    return str(value).strip().lower() in ("true", "1", "yes")


def _as_int(value):
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _as_number(value):
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _as_bool(value):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1"):
        return True
    if str(value).lower() in ("false", "0"):
        return False
    raise ValueError(value)


def _as_date(value):
    if value == "":
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValueError(value)
    return parsed.isoformat()


_CONVERTERS = (
    (BOOL_FIELDS, _as_bool),
    (INT_FIELDS, _as_int),
    (NUMBER_FIELDS, _as_number),
    (DATE_FIELDS, _as_date),
)


def _normalise(value, key=None):
    """Lower-case keys at every depth (Halo matches them case-insensitively) and type values."""
    if isinstance(value, dict):
        return {str(k).lower(): _normalise(v, str(k).lower()) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(item, key) for item in value]
    if value is None:
        return None
    for fields, convert in _CONVERTERS:
        if key in fields:
            try:
                return convert(value)
            except (TypeError, ValueError):
                raise ApiError(400, f"Invalid value for {key}: {value!r}") from None
    return value


def _int_param(value, name):
    try:
        return _as_int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} must be a whole number") from None


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _filled(value):
    return value not in (None, "")


def _sort_key(name):
    def key(record):
        value = record.get(name)
        if value is None:
            return (1, 0, 0)
        if isinstance(value, (int, float)):
            return (0, 0, value)
        return (0, 1, str(value).casefold())

    return key


@dataclass(frozen=True)
class Resource:
    """What one Halo resource does differently from the generic behaviour."""

    name: str
    # List envelope key; None: lists answer a bare array.
    key: str | None
    # None: any valid token may read.
    read_scope: str | None
    edit_scope: str
    # Groups of fields; each group needs one of its fields filled.
    required: tuple = ()
    search: tuple = ("name",)
    # "inactive" hides a record when true; "is_active" / "active" when false.
    inactive_field: str | None = None
    # Query parameter -> (field, "ids" | "true" | "gte" | "lte").
    filters: dict = field(default_factory=dict)
    # Fields allowed in datesearch=.
    date_search: tuple = ()
    # Set on create for fields left empty.
    defaults: dict = field(default_factory=dict)
    created_field: str = "datecreated"
    # Unpaged lists answer at most count (default 50) rows.
    capped: bool = True
    guid_ids: bool = False
    customfields: bool = False
    # Stored, never answered.
    hidden: tuple = ()
    # Computed by the server; values sent are ignored.
    readonly: tuple = ()
    # Nested data answered only on request: name -> fn(store, record).
    optional: dict = field(default_factory=dict)
    # Hooks.  prepare(store, record, existing, batch) checks and derives, with no
    # side effects; commit(store, record, existing) runs once stored;
    # on_delete(store, record); refresh(record, now) recomputes time-dependent
    # fields before reads.
    prepare: Callable | None = None
    commit: Callable | None = None
    on_delete: Callable | None = None
    refresh: Callable | None = None

    def is_inactive(self, record):
        value = record.get(self.inactive_field)
        return bool(value) if self.inactive_field == "inactive" else value is False


class Store:
    """All records of one Halo instance.  ``emit(event, resource, record)`` is
    called (under the lock) for webhook-worthy changes."""

    def __init__(self, now, emit):
        self.now = now
        self.emit = emit
        self.lock = threading.RLock()
        self.clear()

    # -- whole-state operations (used by /_sim/) ------------------------------------

    def clear(self):
        with self.lock:
            self.tables = {res.name: {} for res in RESOURCES.values()}
            self.next_ids = dict.fromkeys(self.tables, 1)
            self._next_line_id = 1

    def load(self, data):
        """Insert raw records by resource name, exactly as ``dump`` gives them.

        Everything is checked before anything is inserted.
        """
        checked = []
        for name, records in data.items():
            res = resource(name)
            if res is None or not isinstance(records, list):
                raise ValueError(f"{name!r} is not a resource with a list of records")
            for record in records:
                if not isinstance(record, dict) or "id" not in record:
                    raise ValueError(f"each {res.name} record must be an object with an id")
                checked.append((res, _normalise(record)))
        with self.lock:
            for res, record in checked:
                self.tables[res.name][record["id"]] = record
                if not res.guid_ids:
                    self.next_ids[res.name] = max(self.next_ids[res.name], record["id"] + 1)
                for line in record.get("lines") or []:
                    self._next_line_id = max(self._next_line_id, line["id"] + 1)

    def dump(self, name=None):
        with self.lock:
            names = [resource(name).name] if name else list(self.tables)
            return {n: copy.deepcopy(list(self.tables[n].values())) for n in names}

    # -- API operations --------------------------------------------------------------

    def live(self, name, record_id):
        record = self.tables[name].get(record_id)
        return None if record is None or record.get("_deleted") else record

    def render(self, res, record, show=()):
        out = {"id": record["id"]}
        out.update(
            (k, v)
            for k, v in record.items()
            if k[0] != "_" and k not in res.hidden and k not in res.optional
        )
        for name in show:
            if name in res.optional:
                out[name] = res.optional[name](self, record)
        return _without_nulls(out)

    def list(self, res, query):
        """Rows answering a list call: ``(record_count, rows, paging or None)``."""
        with self.lock:
            rows = [r for r in self.tables[res.name].values() if not r.get("_deleted")]
            if res.refresh:
                now = self.now()
                for row in rows:
                    res.refresh(row, now)
            if res.inactive_field and not flag(query.get("includeinactive")):
                rows = [r for r in rows if not res.is_inactive(r)]
            if term := query.get("search", "").casefold():
                rows = [
                    r
                    for r in rows
                    if any(term in str(r.get(f) or "").casefold() for f in res.search)
                ]
            for param, (name, op) in res.filters.items():
                if query.get(param, "") != "":
                    rows = _filter(rows, name, op, query[param], param)
            if "datesearch" in query and res.date_search:
                name = query["datesearch"].lower()
                if name not in res.date_search:
                    raise ApiError(400, f"datesearch must be one of {', '.join(res.date_search)}")
                for param, op in (("start_date", "gte"), ("end_date", "lte")):
                    if query.get(param):
                        rows = _filter(rows, name, op, query[param], param)
            rows.sort(key=operator.itemgetter("id"))
            if query.get("order"):
                rows.sort(
                    key=_sort_key(query["order"].lower()), reverse=flag(query.get("orderdesc"))
                )
            paging = None
            if flag(query.get("pageinate")):
                size = _int_param(query.get("page_size", 50), "page_size")
                number = _int_param(query.get("page_no", 1), "page_no")
                if size < 1 or number < 1:
                    raise ApiError(400, "page_size and page_no start at 1")
                page = rows[(number - 1) * size : number * size]
                paging = {"page_no": number, "page_size": size}
            elif "count" in query or res.capped:
                count = _int_param(query.get("count", 50), "count")
                page = rows[: max(count, 0)]
            else:
                page = rows
            show = ("lines",) if flag(query.get("includelines")) else ()
            return len(rows), [self.render(res, r, show) for r in page], paging

    def get(self, res, record_id, details=False):
        with self.lock:
            record = self._existing(res, record_id)
            if res.refresh:
                res.refresh(record, self.now())
            return self.render(res, record, tuple(res.optional) if details else ())

    def attachment(self, record_id):
        """``(filename, bytes)`` of a live attachment."""
        with self.lock:
            record = self._existing(RESOURCES["attachment"], record_id)
            return record["filename"], base64.b64decode(record["data_base64"])

    def save(self, res, objects, *, unknown_status=400, as_user=False):
        """Create or update many records atomically; answers the saved records.

        ``as_user`` is a Halo user in the UI (``/_sim/records``, seeds): an
        unknown id creates a record with that id, and timestamps sent are kept.
        """
        with self.lock:
            batch = {}
            now = self.now().isoformat()
            plan = [self._prepare(res, obj, batch, unknown_status, as_user, now) for obj in objects]
            saved = [self._commit(res, existing, record) for existing, record in plan]
            return [self.render(res, record, ("lines",)) for record in saved]

    def delete(self, res, record_id):
        with self.lock:
            record = self._existing(res, record_id)
            record["_deleted"] = True
            record["last_modified"] = self.now().isoformat()
            if res.on_delete:
                res.on_delete(self, record)
            return {"id": record["id"]}

    def new_line_id(self):
        self._next_line_id += 1
        return self._next_line_id - 1

    def record_id(self, res, value):
        """A record id as sent (path or body); None for "new"."""
        if value in (None, 0, "", "0"):
            return None
        return str(value) if res.guid_ids else _int_param(value, "id")

    # -- internals -------------------------------------------------------------------

    def _existing(self, res, record_id):
        try:
            record = self.live(res.name, self.record_id(res, record_id))
        except ApiError:
            record = None
        if record is None:
            raise ApiError(404, f"{res.name} {record_id} not found")
        return record

    def _prepare(self, res, obj, batch, unknown_status, as_user, now):
        if not isinstance(obj, dict):
            raise ApiError(400, f"Each {res.name} must be a JSON object")
        obj = _normalise(obj)
        record_id = self.record_id(res, obj.pop("id", None))
        existing = None
        if record_id is not None:
            existing = batch.get(record_id) or self.live(res.name, record_id)
            if existing is None and not as_user:
                raise ApiError(unknown_status, f"{res.name} {record_id} not found")
        for key in (*res.readonly, "client_name"):
            obj.pop(key, None)
        if not as_user:
            obj.pop(res.created_field, None)
            obj.pop("last_modified", None)
        customfields = obj.pop("customfields", None)

        record = copy.deepcopy(existing) if existing else {"id": record_id} if record_id else {}
        record.update(obj)
        if existing is None:
            for key, value in res.defaults.items():
                if record.get(key) is None:
                    record[key] = value
        for group in res.required:
            if not any(_filled(record.get(name)) for name in group):
                raise ApiError(400, f"{res.name}: {' or '.join(group)} is required")
        for name, target in REFERENCES.items():
            if obj.get(name):
                referenced = self.live(target, obj[name])
                if referenced is None:
                    raise ApiError(400, f"{target} {obj[name]} not found")
                if name == "client_id":
                    record["client_name"] = referenced["name"]
        if customfields is not None and res.customfields:
            _merge_customfields(self, res, record, customfields)
        if res.prepare:
            res.prepare(self, record, existing, batch)
        for key in [k for k in record if k.startswith("_")]:
            del record[key]
        if existing is None and not record.get(res.created_field):
            record[res.created_field] = now
        if "last_modified" not in obj:
            record["last_modified"] = now
        if record_id is not None:
            batch[record_id] = record
        return existing, record

    def _commit(self, res, existing, record):
        if "id" not in record:
            if res.guid_ids:
                record["id"] = str(uuid.uuid4())
            else:
                record["id"] = self.next_ids[res.name]
        if not res.guid_ids:
            self.next_ids[res.name] = max(self.next_ids[res.name], record["id"] + 1)
        self.tables[res.name][record["id"]] = record
        if res.commit:
            res.commit(self, record, existing)
        return record


def _filter(rows, name, op, raw, param):
    if op == "true":
        return [r for r in rows if r.get(name)] if flag(raw) else rows
    if op == "ids":
        wanted = {_int_param(part, param) for part in raw.split(",") if part.strip()}
        return [r for r in rows if r.get(name) in wanted]
    bound = parse_datetime(raw)
    if bound is None:
        raise ApiError(400, f"{param} must be a date")
    compare = operator.ge if op == "gte" else operator.le
    return [
        r
        for r in rows
        if (value := parse_datetime(r.get(name))) is not None and compare(value, bound)
    ]


def _merge_customfields(store, res, record, sent):
    if not isinstance(sent, list):
        raise ApiError(400, "customfields must be a list")
    current = {cf["id"]: cf for cf in record.get("customfields") or []}
    for entry in sent:
        if not isinstance(entry, dict) or "id" not in entry:
            raise ApiError(400, "custom fields are written as {id, value}")
        field_id = _int_param(entry["id"], "customfields id")
        definition = store.live("FieldInfo", field_id)
        if definition is None or definition.get("entity") != res.name:
            raise ApiError(400, f"Custom field {field_id} does not exist on {res.name}")
        value = entry.get("value")
        current[field_id] = {
            "id": field_id,
            "name": definition["name"],
            "label": definition.get("label"),
            "type": definition.get("type", 0),
            "value": value,
            "display": "" if value is None else str(value),
        }
    record["customfields"] = [current[k] for k in sorted(current)]


# -- resource rules ------------------------------------------------------------------


def _commit_client(store, record, existing):
    """Halo gives every new client a "Main" site; renames reach denormalised names."""
    if existing is None:
        if not record.get("main_site_id"):
            [site] = store.save(
                RESOURCES["site"], [{"name": "Main", "client_id": record["id"]}], as_user=True
            )
            record["main_site_id"] = site["id"]
        return
    if record["name"] != existing["name"]:
        for table in store.tables.values():
            for other in table.values():
                if other.get("client_id") == record["id"] and "client_name" in other:
                    other["client_name"] = record["name"]
    store.emit("client updated", "Client", record)


def _price_lines(store, record, existing):
    """Resolve items and licences of invoice lines, price them, and total the invoice.

    Lines sent replace the stored ones; a line sent with the id of a stored
    line updates only the fields sent.
    """
    stored = {line["id"]: line for line in (existing or {}).get("lines") or []}
    lines = []
    for line in record.get("lines") or []:
        if not isinstance(line, dict):
            raise ApiError(400, "Each invoice line must be an object")
        line_id = _int_param(line.get("id") or 0, "line id")
        if line_id and line_id not in stored:
            raise ApiError(400, f"Invoice line {line_id} not found")
        line = {**stored.get(line_id, {}), **line}
        if item_id := line.pop("_itemid", None):
            item = store.live("Item", item_id)
            if item is None:
                raise ApiError(400, f"Item {item_id} not found")
            line["_item_id"] = item_id
            if line.get("item_shortdescription") is None:
                line["item_shortdescription"] = item["name"]
            if line.get("unit_price") is None:
                price_field = "recurringprice" if item.get("isrecurringitem") else "baseprice"
                line["unit_price"] = item.get(price_field) or 0.0
        line.pop("linked_item", None)  # Halo's rendering of the item; never stored
        if line.get("quantity_licences"):
            count = 0
            for link in line["quantity_licences"]:
                licence = store.live("SoftwareLicence", link.get("licence_id"))
                if licence is None:
                    raise ApiError(400, f"SoftwareLicence {link.get('licence_id')} not found")
                count += licence.get("count") or 0
            line["qty_order"] = float(count)
        quantity = 1.0 if line.get("qty_order") is None else line["qty_order"]
        price = line.get("unit_price") or 0.0
        rate = line.get("tax_rate") or 0.0
        net = round(quantity * price, 2)
        tax = round(net * rate / 100, 2)
        line.update(
            id=line_id or store.new_line_id(),
            qty_order=quantity,
            unit_price=price,
            tax_rate=rate,
            net_amount=net,
            tax_amount=tax,
            total_price=round(net + tax, 2),
        )
        lines.append(line)
    record["lines"] = lines
    currency = store.live("Currency", record.get("currency_code") or BASE_CURRENCY)
    if currency is None:
        raise ApiError(400, f"Currency {record.get('currency_code')} not found")
    record.update(currency_code=currency["id"], currency=currency["symbol"])
    if lines:
        record["total"] = round(sum(line["total_price"] for line in lines), 2)
        record["tax_total"] = round(sum(line["tax_amount"] for line in lines), 2)


def _prepare_invoice(store, record, existing, batch):
    _price_lines(store, record, existing)
    total = round(record.get("total") or 0.0, 2)
    paid = record.get("amountpaid") or 0.0
    if total < paid - CENT:
        raise ApiError(400, f"Invoice total {total} is below the amount already paid ({paid})")
    invoice_date = parse_datetime(record.get("invoice_date")) or store.now().replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    record.update(
        total=total,
        tax_total=record.get("tax_total") or 0.0,
        amountpaid=paid,
        amountdue=round(total - paid, 2),
        invoice_date=invoice_date.isoformat(),
        duedate=record.get("duedate") or (invoice_date + timedelta(days=30)).isoformat(),
    )


def _refresh_invoice(record, now):
    """Payment status: 2 paid, -1 overdue (unpaid or partly paid, past the due day),
    1 partly paid, 0 unpaid."""
    duedate = parse_datetime(record.get("duedate"))
    if (record.get("amountdue") or 0) <= CENT:
        status = 2
    elif duedate is not None and duedate.date() < now.date():
        status = -1
    else:
        status = 1 if (record.get("amountpaid") or 0) > 0 else 0
    record["paymentstatus"] = status


def _commit_invoice(store, record, existing):
    if not record.get("invoicenumber"):
        record["invoicenumber"] = str(record["id"])
    _refresh_invoice(record, store.now())
    store.emit("invoice created" if existing is None else "invoice updated", "Invoice", record)


def _invoice_payments(store, record):
    payments = RESOURCES["invoicepayment"]
    return [
        store.render(payments, p)
        for p in store.tables["InvoicePayment"].values()
        if p["invoice_id"] == record["id"] and not p.get("_deleted")
    ]


def _prepare_payment(store, record, existing, batch):
    """Checked against what earlier payments in the same batch left due."""
    invoice = store.live("Invoice", record["invoice_id"])
    if existing and existing["invoice_id"] != record["invoice_id"]:
        raise ApiError(400, "A payment cannot move to another invoice")
    if invoice.get("voided"):
        raise ApiError(400, f"Invoice {invoice['id']} is voided")
    amount = round(record["amount"], 2)
    if amount <= 0:
        raise ApiError(400, "Payment amount must be positive")
    change = amount - (existing["amount"] if existing else 0)
    key = ("amountdue", invoice["id"])
    due = batch.get(key, invoice["amountdue"])
    if change > due + CENT:
        raise ApiError(
            400, f"Payment of {amount} exceeds the amount due ({due}) on invoice {invoice['id']}"
        )
    batch[key] = round(due - change, 2)
    record.update(
        amount=amount,
        client_id=invoice["client_id"],
        invoice_invoicenumber=invoice.get("invoicenumber"),
        date=record.get("date") or store.now().isoformat(),
    )


def _apply_payment(store, payment, change):
    invoice = store.tables["Invoice"][payment["invoice_id"]]
    was_paid = invoice["amountdue"] <= CENT
    invoice["amountpaid"] = round(invoice["amountpaid"] + change, 2)
    invoice["amountdue"] = round(invoice["total"] - invoice["amountpaid"], 2)
    paid = invoice["amountdue"] <= CENT
    invoice["datepaid"] = (payment.get("date") or store.now().isoformat()) if paid else None
    invoice["last_modified"] = store.now().isoformat()
    _refresh_invoice(invoice, store.now())
    store.emit("invoice updated", "Invoice", invoice)
    if paid and not was_paid:
        store.emit("invoice paid", "Invoice", invoice)


def _commit_payment(store, record, existing):
    _apply_payment(store, record, record["amount"] - (existing["amount"] if existing else 0))


def _delete_payment(store, record):
    _apply_payment(store, record, -record["amount"])


def _prepare_contract(store, record, existing, batch):
    subtype = record.get("subtype")
    if subtype is not None and subtype not in CONTRACT_SUBTYPES:
        raise ApiError(400, f"Unknown agreement subtype {subtype}")
    record["subtype_name"] = CONTRACT_SUBTYPES.get(subtype)


def _prepare_attachment(store, record, existing, batch):
    try:
        base64.b64decode(record["data_base64"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ApiError(400, "data_base64 is not valid base64") from None
    if (
        record["type"] == ATTACHMENT_TYPE_INVOICE
        and store.live("Invoice", record["unique_id"]) is None
    ):
        raise ApiError(400, f"Invoice {record['unique_id']} not found")


def _prepare_webhook(store, record, existing, batch):
    if not str(record["url"]).startswith(("http://", "https://")):
        raise ApiError(400, "Webhook url must be an http(s) URL")
    if record.get("method") not in (None, WEBHOOK_POST):
        raise ApiError(400, f"Webhook method {record['method']} is not supported (1 = POST)")
    numbers = {name: number for number, name in EVENTS.items()}
    events = []
    for event in record.get("events") or []:
        if not isinstance(event, dict):
            raise ApiError(400, "Each webhook event must be an object")
        name = event.get("name") or EVENTS.get(event.get("eventno"))
        if not name:
            raise ApiError(400, "A webhook event needs a name or a known eventno")
        events.append(
            {"eventno": event.get("eventno") or numbers.get(str(name).lower()), "name": name}
        )
    record["events"] = events


def _prepare_fieldinfo(store, record, existing, batch):
    """Halo prefixes admin-created field names with CF."""
    target = resource(str(record["entity"]))
    if target is None or not target.customfields:
        raise ApiError(400, f"Custom fields cannot be added to {record['entity']}")
    record["entity"] = target.name
    record["name"] = str(record["name"])
    if not record["name"].startswith("CF"):
        record["name"] = "CF" + record["name"]
    if record.get("label") is None:
        record["label"] = record["name"][2:]


def _rendered_lines(store, record):
    """Invoice lines as Halo answers them: ``linked_item`` is the line's Item object (not an
    id); the item id a line was written with (``_itemid``) is not echoed."""
    items = RESOURCES["item"]
    lines = []
    for line in record.get("lines") or []:
        out = {k: v for k, v in line.items() if not k.startswith("_")}
        if (item := store.tables["Item"].get(line.get("_item_id"))) is not None:
            out["linked_item"] = store.render(items, item)
        lines.append(_without_nulls(out))
    return lines


_LINES = {"lines": _rendered_lines}

RESOURCES = {
    res.name.lower(): res
    for res in (
        Resource(
            "Client",
            key="clients",
            read_scope="read:customers",
            edit_scope="edit:customers",
            required=(("name",),),
            inactive_field="inactive",
            filters={
                "lastupdatefromdate": ("last_modified", "gte"),
                "lastupdatetodate": ("last_modified", "lte"),
            },
            defaults={"inactive": False, "toplevel_id": 1},
            customfields=True,
            # Halo's Client carries no change time (halo-api.md §4); the filters above
            # still use the one kept here.
            hidden=("last_modified",),
            commit=_commit_client,
        ),
        Resource(
            "Site",
            key="sites",
            read_scope="read:customers",
            edit_scope="edit:customers",
            required=(("name",), ("client_id",)),
            inactive_field="inactive",
            filters={"client_id": ("client_id", "ids")},
            defaults={"inactive": False},
        ),
        Resource(
            "Item",
            key="items",
            read_scope="read:items",
            edit_scope="edit:items",
            required=(("name",),),
            search=("name", "description", "internalreference", "supplier_part_code"),
            inactive_field="inactive",
            filters={"recurringonly": ("isrecurringitem", "true")},
            defaults={"inactive": False, "isrecurringitem": False},
            customfields=True,
        ),
        Resource(
            "SoftwareLicence",
            key="licences",
            read_scope="read:softwarelicensing",
            edit_scope="edit:softwarelicensing",
            required=(("client_id",), ("name", "type")),
            search=("name", "product_sku", "vendor_product_sku"),
            inactive_field="is_active",
            filters={
                "client_id": ("client_id", "ids"),
                "site_id": ("site_id", "ids"),
                "licence_type": ("type", "ids"),
            },
            defaults={"type": 0, "count": 0, "is_active": True, "deleted": False},
        ),
        Resource(
            "Invoice",
            key="invoices",
            read_scope="read:invoices",
            edit_scope="edit:invoices",
            required=(("client_id",),),
            search=("invoicenumber", "thirdpartyinvoicenumber", "client_name", "reference"),
            filters={
                "client_id": ("client_id", "ids"),
                "paymentstatuses": ("paymentstatus", "ids"),
                "postedonly": ("posted", "true"),
                "invoicedatestart": ("invoice_date", "gte"),
                "invoicedateend": ("invoice_date", "lte"),
            },
            date_search=("last_modified", "date_created", "invoice_date", "duedate", "datepaid"),
            defaults={"posted": True, "voided": False},
            created_field="date_created",
            customfields=True,
            readonly=(
                "amountpaid",
                "amountdue",
                "paymentstatus",
                "tax_total",
                "datepaid",
                "currency",
            ),
            optional={**_LINES, "payments": _invoice_payments},
            prepare=_prepare_invoice,
            commit=_commit_invoice,
            refresh=_refresh_invoice,
        ),
        Resource(
            "RecurringInvoice",
            key="invoices",
            read_scope="read:invoices",
            edit_scope="edit:invoices",
            required=(("client_id",),),
            search=("client_name", "reference"),
            filters={"client_id": ("client_id", "ids")},
            created_field="date_created",
            readonly=("tax_total", "currency"),
            optional=_LINES,
            prepare=lambda store, record, existing, batch: _price_lines(store, record, existing),
        ),
        Resource(
            "InvoicePayment",
            key="payments",
            read_scope="read:invoices",
            edit_scope="edit:invoices",
            required=(("invoice_id",), ("amount",)),
            search=("thirdpartyid", "invoice_invoicenumber"),
            filters={"invoice_id": ("invoice_id", "ids"), "client_id": ("client_id", "ids")},
            readonly=("client_id", "invoice_invoicenumber"),
            prepare=_prepare_payment,
            commit=_commit_payment,
            on_delete=_delete_payment,
        ),
        Resource(
            "ClientContract",
            key="contracts",
            read_scope="read:contracts",
            edit_scope="edit:contracts",
            required=(("client_id",),),
            search=("ref", "client_name"),
            inactive_field="active",
            filters={"client_id": ("client_id", "ids")},
            defaults={"active": True},
            customfields=True,
            readonly=("subtype_name",),
            prepare=_prepare_contract,
        ),
        Resource(
            # The contract names no scope for attachments; ours belong to invoices.
            "Attachment",
            key="attachments",
            read_scope="read:invoices",
            edit_scope="edit:invoices",
            required=(("filename",), ("data_base64",), ("type",), ("unique_id",)),
            search=("filename",),
            filters={"type": ("type", "ids"), "unique_id": ("unique_id", "ids")},
            # Listed by owner, not paged and not capped: the document gives /Attachment no
            # pageinate, page_size, page_no or count.
            capped=False,
            hidden=("data_base64",),
            prepare=_prepare_attachment,
        ),
        Resource(
            "Webhook",
            key=None,
            read_scope="admin:webhooks",
            edit_scope="admin:webhooks",
            required=(("url",),),
            search=("name", "url"),
            defaults={"method": WEBHOOK_POST, "active": True, "authentication_type": 0},
            capped=False,
            guid_ids=True,
            hidden=("basic_password",),
            prepare=_prepare_webhook,
        ),
        Resource(
            # halo-api.md §4: a bare array; guarded by read:invoices (our choice).
            "Currency",
            key=None,
            read_scope="read:invoices",
            edit_scope="admin",
            required=(("code",),),
            search=("name", "code"),
            capped=False,
        ),
        Resource(
            # Field definitions are schema every integration needs: any valid
            # token reads them; defining fields is configuration (admin).
            "FieldInfo",
            key=None,
            read_scope=None,
            edit_scope="admin",
            required=(("name",), ("entity",)),
            search=("name", "label"),
            defaults={"type": 0},
            capped=False,
            prepare=_prepare_fieldinfo,
        ),
    )
}


def resource(name):
    """The resource called ``name`` (any case), or None."""
    return RESOURCES.get(str(name).lower())
