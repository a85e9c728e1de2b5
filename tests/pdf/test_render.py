"""Behaviour of the invoice PDF renderer, read back through pypdf.

Pure pytest: no Django, no database.  PDFs are rendered once per module where
several tests read the same document.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image as PILImage
from pypdf import PdfReader
from reportlab.graphics.barcode import qrencoder

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
from billing.pdf.render import clean_text
from portal.formats import format_money, format_period, format_quantity

REPO_ROOT = Path(__file__).resolve().parents[2]
PERIOD = Period(date(2025, 3, 1), date(2025, 3, 31))
PAY_LINK = "https://pay.example.co.uk/i/INV-0042?t=abc123"


def line(description="Managed support", category=Category.RECURRING, qty="1", price="10.00", **kw):
    fields = dict(
        description=description,
        product_name=kw.pop("product_name", description),
        sku=kw.pop("sku", "SKU-1"),
        category=category,
        quantity=Decimal(qty),
        unit_price=Decimal(price),
        tax_rate=Decimal(kw.pop("tax_rate", "20")),
        period=kw.pop("period", PERIOD),
    )
    return InvoiceLine(**fields, **kw)


def document(lines=(), **overrides) -> InvoiceDocument:
    fields = dict(
        branding=Branding(
            display_name="Acme IT Services Ltd",
            accent_colour="#0B6E6E",
            address_lines=("1 Station Road", "Reading RG1 1AA"),
            support_email="help@acme.example",
            support_phone="0118 496 0000",
        ),
        customer=Customer(
            billing_name="Northwind Traders Ltd",
            account_reference="NWT-001",
            address_lines=("12 Harbour Street", "Bristol BS1 4RN"),
        ),
        invoice_number="INV-0042",
        invoice_date=date(2025, 3, 1),
        due_date=date(2025, 3, 31),
        billing_period=PERIOD,
        currency="GBP",
        locale="en_GB",
        lines=lines,
        payment=Payment(instructions="Bank transfer\nSort code 20-00-00 · Account 12345678"),
        amount_paid=Decimal("0.00"),
        tax_label="VAT",
    )
    return InvoiceDocument(**(fields | overrides))


def mixed_lines():
    return (
        line("Microsoft 365 Business Premium", qty="12", price="18.10", site_name="London HQ"),
        line("Calls to UK mobiles", Category.USAGE, qty="1312", price="0.0125", site_name="Leeds"),
        line("Laptop build", Category.ONE_OFF, qty="2", price="95.00"),
        line("SLA credit", Category.CREDIT, qty="1", price="-25.00", tax_rate="20"),
    )


def pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def gbp(amount: str | Decimal) -> str:
    return format_money(Decimal(amount), "GBP", "en_GB")


@pytest.fixture(scope="module")
def mixed():
    doc = document(mixed_lines(), amount_paid=Decimal("100.00"))
    return doc, pages_text(render_invoice_pdf(doc))


# --- the numbers ----------------------------------------------------------------


def test_summary_page_states_the_document(mixed):
    doc, pages = mixed
    summary = pages[0]
    for expected in (
        "INV-0042",
        "NWT-001",
        "Northwind Traders Ltd",
        "12 Harbour Street",
        "Acme IT Services Ltd",
        "help@acme.example",
        "1 Mar 2025",  # invoice date
        "31 Mar 2025",  # due date
        "1 Mar – 31 Mar 2025",  # billing period
    ):
        assert expected in summary, expected
    lines = summary.splitlines()
    # label on one line, its amount on the next
    expected_rows = {
        "Recurring services": gbp("217.20"),
        "Usage": gbp("16.40"),
        "One-off charges": gbp("190.00"),
        "Credits": gbp("-25.00"),
        "Total before VAT": gbp("398.60"),
        "VAT at 20% on £398.60": gbp("79.72"),
        "Total due": gbp("478.32"),
        "Amount already paid": gbp("-100.00"),
        "Amount due": gbp("378.32"),
    }
    for label, amount in expected_rows.items():
        assert lines[lines.index(label) + 1] == amount, label
    assert doc.total_due == Decimal("478.32") and doc.amount_due == Decimal("378.32")


def test_every_line_is_itemised_with_its_figures(mixed):
    doc, pages = mixed
    itemised = "\n".join(pages[1:])
    for item in doc.lines:
        row = [
            item.description,
            *([item.site_name] if item.site_name else []),
            format_period(item.period.start, item.period.end, "en_GB"),
            format_quantity(item.quantity, "en_GB"),
            gbp(item.unit_price),
            gbp(item.tax),
            gbp(item.net),
        ]
        assert "\n".join(row) in itemised, row


def test_rounding_happens_once_per_line_and_totals_are_sums_of_shown_lines():
    # 3 x 0.3333 = 0.9999 -> 1.00 per line; tax 20 % of 1.00 = 0.20.
    # 1 x 0.005 = 0.005 -> 0.01 per line, whose tax 0.002 -> 0.00; rounding the
    # three-line sums instead would give 0.02 net and 0.01 tax.
    lines = [line("Third", qty="3", price="0.3333") for _ in range(3)]
    lines += [line("Half penny", qty="1", price="0.005") for _ in range(3)]
    doc = document(lines)
    assert [item.net for item in doc.lines] == [Decimal("1.00")] * 3 + [Decimal("0.01")] * 3
    assert [item.tax for item in doc.lines] == [Decimal("0.20")] * 3 + [Decimal("0.00")] * 3
    assert doc.net_total == Decimal("3.03")
    assert doc.tax_total == Decimal("0.60")
    assert doc.total_due == sum(item.net + item.tax for item in doc.lines)

    pages = pages_text(render_invoice_pdf(doc))
    summary = pages[0].splitlines()
    assert summary[summary.index("Total due") + 1] == "£3.63"
    assert pages[-1].splitlines()[-4:-2] == ["£0.60", "£3.03"]  # itemised Total row


def test_tax_is_summarised_per_rate():
    doc = document(
        [line("Standard", price="100.00"), line("Zero rated", price="40.00", tax_rate="0")]
    )
    summary = pages_text(render_invoice_pdf(doc))[0].splitlines()
    assert summary[summary.index("VAT at 0% on £40.00") + 1] == "£0.00"
    assert summary[summary.index("VAT at 20% on £100.00") + 1] == "£20.00"


def test_credits_are_negative(mixed):
    doc, pages = mixed
    assert doc.subtotals[Category.CREDIT] == Decimal("-25.00")
    assert "SLA credit" in pages[1] and "-£25.00" in pages[1]
    with pytest.raises(ValueError, match="must not be positive"):
        line("Wrong-signed credit", Category.CREDIT, price="25.00")


# --- multi-page ledger ------------------------------------------------------------

LEDGER_LINES = 300


@pytest.fixture(scope="module")
def long_invoice():
    lines = [
        line(
            f"Item {i:04d}",
            qty=str(1 + i % 3),
            price=f"{1 + i % 17}.{i % 100:02d}",
            product_name="Managed support",
        )
        for i in range(LEDGER_LINES)
    ]
    doc = document(lines)
    return doc, pages_text(render_invoice_pdf(doc))


def _after(lines: list[str], label: str) -> tuple[str, str]:
    at = lines.index(label)
    return lines[at + 1], lines[at + 2]


def test_long_ledger_repeats_header_and_carries_running_totals(long_invoice):
    doc, pages = long_invoice
    ledger_pages = [i for i, text in enumerate(pages) if "Item " in text]
    assert len(ledger_pages) >= 4
    header = "Description\nPeriod\nQty\nUnit price\nVAT\nAmount"
    seen, carried = 0, None
    for number, page_index in enumerate(ledger_pages):
        lines = pages[page_index].splitlines()
        assert header in pages[page_index], f"header missing on page {page_index + 1}"
        items = [int(m) for m in re.findall(r"^Item (\d{4})$", pages[page_index], re.M)]
        assert items, "a page of the ledger without lines (e.g. a lone Total row)"
        assert items == list(range(seen, seen + len(items))), "lines out of order or missing"
        if number:
            assert _after(lines, "Brought forward") == carried
        else:
            assert "Brought forward" not in lines
        seen += len(items)
        running = doc.lines[:seen]
        expected = (
            gbp(sum(item.tax for item in running)),
            gbp(sum(item.net for item in running)),
        )
        if page_index == ledger_pages[-1]:
            assert "Carried forward" not in lines
            assert _after(lines, "Total") == expected == (gbp(doc.tax_total), gbp(doc.net_total))
        else:
            carried = _after(lines, "Carried forward")
            assert carried == expected, f"carried forward wrong on page {page_index + 1}"
    assert seen == LEDGER_LINES


def test_shown_line_amounts_add_up_to_the_totals(long_invoice):
    doc, pages = long_invoice
    shown_net = shown_tax = Decimal(0)
    for text in pages:
        lines = text.splitlines()
        for i, value in enumerate(lines):
            if re.fullmatch(r"Item \d{4}", value):
                tax, net = lines[i + 4], lines[i + 5]
                shown_tax += Decimal(tax.replace("£", "").replace(",", ""))
                shown_net += Decimal(net.replace("£", "").replace(",", ""))
    assert (shown_net, shown_tax) == (doc.net_total, doc.tax_total)
    summary = pages[0].splitlines()
    assert summary[summary.index("Total due") + 1] == gbp(shown_net + shown_tax)


def test_every_page_says_page_n_of_m_and_the_invoice_number(long_invoice):
    _, pages = long_invoice
    for number, text in enumerate(pages, 1):
        assert f"Page {number} of {len(pages)}" in text
        assert "Invoice INV-0042" in text


# --- determinism --------------------------------------------------------------------


def test_same_document_renders_to_identical_bytes(mixed):
    doc, _ = mixed
    assert render_invoice_pdf(doc) == render_invoice_pdf(doc)


def _render_digest_in_subprocess(hash_seed: str, source_date_epoch: str) -> str:
    code = (
        "import hashlib\n"
        "from tests.pdf.test_render import sample_for_subprocess\n"
        "from billing.pdf import render_invoice_pdf\n"
        "print(hashlib.sha256(render_invoice_pdf(sample_for_subprocess())).hexdigest())\n"
    )
    # Different hash seeds shake out set/dict-order dependence; reportlab's
    # invariant mode would otherwise take its timestamp from SOURCE_DATE_EPOCH.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "SOURCE_DATE_EPOCH": source_date_epoch}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def sample_for_subprocess() -> InvoiceDocument:
    return document(
        mixed_lines(),
        payment=Payment(instructions="Pay by bank transfer", pay_link=PAY_LINK),
        customer=Customer("Ελένη Παπαδοπούλου & Олег", "ACC-9", ("Αθήνα",)),
    )


def test_same_document_renders_identically_across_processes():
    here = hashlib.sha256(render_invoice_pdf(sample_for_subprocess())).hexdigest()
    first = _render_digest_in_subprocess("1", "0")
    assert first == _render_digest_in_subprocess("4242", "1700000000") == here


def test_pdf_dates_come_from_the_invoice_date(mixed):
    doc, _ = mixed
    metadata = PdfReader(io.BytesIO(render_invoice_pdf(doc))).metadata
    assert metadata.creation_date.replace(tzinfo=None) == datetime(2025, 3, 1)
    assert metadata.modification_date.replace(tzinfo=None) == datetime(2025, 3, 1)
    assert metadata.title == "Invoice INV-0042"


# --- text handling ------------------------------------------------------------------


def test_greek_and_cyrillic_names_are_real_text():
    doc = document(
        [line("Резервное копирование Microsoft 365", site_name="Θεσσαλονίκη")],
        customer=Customer("Ελληνικά Τρόφιμα Α.Ε.", "GR-7", ("Λεωφόρος Κηφισίας 12", "Αθήνα")),
    )
    text = "\n".join(pages_text(render_invoice_pdf(doc)))
    for name in ("Ελληνικά Τρόφιμα Α.Ε.", "Λεωφόρος Κηφισίας 12", "Резервное", "Θεσσαλονίκη"):
        assert name in text


def test_characters_the_font_lacks_become_question_marks():
    assert clean_text("Rocket 🚀 云服务 Ωμέγα Жук 😀") == "Rocket ? ??? Ωμέγα Жук ?"
    assert clean_text("tab\there\x00soft\u00adhyphen") == "tab here softhyphen"
    doc = document(
        [line("Cloud 🚀 hosting 云服务", site_name="Office 🏢")],
        customer=Customer("Emoji Ltd 😀", "E-1", ("東京",)),
        branding=replace(document().branding, display_name="Acme 🛠"),
    )
    text = "\n".join(pages_text(render_invoice_pdf(doc)))
    assert "Cloud ? hosting ???" in text
    assert "Emoji Ltd ?" in text and "Acme ?" in text


def test_user_text_is_not_treated_as_markup():
    name = "Smith & Sons <b>Ltd</b> > Co"
    doc = document(
        [line(name)],
        customer=Customer(name, "S&S-1", ("1 <Main> Street",)),
        payment=Payment(instructions="Quote <ref> & pay"),
    )
    text = "\n".join(pages_text(render_invoice_pdf(doc)))
    assert text.count(name) >= 3  # bill-to, remittance slip, ledger
    assert "1 <Main> Street" in text and "Quote <ref> & pay" in text


def test_long_descriptions_wrap_within_their_column():
    words = " ".join(f"word{i}" for i in range(40))
    pages = pages_text(render_invoice_pdf(document([line(words, product_name="Thing")])))
    ledger = pages[-1]
    wrapped = [ln for ln in ledger.splitlines() if ln.startswith("word")]
    assert len(wrapped) > 3
    assert " ".join(wrapped) == words


# --- pay link -------------------------------------------------------------------


def _qr_modules_drawn(pdf: bytes) -> set[tuple[int, int]]:
    """Dark modules of the QR code, read back from page 1's content stream."""
    stream = PdfReader(io.BytesIO(pdf)).pages[0].get_contents()
    assert stream is not None, "page 1 has no content stream"
    content = stream.get_data().decode("latin-1")
    dark: set[tuple[int, int]] = set()
    for x, y, width in re.findall(r"^(\d+) (\d+) (\d+) 1 re$", content, re.M):
        dark.update((int(x) + dx, int(y)) for dx in range(int(width)))
    return dark


def _qr_modules_expected(url: str) -> set[tuple[int, int]]:
    qr = qrencoder.QRCode(None, qrencoder.QRErrorCorrectLevel.M)
    qr.addData(url)
    qr.make()
    count, quiet = len(qr.modules), 2
    return {
        (quiet + c, count + quiet - 1 - r)
        for r, row in enumerate(qr.modules)
        for c, is_dark in enumerate(row)
        if is_dark
    }


def test_pay_link_is_printed_with_a_qr_code_of_it():
    doc = document(mixed_lines(), payment=Payment("Bank transfer", pay_link=PAY_LINK))
    pdf = render_invoice_pdf(doc)
    slip = pages_text(pdf)[0]
    assert "PAY ONLINE" in slip
    assert PAY_LINK in slip.replace("\n", "").replace(" ", "")
    assert _qr_modules_drawn(pdf) == _qr_modules_expected(PAY_LINK)
    annotations = PdfReader(io.BytesIO(pdf)).pages[0]["/Annots"]
    assert {a.get_object()["/A"]["/URI"] for a in annotations} == {PAY_LINK}


def test_no_pay_link_means_no_url_and_no_qr_code(mixed):
    doc, pages = mixed
    assert "PAY ONLINE" not in pages[0] and "https://" not in pages[0]
    assert _qr_modules_drawn(render_invoice_pdf(doc)) == set()


# --- money and locales ----------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        ("1234.56", "GBP", "en_GB", "£1,234.56"),
        ("1234.56", "USD", "en_US", "$1,234.56"),
        ("1234.56", "EUR", "de_DE", "1.234,56\u00a0€"),
        ("1234.56", "XYZ", "en_GB", "1,234.56\u00a0XYZ"),
        ("1234567.5", "GBP", "en_GB", "£1,234,567.50"),
        ("-50", "GBP", "en_GB", "-£50.00"),
        ("-50", "EUR", "de_DE", "-50,00\u00a0€"),
        ("0.0125", "GBP", "en_GB", "£0.0125"),  # unit prices keep their precision
        ("-0.00", "GBP", "en_GB", "£0.00"),  # never "-£0.00"
        ("999.5", "EUR", "de_AT", "999,50\u00a0€"),  # locale falls back by language
        ("12", "GBP", "xx_YY", "£12.00"),  # and then to en_GB
    ],
)
def test_money_formatting(amount, currency, locale, expected):
    assert format_money(Decimal(amount), currency, locale) == expected


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity"])
def test_money_formatting_refuses_what_is_not_an_amount(amount):
    # mypy found it: these have no exponent to count decimals by.
    with pytest.raises(ValueError, match="not an amount of money"):
        format_money(Decimal(amount), "GBP", "en_GB")


@pytest.mark.parametrize(
    ("currency", "locale", "total", "period"),
    [
        ("GBP", "en_GB", "£1,481.47", "1 Mar – 31 Mar 2025"),
        ("USD", "en_US", "$1,481.47", "Mar 1 – Mar 31, 2025"),
        ("EUR", "de_DE", "1.481,47\u00a0€", "01.03. – 31.03.2025"),
    ],
)
def test_invoice_uses_the_documents_currency_and_locale(currency, locale, total, period):
    doc = document([line("Server", qty="1", price="1234.56")], currency=currency, locale=locale)
    summary = pages_text(render_invoice_pdf(doc))[0].splitlines()
    # pypdf reads the no-break space before "€" back as a plain space
    assert summary[summary.index("Total due") + 1] == total.replace("\u00a0", " ")
    assert period in summary


# --- branding and edge cases --------------------------------------------------


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_logo_is_embedded_once_at_print_resolution(image_format):
    mode = "RGBA" if image_format == "PNG" else "RGB"
    logo = io.BytesIO()
    PILImage.new(mode, (2000, 500), (11, 110, 110, 128)).save(logo, format=image_format)
    doc = document(branding=replace(document().branding, logo=logo.getvalue()))
    page = PdfReader(io.BytesIO(render_invoice_pdf(doc))).pages[0]
    images = [x.get_object() for x in page["/Resources"]["/XObject"].values()]
    assert [(i["/Subtype"], i["/Width"], i["/Height"]) for i in images] == [("/Image", 440, 110)]


def test_version_label_and_nothing_to_pay():
    doc = document([line("Refund", Category.CREDIT, price="-10.00")], version_label="Revised v2")
    summary = pages_text(render_invoice_pdf(doc))[0]
    assert "Invoice Revised v2" in summary
    assert "No payment needed" in summary and "Please pay by" not in summary


# --- input validation, empty invoice --------------------------------------------


def test_inputs_are_validated():
    with pytest.raises(TypeError, match="Decimal"):
        InvoiceLine("x", "x", "x", Category.USAGE, 1.5, Decimal(1), Decimal(20))
    with pytest.raises(ValueError, match="accent_colour"):
        Branding("Acme", accent_colour="teal")
    with pytest.raises(ValueError, match="PNG or JPEG"):
        Branding("Acme", logo=b"GIF89a...")
    with pytest.raises(ValueError, match="ends"):
        Period(date(2025, 3, 2), date(2025, 3, 1))
    with pytest.raises(ValueError, match="ISO 4217"):
        document(currency="pounds")
    with pytest.raises(ValueError, match="whole cents"):
        document(amount_paid=Decimal("10.005"))


def test_invoice_without_lines_or_sites_still_renders():
    pages = pages_text(render_invoice_pdf(document([])))
    assert "Total due\n£0.00" in pages[0]
    assert "Site" not in pages[1]  # no site column or per-site table without sites
