"""Sample invoices for eyeballing and benchmarking the PDF renderer.

    .venv/bin/python -m bench.pdf_samples OUT_DIR

writes ``demo.pdf`` (a UK MSP's monthly invoice: 8 services over 3 sites, a
one-off charge, a credit and a pay link) and ``large.pdf`` (2,500 lines).
``demo_invoice()`` and ``large_invoice()`` are importable for other benches.
"""

from __future__ import annotations

import io
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

from billing.pdf import (
    Branding,
    Category,
    Customer,
    InvoiceDocument,
    InvoiceLine,
    Payment,
    Period,
    render_invoice_pdf,
)
from billing.pdf.render import FONT_DIR

ACCENT = "#0B6E6E"
FEBRUARY = Period(date(2025, 2, 1), date(2025, 2, 28))
JANUARY = Period(date(2025, 1, 1), date(2025, 1, 31))
VAT = Decimal("20")


def _logo() -> bytes:
    """A simple wordmark PNG, drawn with Pillow (a reportlab dependency)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGBA", (720, 200), (255, 255, 255, 0))  # transparent, as partners upload
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 10, 180, 190), radius=36, fill=ACCENT)
    bold = ImageFont.truetype(str(FONT_DIR / "DejaVuSans-Bold.ttf"), 130)
    draw.text((90, 100), "A", font=bold, fill="white", anchor="mm")
    draw.text((215, 100), "acme", font=bold, fill="#1F2933", anchor="lm")
    draw.text(
        (215, 175),
        "IT SERVICES",
        font=ImageFont.truetype(str(FONT_DIR / "DejaVuSans.ttf"), 34),
        fill=ACCENT,
        anchor="ls",
    )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _branding() -> Branding:
    return Branding(
        display_name="Acme IT Services Ltd",
        accent_colour=ACCENT,
        logo=_logo(),
        address_lines=(
            "Unit 4, Riverside Business Park",
            "Reading RG1 8BD",
            "VAT reg. GB 123 4567 89",
        ),
        support_email="support@acme-it.co.uk",
        support_phone="0118 496 0123",
    )


def _payment(invoice_number: str, pay_link: str | None) -> Payment:
    return Payment(
        instructions=(
            "Bank transfer to Acme IT Services Ltd\n"
            "Sort code 20-45-77 · Account 43917265\n"
            "IBAN GB29 NWBK 6016 1331 9268 19 · BIC NWBKGB2L\n"
            f"Please quote {invoice_number} as your reference.\n"
            "Direct Debit customers: we will collect on the due date."
        ),
        pay_link=pay_link,
    )


def _line(
    description, product, sku, category, qty, price, site=None, period=FEBRUARY, tax=VAT
) -> InvoiceLine:
    return InvoiceLine(
        description=description,
        product_name=product,
        sku=sku,
        category=category,
        quantity=Decimal(qty),
        unit_price=Decimal(price),
        tax_rate=tax,
        period=period,
        site_name=site,
    )


def demo_invoice() -> InvoiceDocument:
    recurring, usage = Category.RECURRING, Category.USAGE
    hq, mcr, bri = "London HQ", "Manchester office", "Bristol warehouse"
    m365 = ("Microsoft 365 Business Premium", "M365-BP")
    support = ("Fully Managed Support", "SUP-FM-USER")
    lines = [
        _line(
            "Microsoft 365 Business Premium (monthly, per user)",
            *m365,
            recurring,
            "24",
            "18.10",
            hq,
        ),
        _line(
            "Microsoft 365 Business Premium (monthly, per user)",
            *m365,
            recurring,
            "12",
            "18.10",
            mcr,
        ),
        _line(
            "Microsoft 365 Business Premium (monthly, per user)",
            *m365,
            recurring,
            "6",
            "18.10",
            bri,
        ),
        _line(
            "Fully Managed Support: unlimited remote and on-site",
            *support,
            recurring,
            "24",
            "35.00",
            hq,
        ),
        _line(
            "Fully Managed Support: unlimited remote and on-site",
            *support,
            recurring,
            "12",
            "35.00",
            mcr,
        ),
        _line(
            "Managed endpoint protection (EDR) per device",
            "Managed Endpoint Protection",
            "SEC-EDR",
            recurring,
            "47",
            "4.50",
        ),
        _line(
            "Microsoft 365 backup per user",
            "Cloud Backup for Microsoft 365",
            "BK-M365",
            recurring,
            "42",
            "2.25",
        ),
        _line(
            "Leased line 1 Gbps, 3-year term",
            "Leased Line 1 Gbps",
            "NET-LL1G",
            recurring,
            "1",
            "385.00",
            hq,
        ),
        _line("Hosted voice seats", "Hosted Voice Seat", "VOIP-SEAT", recurring, "18", "9.95", mcr),
        _line(
            "Calls to UK mobiles (minutes)",
            "Hosted Voice Calls",
            "VOIP-CALLS",
            usage,
            "1312",
            "0.0125",
            mcr,
            JANUARY,
        ),
        _line(
            "International calls (minutes)",
            "Hosted Voice Calls",
            "VOIP-CALLS",
            usage,
            "87.5",
            "0.089",
            mcr,
            JANUARY,
        ),
        _line(
            "Azure consumption, January (subscription Northwind-Prod)",
            "Azure Consumption",
            "AZ-CONS",
            usage,
            "1",
            "412.37",
            None,
            JANUARY,
        ),
        _line(
            "Onboarding: laptop build and deployment for three new starters",
            "Project Services",
            "PS-ONB",
            Category.ONE_OFF,
            "3",
            "95.00",
            bri,
            Period(date(2025, 1, 20), date(2025, 1, 22)),
        ),
        _line(
            "Service credit: leased line outage 14 Jan (ticket #48213)",
            "Service Credit",
            "CR-SLA",
            Category.CREDIT,
            "1",
            "-50.00",
            hq,
            JANUARY,
            VAT,
        ),
    ]
    return InvoiceDocument(
        branding=_branding(),
        customer=Customer(
            billing_name="Northwind Traders Ltd",
            account_reference="NWT-00417",
            address_lines=("Accounts Payable", "12 Harbour Street", "Bristol BS1 4RN"),
        ),
        invoice_number="INV-2025-00142",
        invoice_date=date(2025, 2, 1),
        due_date=date(2025, 3, 3),
        billing_period=FEBRUARY,
        currency="GBP",
        locale="en_GB",
        lines=tuple(lines),
        payment=_payment("INV-2025-00142", "https://pay.acme-it.co.uk/i/INV-2025-00142?t=9f3c2a"),
        amount_paid=Decimal("250.00"),
        tax_label="VAT",
    )


_PEOPLE = (
    "Ava Thompson",
    "Олег Петренко",
    "Ελένη Παπαδοπούλου",
    "Jürgen Weiß",
    "Siobhán Ó Briain",
    "Mateusz Wiśniewski",
    "Zoë Clarke",
    "Дарья Соколова",
)
_SERVICES = (
    ("Microsoft 365 Business Premium", "M365-BP", Category.RECURRING, "18.10"),
    ("Managed Endpoint Protection", "SEC-EDR", Category.RECURRING, "4.50"),
    ("Cloud Backup for Microsoft 365", "BK-M365", Category.RECURRING, "2.25"),
    ("Hosted Voice Calls", "VOIP-CALLS", Category.USAGE, "0.0125"),
)


def large_invoice(line_count: int = 2500) -> InvoiceDocument:
    """A per-user itemised invoice across 12 sites; deterministic, no randomness."""
    lines = []
    for i in range(line_count):
        product, sku, category, price = _SERVICES[i % len(_SERVICES)]
        person = _PEOPLE[i % len(_PEOPLE)]
        usage = category is Category.USAGE
        lines.append(
            _line(
                f"{product} for {person} (user {i + 1:04d})"
                + (
                    ", including calls forwarded from the main reception number"
                    if i % 9 == 0
                    else ""
                ),
                product,
                sku,
                category,
                str(37 + i % 400) if usage else "1",
                price,
                f"Site {1 + i % 12:02d}",
                JANUARY if usage else FEBRUARY,
            )
        )
    demo = demo_invoice()
    return InvoiceDocument(
        branding=demo.branding,
        customer=demo.customer,
        invoice_number="INV-2025-00143",
        invoice_date=demo.invoice_date,
        due_date=demo.due_date,
        billing_period=FEBRUARY,
        currency="GBP",
        locale="en_GB",
        lines=tuple(lines),
        payment=_payment("INV-2025-00143", None),
        tax_label="VAT",
    )


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in (("demo.pdf", demo_invoice()), ("large.pdf", large_invoice())):
        (out_dir / name).write_bytes(render_invoice_pdf(doc))
        print(out_dir / name)


if __name__ == "__main__":
    main()
