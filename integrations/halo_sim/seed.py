"""Seed data: the deterministic demo tenant, an empty tenant, and bulk generation.

Everything is written through ``Store.save(..., as_user=True)``, the path a
Halo user's UI edits take, so seeded records obey the same rules (totals,
payments, derived names) as records the API creates.  Dates are relative to
the simulator clock, so "overdue" stays overdue whatever day the demo runs.
"""

import random
from datetime import timedelta

from .auth import Application
from .state import CURRENCIES, RESOURCES

DEMO_TENANT = "acme"
DEMO_CLIENT_ID = "3f6b2a1c-9d4e-4b8a-a7c2-5e1d0f9b8c64"
# A published demo credential, valid only against the simulator.
DEMO_CLIENT_SECRET = "8c1e4f7a-2b9d-4c6e-9a3f-7d5b0e2c1a98-b4d7e2a9-6c1f-4e8b-a3d5-9f0c7b2e6a14"  # noqa: S105
VENDOR_CUSTOMER_ID_FIELD = 101

#: The portal demo's organisations: (Halo name, external ref, has CFVendorCustomerId).
#: Those without the custom field can only be matched by normalised name; Blue
#: Yonder's Halo name differs from the portal's in spacing and case on purpose.
PORTAL_CLIENTS = [
    ("Northwind Traders", "NW-1001", True),
    ("Contoso Dental", "CD-1002", True),
    ("Fabrikam Legal", "FL-1003", True),
    ("Tailspin Toys", "TT-1004", True),
    ("Wide World Importers", "WW-1005", True),
    ("Αθηνά Λογιστική", "AL-1006", False),
    ("ООО Ромашка", "RM-1007", True),
    ("Blue  Yonder AIRLINES", "BY-1008", False),
]
#: Other clients; a few are near-misses for careless name matching.
OTHER_CLIENTS = [
    "Adatum Corporation", "Alpine Ski House", "Bellows College", "Best For You Organics",
    "City Power & Light", "Coho Winery", "Consolidated Messenger", "Contoso Pharmaceuticals",
    "Fabrikam Residences", "Fourth Coffee", "Graphic Design Institute", "Humongous Insurance",
    "Litware Inc", "Lucerne Publishing", "Margie's Travel", "Munson's Pickles and Preserves",
    "Nod Publishers", "Northwind Health", "Proseware Inc", "Relecloud", "School of Fine Art",
    "Southridge Video", "Trey Research", "VanArsdel Ltd", "Wingtip Toys", "Woodgrove Bank",
]  # fmt: skip
INACTIVE_CLIENTS = ["Tailspin Toys (old account)", "Old Mill Bakery"]
USD_CLIENTS = {"Tailspin Toys", "Blue  Yonder AIRLINES", "Relecloud"}
CONTACTS = [
    ("Alex", "Morgan"),
    ("Sam", "Patel"),
    ("Jo", "Nakamura"),
    ("Chris", "Okafor"),
    ("Robin", "Silva"),
]

#: (SKU, name, monthly price): the portal demo's products, then others.
PORTAL_PRODUCTS = [
    ("EDR-STD", "Endpoint Protection", 4.50),
    ("MDR-PRO", "Managed Detection & Response", 9.00),
    ("BKP-1TB", "Cloud Backup 1TB", 12.00),
    ("EML-SEC", "Email Security", 2.25),
    ("SAT-USR", "Security Awareness Training", 1.75),
]
OTHER_ITEMS = [  # (SKU, name, price, recurring, inactive)
    ("M365-BP", "Microsoft 365 Business Premium", 18.10, True, False),
    ("RMM-AGT", "RMM Agent", 3.00, True, False),
    ("SUP-HR", "Onsite Support (per hour)", 85.00, False, False),
    ("FW-APL", "Firewall Appliance", 449.00, False, False),
    ("AV-LEG", "Legacy Antivirus", 2.00, True, True),
]

#: Invoice states in demo order; every payment status appears, plus voided and unposted.
INVOICE_STATES = [
    "paid",
    "paid",
    "unpaid",
    "overdue",
    "partly",
    "paid",
    "overdue",
    "paid",
    "unpaid",
    "partly",
]


def load(store, seed):
    """Fill a cleared store from ``"demo"``, ``"empty"`` or a state mapping.

    A mapping is what ``GET /_sim/state`` answers (or just its ``resources``
    part); its ``applications`` replace the demo application when given.
    Answers the applications the tenant has.
    """
    if isinstance(seed, dict):
        resources = seed.get("resources", {k: v for k, v in seed.items() if k != "applications"})
        store.load(resources)
        if not store.tables["Currency"]:  # states saved before currencies were simulated
            _save(store, "Currency", [_currency(*row) for row in CURRENCIES])
        apps = seed.get("applications")
        return [Application.from_json(a) for a in apps] if apps else [demo_application()]
    if seed not in ("demo", "empty"):
        raise ValueError("seed must be demo, empty or a state object")
    _save(store, "Currency", [_currency(*row) for row in CURRENCIES])
    _save(store, "FieldInfo", [_vendor_customer_id_field()])
    if seed == "demo":
        _demo(store)
    return [demo_application()]


def _currency(currency_id, name, symbol, code, rate):
    return {
        "id": currency_id,
        "name": name,
        "symbol": symbol,
        "code": code,
        "conversion_rate": rate,
    }


def currency_id(code):
    """The simulator's Halo currency id of an ISO code."""
    return next(row[0] for row in CURRENCIES if row[3] == code)


def demo_application():
    return Application(
        name="Halo Partner Portal (demo)",
        client_id=DEMO_CLIENT_ID,
        client_secret=DEMO_CLIENT_SECRET,
    )


def _save(store, name, records):
    return store.save(RESOURCES[name.lower()], records, as_user=True)


def _vendor_customer_id_field():
    return {
        "id": VENDOR_CUSTOMER_ID_FIELD,
        "name": "CFVendorCustomerId",
        "label": "Vendor Customer ID",
        "entity": "Client",
        "type": 0,
    }


def _slug(name, index):
    """ASCII handle for refs and e-mail domains (non-Latin names get a numbered one)."""
    return "".join(c for c in name.lower() if c.isascii() and c.isalnum()) or f"client{index:03d}"


def _client(name, index, now, inactive=False):
    first, last = CONTACTS[index % len(CONTACTS)]
    created = now - timedelta(days=400 - index * 9)
    return {
        "name": name,
        "ref": _slug(name, index)[:8].upper(),
        "accountsid": f"ACC-{2000 + index}",
        "accountsfirstname": first,
        "accountslastname": last,
        "accountsemailaddress": f"accounts@{_slug(name, index)}.example",
        "inactive": inactive,
        "datecreated": created.isoformat(),
        "last_modified": (created + timedelta(days=3 + index % 20)).isoformat(),
    }


def _item(sku, name, price, recurring=True, inactive=False):
    cost = round(price * 0.6, 2)
    return {
        "name": name,
        "description": f"{name} ({sku})",
        "baseprice": price,
        "costprice": cost,
        "recurringprice": price if recurring else 0.0,
        "recurringcost": cost if recurring else 0.0,
        "isrecurringitem": recurring,
        "internalreference": sku,
        "supplier_part_code": sku,
        "inactive": inactive,
    }


def _demo(store):
    now = store.now().replace(microsecond=0)
    day = now.replace(hour=0, minute=0, second=0)
    names = [name for name, _, _ in PORTAL_CLIENTS] + OTHER_CLIENTS
    records = [_client(name, i, now) for i, name in enumerate(names)]
    for record, (_, ref, has_field) in zip(records, PORTAL_CLIENTS, strict=False):
        if has_field:
            record["customfields"] = [{"id": VENDOR_CUSTOMER_ID_FIELD, "value": ref}]
    records += [
        _client(name, len(names) + i, now, inactive=True) for i, name in enumerate(INACTIVE_CLIENTS)
    ]
    clients = {c["name"]: c for c in _save(store, "Client", records)}

    items = _save(
        store,
        "Item",
        [_item(sku, name, price) for sku, name, price in PORTAL_PRODUCTS]
        + [_item(*spec) for spec in OTHER_ITEMS],
    )
    portal_items = items[: len(PORTAL_PRODUCTS)]

    def licence(client, name, licence_type, count, price, **extra):
        return {
            "client_id": clients[client]["id"],
            "site_id": clients[client]["main_site_id"],
            "name": name,
            "type": licence_type,
            "count": count,
            "price": price,
            "purchase_price": round(price * 0.6, 2),
            "start_date": (day - timedelta(days=200)).isoformat(),
            "end_date": (day + timedelta(days=165)).isoformat(),
            "billing_cycle": 1,
            **extra,
        }

    _save(
        store,
        "SoftwareLicence",
        [
            licence(
                "Northwind Traders",
                "Microsoft 365 Business Premium",
                0,
                24,
                18.10,
                product_sku="M365-BP",
            ),
            licence("Contoso Dental", "Adobe Acrobat Pro", 0, 5, 15.00),
            licence(
                "Fabrikam Legal",
                "Cloud Backup 1TB",
                1,
                2,
                12.00,
                notes="Entered by hand before the portal",
            ),
            licence(
                "Wide World Importers", "Endpoint Protection", 1, 40, 4.50, product_sku="EDR-STD"
            ),
            licence("ООО Ромашка", "Kaspersky Endpoint Security", 0, 10, 3.10, is_active=False),
        ],
    )

    contract_clients = names[:12]
    contracts = _save(
        store,
        "ClientContract",
        [
            {
                "client_id": clients[name]["id"],
                "ref": f"CON-{i + 1:04d}",
                "start_date": (day - timedelta(days=365 - i * 10)).isoformat(),
                "end_date": (day + timedelta(days=365 + i * 10)).isoformat(),
                "active": i != 11,
                "contracttype": 1,
                "contracttype_name": "Recurring Services",
                "subtype": (1, 1, 2, 1, 3, 2)[i % 6],
                "billingperiod": 1,
            }
            for i, name in enumerate(contract_clients)
        ],
    )
    contract_of = {c["client_id"]: c["id"] for c in contracts if c["active"]}

    invoiced = names[:10]
    invoices, payments, history = [], [], []
    for k in range(40):
        client = clients[invoiced[k % len(invoiced)]]
        state = INVOICE_STATES[k % len(INVOICE_STATES)]
        if k == 17:
            state = "voided"
        elif k == 38:
            state = "unposted"
        elif k == 29:
            state = "partly_overdue"
        age = {"paid": 35 + 30 * (k // 10), "overdue": 50, "partly_overdue": 45, "voided": 60}.get(
            state, 5 + k % 7
        )
        invoice_date = day - timedelta(days=age)
        usd = client["name"] in USD_CLIENTS
        lines = [
            {
                "_itemid": item["id"],
                "item_code": item["supplier_part_code"],
                "qty_order": float(3 + (k * 7 + n * 5) % 40),
                "tax_rate": 0.0 if usd else 20.0,
                "startdate": invoice_date.isoformat(),
                "enddate": (invoice_date + timedelta(days=30)).isoformat(),
            }
            for n, item in enumerate(portal_items[k % 3 : k % 3 + 1 + k % 3])
        ]
        invoices.append(
            {
                "client_id": client["id"],
                "site_id": client["main_site_id"],
                "thirdpartyinvoicenumber": f"INV-{invoice_date.year}-{123 + k:05d}",
                "invoice_date": invoice_date.isoformat(),
                "duedate": (invoice_date + timedelta(days=30)).isoformat(),
                "currency_code": currency_id("USD" if usd else "GBP"),
                "contract_id": contract_of.get(client["id"]) if k % 4 else None,
                "reference": f"Services {invoice_date:%B %Y}",
                "posted": state != "unposted",
                "voided": state == "voided",
                "lines": lines,
                "date_created": invoice_date.isoformat(),
                "last_modified": invoice_date.isoformat(),
            }
        )
        history.append((state, invoice_date + timedelta(days=age // 2)))
    for invoice, (state, paid_on) in zip(_save(store, "Invoice", invoices), history, strict=True):
        share = {"paid": 1.0, "partly": 0.4, "partly_overdue": 0.5}.get(state)
        if share:
            payments.append(
                {
                    "invoice_id": invoice["id"],
                    "amount": round(invoice["total"] * share, 2),
                    "date": paid_on.isoformat(),
                    "method": 1,
                    "thirdpartyid": f"pi_demo_{invoice['id']:04d}",
                }
            )
    for payment in _save(store, "InvoicePayment", payments):
        # Payments were taken in the past, so that is when the invoice last changed.
        store.tables["Invoice"][payment["invoice_id"]]["last_modified"] = payment["date"]


def generate(
    store, clients=0, items=0, invoices=0, licences_per_client=0, contracts_per_client=0, seed=1
):
    """Add bulk records for benchmarks; answers how many of each were made.

    Licences and contracts go to the clients made here (or to every active
    client when none are made); invoices spread over the same clients, with
    lines from recurring items, and about a third of them paid.
    """
    rng = random.Random(seed)
    with store.lock:
        made = {}
        start = store.next_ids["Client"]
        owners = _save(
            store, "Client", [{"name": f"Bulk Client {start + n:06d}"} for n in range(clients)]
        )
        made["clients"] = len(owners)
        start = store.next_ids["Item"]
        new_items = _save(
            store,
            "Item",
            [
                _item(
                    f"BULK-{start + n:06d}",
                    f"Bulk Item {start + n:06d}",
                    rng.choice((1.5, 4.5, 9.0, 12.0)),
                )
                for n in range(items)
            ],
        )
        made["items"] = len(new_items)
        owner_ids = [c["id"] for c in owners] or [
            c["id"]
            for c in store.tables["Client"].values()
            if not c.get("_deleted") and not c.get("inactive")
        ]
        item_ids = [
            i["id"]
            for i in store.tables["Item"].values()
            if i.get("isrecurringitem") and not i.get("_deleted")
        ]
        if (licences_per_client or contracts_per_client or invoices) and not owner_ids:
            raise ValueError("there are no clients to generate records for")
        made["licences"] = len(
            _save(
                store,
                "SoftwareLicence",
                [
                    {
                        "client_id": cid,
                        "name": f"Bulk Licence {n + 1}",
                        "type": 1,
                        "count": rng.randint(1, 200),
                        "price": 4.5,
                    }
                    for cid in owner_ids
                    for n in range(licences_per_client)
                ],
            )
        )
        made["contracts"] = len(
            _save(
                store,
                "ClientContract",
                [
                    {"client_id": cid, "subtype": rng.choice((1, 2, 3))}
                    for cid in owner_ids
                    for _ in range(contracts_per_client)
                ],
            )
        )
        if invoices and not item_ids:
            raise ValueError("there are no recurring items for invoice lines")
        day = store.now().replace(hour=0, minute=0, second=0, microsecond=0)
        created = _save(
            store,
            "Invoice",
            [
                {
                    "client_id": owner_ids[n % len(owner_ids)],
                    "invoice_date": (day - timedelta(days=rng.randint(0, 90))).isoformat(),
                    "lines": [
                        {
                            "_itemid": rng.choice(item_ids),
                            "qty_order": float(rng.randint(1, 50)),
                            "tax_rate": 20.0,
                        }
                        for _ in range(rng.randint(1, 3))
                    ],
                }
                for n in range(invoices)
            ],
        )
        made["invoices"] = len(created)
        made["payments"] = len(
            _save(
                store,
                "InvoicePayment",
                [
                    {"invoice_id": i["id"], "amount": i["total"], "method": 1}
                    for i in created
                    if rng.random() < 1 / 3
                ],
            )
        )
        return made
