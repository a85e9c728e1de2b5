"""Invoice PDF renderer: ``render_invoice_pdf(InvoiceDocument) -> bytes``.

Pure function of its input: no Django, database, network or filesystem writes
(the bundled DejaVu fonts are read once per process).  Telecom-bill layout:

* page 1 -- summary: branding, customer, invoice facts, charges by category,
  tax, amount due; a tear-off remittance slip drawn by the page template so it
  always sits at the foot of the page;
* page 2+ -- service summary (per service, per site), then every line, with
  "Carried forward" / "Brought forward" running totals at each page break.

Every page carries the invoice number and "Page N of M" (drawn at save time by
``_NumberedCanvas``).  Output is byte-for-byte reproducible: reportlab's
invariant mode, PDF dates taken from the invoice date, no random ids.
"""

from __future__ import annotations

import functools
import hashlib
import io
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import accumulate, groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from xml.sax.saxutils import escape, quoteattr

from PIL import Image as PILImage
from reportlab import rl_config
from reportlab.graphics.barcode import qrencoder
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Flowable,
    Frame,
    KeepInFrame,
    NextPageTemplate,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
)

from portal.formats import (
    format_date,
    format_money,
    format_percent,
    format_period,
    format_quantity,
)

from .model import ZERO, Category, Customer, InvoiceDocument, InvoiceLine, Period

if TYPE_CHECKING:
    # One table style command, ("FONT", (col, row), (col, row), ...): only in the stubs.
    from reportlab.platypus.tables import _TableCommand as TableCommand

# --- fonts and text hygiene ---------------------------------------------------

FONT_DIR = Path(__file__).with_name("fonts")
REGULAR, BOLD = "DejaVuSans", "DejaVuSans-Bold"


@functools.cache
def _setup_once() -> frozenset[int]:
    """Per-process reportlab setup: register the bundled fonts and switch off
    ASCII85 armour.  Returns the code points both font faces can draw."""
    faces = []
    for name in (REGULAR, BOLD):
        font = TTFont(name, str(FONT_DIR / f"{name}.ttf"))
        pdfmetrics.registerFont(font)
        faces.append(frozenset(font.face.charToGlyph))
    pdfmetrics.registerFontFamily(
        REGULAR, normal=REGULAR, bold=BOLD, italic=REGULAR, boldItalic=BOLD
    )
    # Binary streams instead of reportlab's default ASCII85 armour (a relic of
    # 7-bit transports): smaller, and much faster without reportlab's C
    # accelerator.  Process-wide, but harmless: output stays valid PDF.
    rl_config.useA85 = 0
    # Basic Multilingual Plane only: reportlab writes a broken ToUnicode entry
    # for the few astral glyphs DejaVu has (e.g. some emoji), so viewers could
    # not copy or search them.  Control and invisible format characters have
    # glyphs too (a soft hyphen would print as "-"), so they are excluded.
    return frozenset(
        cp
        for cp in faces[0] & faces[1]
        if cp <= 0xFFFF and unicodedata.category(chr(cp)) not in ("Cc", "Cf", "Zl", "Zp")
    )


def clean_text(text: str) -> str:
    """Make user text drawable: what the font lacks (most emoji, CJK) becomes "?",
    whitespace and control characters become spaces, invisible format marks
    (soft hyphens, joiners, variation selectors) are dropped.

    reportlab would otherwise draw empty boxes; user text from HaloPSA is
    arbitrary, so every string passes through here before reaching reportlab.
    """
    if text.isascii() and text.isprintable():
        return text
    drawable = _setup_once()
    return "".join(ch if ord(ch) in drawable else _replacement(ch) for ch in text)


def _replacement(ch: str) -> str:
    if ch.isspace() or unicodedata.category(ch) == "Cc":
        return " "
    if unicodedata.category(ch) in ("Cf", "Mn"):
        return ""
    return "?"


def _markup(text: str) -> str:
    """User text made safe for Paragraph markup; newlines become line breaks."""
    return "<br/>".join(escape(clean_text(part)) for part in text.splitlines())


def _wrap(text: str, width: float, size: float, font: str = REGULAR, max_lines: int = 8) -> str:
    """Greedy word wrap for table cells, returned as "\\n"-joined lines.

    Plain multi-line strings are far cheaper for a Table than Paragraphs, and
    knowing the line count up front lets the ledger compute row heights without
    asking reportlab.  Each word is measured once (TrueType widths add up, there
    is no kerning), over-long words (URLs, SKUs) are broken by character, and
    text beyond ``max_lines`` is cut with an ellipsis so no row outgrows a page.
    """

    def measure(s: str) -> float:
        return pdfmetrics.stringWidth(s, font, size)

    if measure(text) <= width:
        return text
    space = measure(" ")
    lines: list[str] = []
    words: list[str] = []
    used = 0.0
    for word in text.split():
        if len(lines) > max_lines:
            break
        word_width = measure(word)
        if word_width > width:
            if words:
                lines.append(" ".join(words))
                words, used = [], 0.0
            word, word_width = _break_word(word, width, measure, lines)
        if words and used + space + word_width > width:
            lines.append(" ".join(words))
            words, used = [], 0.0
        used += (space if words else 0.0) + word_width
        words.append(word)
    if words:
        lines.append(" ".join(words))
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and measure(last + "…") > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + "…"]
    return "\n".join(lines)


def _break_word(
    word: str, width: float, measure: Callable[[str], float], lines: list[str]
) -> tuple[str, float]:
    """Append full-width slices of ``word`` to ``lines``; return the tail and its width."""
    piece, used = "", 0.0
    for ch in word:
        ch_width = measure(ch)
        if piece and used + ch_width > width:
            lines.append(piece)
            piece, used = "", 0.0
        piece += ch
        used += ch_width
    return piece, used


# --- look and feel ------------------------------------------------------------

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 16 * mm
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN
FOOTER_BASELINE = 9 * mm
SLIP_HEIGHT = 70 * mm  # remittance slip, above the footer on page 1
SLIP_BOTTOM = 15 * mm

INK = colors.HexColor("#1F2933")
MUTED = colors.HexColor("#5F6B7A")
RULE = colors.HexColor("#D3D9E0")
ZEBRA = colors.HexColor("#F5F7FA")

CATEGORY_LABELS = {
    Category.RECURRING: "Recurring services",
    Category.USAGE: "Usage",
    Category.ONE_OFF: "One-off charges",
    Category.CREDIT: "Credits",
}
CATEGORY_COLUMNS = {  # narrow table headers
    Category.RECURRING: "Recurring",
    Category.USAGE: "Usage",
    Category.ONE_OFF: "One-off",
    Category.CREDIT: "Credits",
}

CELL_PAD_X, CELL_PAD_Y = 4, 2.6


def _style(
    name: str, size: float, *, font: str = REGULAR, colour: colors.Color = INK, **kw: Any
) -> ParagraphStyle:
    return ParagraphStyle(
        name, fontName=font, fontSize=size, leading=size * 1.3, textColor=colour, **kw
    )


SMALL_MUTED = _style("small", 7.5, colour=MUTED)


def _hex(colour: colors.Color) -> str:
    """Colour as "#rrggbb" for Paragraph <font color> markup."""
    return "#" + colour.hexval()[2:]


def _contrast_with_white(c: colors.Color) -> float:
    """WCAG contrast ratio of white on ``c`` (1 to 21)."""

    def channel(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    luminance = 0.2126 * channel(c.red) + 0.7152 * channel(c.green) + 0.0722 * channel(c.blue)
    return 1.05 / (luminance + 0.05)


@dataclass(frozen=True)
class _Theme:
    """Colours derived from the tenant's accent so any accent stays legible."""

    accent: colors.Color  # fills: top band, amount-due panel
    accent_text: colors.Color  # accent darkened until it reads on white (WCAG 4.5:1)
    on_accent: colors.Color  # text colour on an accent fill
    tint: colors.Color  # faint accent for table header rows

    @classmethod
    def from_hex(cls, hex_colour: str) -> _Theme:
        accent = colors.HexColor(hex_colour)
        text = accent
        while _contrast_with_white(text) < 4.5:
            text = colors.linearlyInterpolatedColor(text, colors.black, 0, 1, 0.15)
        on_accent = colors.white if _contrast_with_white(accent) >= 3 else INK
        tint = colors.linearlyInterpolatedColor(accent, colors.white, 0, 1, 0.9)
        return cls(accent, text, on_accent, tint)

    def heading(self, size: float = 11) -> ParagraphStyle:
        return _style(
            "heading", size, font=BOLD, colour=self.accent_text, spaceBefore=10, spaceAfter=4
        )


def _table(
    data: Sequence[list[str]],
    widths: Iterable[float],
    theme: _Theme,
    *,
    numeric_from: int,
    size: float = 8,
    leading: float | None = None,
    pad: tuple[float, float] = (CELL_PAD_X, CELL_PAD_Y),
    row_heights: list[float] | None = None,
    rules: bool = True,
    style: Iterable[TableCommand] = (),
) -> Table:
    """House table: tinted bold header row, right-aligned numeric columns from
    ``numeric_from``, hairline rules between rows unless ``rules`` is off."""
    return Table(
        data,
        colWidths=list(widths),
        rowHeights=row_heights,
        repeatRows=1,
        style=[
            ("FONT", (0, 0), (-1, -1), REGULAR, size, leading or size * 1.25),
            ("FONT", (0, 0), (-1, 0), BOLD, size, leading or size * 1.25),
            ("TEXTCOLOR", (0, 0), (-1, -1), INK),
            ("TEXTCOLOR", (0, 0), (-1, 0), theme.accent_text),
            ("BACKGROUND", (0, 0), (-1, 0), theme.tint),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("ALIGN", (numeric_from, 0), (-1, -1), "RIGHT"),
            ("LEFTPADDING", (0, 0), (-1, -1), pad[0]),
            ("RIGHTPADDING", (0, 0), (-1, -1), pad[0]),
            ("TOPPADDING", (0, 0), (-1, -1), pad[1]),
            ("BOTTOMPADDING", (0, 0), (-1, -1), pad[1]),
            *([("LINEBELOW", (0, 0), (-1, -1), 0.4, RULE)] if rules else []),
            *style,
        ],
    )


def _total_row_style(row: int = -1) -> list[TableCommand]:
    return [("FONT", (0, row), (-1, row), BOLD), ("LINEABOVE", (0, row), (-1, row), 0.8, INK)]


class _Formats:
    """The document's currency and locale, bound once."""

    def __init__(self, doc: InvoiceDocument):
        self.currency, self.locale = doc.currency, doc.locale

    def money(self, amount: Decimal) -> str:
        return format_money(amount, self.currency, self.locale)

    def date(self, day: date) -> str:
        return format_date(day, self.locale)

    def period(self, period: Period | None) -> str:
        return format_period(period.start, period.end, self.locale) if period else ""

    def quantity(self, quantity: Decimal) -> str:
        return format_quantity(quantity, self.locale)

    def percent(self, rate: Decimal) -> str:
        return format_percent(rate, self.locale)


# --- page 1: summary ----------------------------------------------------------


LOGO_BOX = (62 * mm, 20 * mm)
LOGO_MAX_PIXELS = (440, 142)  # ~180 dpi in LOGO_BOX: sharp in print, light to embed


@functools.lru_cache(maxsize=16)
def _logo_reader(logo: bytes) -> ImageReader:
    """Decode a logo once per process: a tenant's logo is on every invoice it sends.

    Shrinks oversized uploads to print resolution and flattens transparency
    onto white (the logo always sits on white paper), so embedding costs one
    small Flate stream and no soft mask.  The reader is fully decoded and
    holds no file handle, so concurrent renders can share it.
    """
    rgba = PILImage.open(io.BytesIO(logo)).convert("RGBA")
    rgba.thumbnail(LOGO_MAX_PIXELS, PILImage.Resampling.LANCZOS)
    flat = PILImage.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba)
    reader = ImageReader(flat)
    reader.getRGBData()  # type: ignore[no-untyped-call]  # unannotated in types-reportlab
    return reader


class _Logo(Flowable):
    """The tenant logo, scaled to fit ``LOGO_BOX`` keeping its aspect ratio."""

    def __init__(self, logo: bytes):
        super().__init__()
        self.reader = _logo_reader(logo)
        pixels_wide, pixels_high = self.reader.getSize()
        scale = min(LOGO_BOX[0] / pixels_wide, LOGO_BOX[1] / pixels_high)
        self.width, self.height = pixels_wide * scale, pixels_high * scale

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        self.canv.drawImage(self.reader, 0, 0, self.width, self.height)


class _Text(NamedTuple):
    """One entry of a ``_stack``: a short text and how to set it."""

    text: str
    size: float = 8.5
    font: str = REGULAR
    colour: colors.Color = INK
    gap: float = 0.0  # extra space above
    max_lines: int = 3


def _stack(
    items: Iterable[_Text],
    width: float,
    *,
    align: str = "LEFT",
    pad: float = 0.0,
    style: Iterable[TableCommand] = (),
) -> Table:
    """A column of short texts (addresses, labels), each in its own font and colour.

    Plain-string table cells wrapped by ``_wrap``: several times cheaper than
    Paragraphs, which matters for the small-invoice render time.  Text is
    cleaned here, so callers pass user text as is.
    """
    rows: list[list[str]] = []
    commands: list[TableCommand] = []
    for row, item in enumerate(items):
        rows.append(
            [_wrap(clean_text(item.text), width - 2 * pad, item.size, item.font, item.max_lines)]
        )
        commands += [
            ("FONT", (0, row), (0, row), item.font, item.size, item.size * 1.22),
            ("TEXTCOLOR", (0, row), (0, row), item.colour),
            ("TOPPADDING", (0, row), (0, row), item.gap),
        ]
    return Table(
        rows,
        colWidths=[width],
        style=[
            ("LEFTPADDING", (0, 0), (-1, -1), pad),
            ("RIGHTPADDING", (0, 0), (-1, -1), pad),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 1.2),
            ("ALIGN", (0, 0), (-1, -1), align),
            *commands,
            *style,
        ],
    )


def _side_by_side(left: Flowable, right: Flowable, left_width: float) -> Table:
    return Table(
        [[left, right]],
        colWidths=[left_width, CONTENT_WIDTH - left_width],
        style=[
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 0),
            ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ("TOPPADDING", (0, 0), (-1, -1), 0),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 0),
        ],
    )


def _masthead(doc: InvoiceDocument, theme: _Theme) -> list[Flowable]:
    """Logo (if any) left, tenant name, address and support contact right; then the title."""
    brand = doc.branding
    contact = " · ".join(filter(None, (brand.support_email, brand.support_phone)))
    tenant_width = CONTENT_WIDTH * 0.55
    tenant = _stack(
        [
            _Text(brand.display_name, 12, BOLD, max_lines=2),
            *(
                _Text(text, 8, colour=MUTED, max_lines=1)
                for text in (*brand.address_lines, contact)
                if text
            ),
        ],
        tenant_width,
        align="RIGHT",
    )
    title = "Invoice"
    if doc.version_label:
        label = _markup(doc.version_label)
        title += f' <font name="{REGULAR}" size="10" color="{_hex(MUTED)}">{label}</font>'
    return [
        _side_by_side(
            _Logo(brand.logo) if brand.logo else Spacer(0, 0),
            tenant,
            CONTENT_WIDTH - tenant_width,
        ),
        Spacer(0, 4 * mm),
        Paragraph(
            title, _style("title", 20, font=BOLD, colour=theme.accent_text, spaceAfter=3 * mm)
        ),
    ]


def _account_row(customer: Customer) -> list[tuple[str, str]]:
    """The "Account reference" row, or none when the customer has no account reference."""
    reference = customer.account_reference.strip()
    return [("Account reference", reference)] if reference else []


def _parties(doc: InvoiceDocument, fmt: _Formats, theme: _Theme) -> Table:
    """Bill-to block beside the invoice facts."""
    customer = doc.customer
    facts_width = 88 * mm
    bill_to = _stack(
        [
            _Text("BILL TO", 7, BOLD, theme.accent_text),
            _Text(customer.billing_name, 10, BOLD, gap=1),
            *(_Text(text) for text in customer.address_lines),
        ],
        CONTENT_WIDTH - facts_width - 6 * mm,
    )
    facts = [
        ("Invoice number", doc.invoice_number),
        *_account_row(customer),
        ("Invoice date", fmt.date(doc.invoice_date)),
        ("Due date", fmt.date(doc.due_date)),
        ("Billing period", fmt.period(doc.billing_period)),
    ]
    facts_table = Table(
        [
            [label, _wrap(clean_text(value), 56 * mm, 8.5, BOLD, max_lines=2)]
            for label, value in facts
        ],
        colWidths=[30 * mm, facts_width - 30 * mm],
        style=[
            ("FONT", (0, 0), (-1, -1), REGULAR, 8.5),
            ("FONT", (1, 0), (1, -1), BOLD, 8.5),
            ("TEXTCOLOR", (0, 0), (0, -1), MUTED),
            ("TEXTCOLOR", (1, 0), (1, -1), INK),
            ("LEFTPADDING", (0, 0), (-1, -1), 0),
            ("TOPPADDING", (0, 0), (-1, -1), 1.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ],
    )
    return _side_by_side(bill_to, facts_table, CONTENT_WIDTH - facts_width)


def _charges(doc: InvoiceDocument, fmt: _Formats, theme: _Theme) -> Table:
    """Charges by category, tax and totals, beside a prominent amount-due panel."""
    summary_width = 108 * mm  # the table's 100 mm plus a gutter
    rows: list[list[str]] = [["Summary of charges", ""]]
    rows += [[CATEGORY_LABELS[c], fmt.money(amount)] for c, amount in doc.subtotals.items()]
    subtotal_row = len(rows)
    rows.append([f"Total before {doc.tax_label}", fmt.money(doc.net_total)])
    rows += [
        [
            f"{doc.tax_label} at {fmt.percent(band.rate)} on {fmt.money(band.net)}",
            fmt.money(band.tax),
        ]
        for band in doc.tax_bands
    ]
    total_row = len(rows)
    rows.append(["Total due", fmt.money(doc.total_due)])
    rows.append(["Amount already paid", fmt.money(-doc.amount_paid)])
    rows.append(["Amount due", fmt.money(doc.amount_due)])
    summary = _table(
        [[clean_text(a), b] for a, b in rows],
        [66 * mm, 34 * mm],
        theme,
        numeric_from=1,
        size=9.5,
        pad=(CELL_PAD_X, 3.6),
        style=[
            ("LINEABOVE", (0, subtotal_row), (-1, subtotal_row), 0.8, MUTED),
            *_total_row_style(total_row),
            *_total_row_style(-1),
        ],
    )
    on_accent = theme.on_accent
    panel = _stack(
        [
            _Text("Amount due", 10, colour=on_accent, gap=5 * mm),
            _Text(fmt.money(doc.amount_due), 22, BOLD, on_accent, gap=2.5 * mm, max_lines=2),
            _Text(
                f"Please pay by {fmt.date(doc.due_date)}"
                if doc.amount_due > 0
                else "No payment needed",
                9,
                colour=on_accent,
                gap=2 * mm,
            ),
        ],
        CONTENT_WIDTH - summary_width,
        pad=5 * mm,
        style=[
            ("BACKGROUND", (0, 0), (-1, -1), theme.accent),
            ("BOTTOMPADDING", (0, -1), (-1, -1), 5 * mm),
        ],
    )
    return _side_by_side(summary, panel, summary_width)


def _summary_page(doc: InvoiceDocument, fmt: _Formats, theme: _Theme) -> list[Flowable]:
    brand = doc.branding
    contact = " or ".join(filter(None, (brand.support_email, brand.support_phone)))
    note = (
        f"Questions about this invoice? Contact {escape(clean_text(contact))}, quoting invoice "
        f"{escape(clean_text(doc.invoice_number))}."
        if contact
        else ""
    )
    return [
        *_masthead(doc, theme),
        _parties(doc, fmt, theme),
        Spacer(0, 8 * mm),
        _charges(doc, fmt, theme),
        Spacer(0, 5 * mm),
        Paragraph(
            "The following pages summarise your services and itemise every charge. " + note,
            SMALL_MUTED,
        ),
    ]


class _QrCode(Flowable):
    """A QR code drawn as one filled path in module units.

    Encoded by reportlab's own ``qrencoder`` (what ``graphics.barcode.qr``
    uses); drawing it ourselves as a single path is several times faster than
    the widget, which builds a shape object per dark run, and leaves no
    hairline seams between modules.
    """

    QUIET_ZONE = 2  # modules; the slip's white space around it supplies the rest

    def __init__(self, value: str, size: float):
        super().__init__()
        qr = qrencoder.QRCode(None, qrencoder.QRErrorCorrectLevel.M)
        qr.addData(value)
        qr.make()
        self.modules: list[list[bool]] = qr.modules
        self.width = self.height = size

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        quiet, count = self.QUIET_ZONE, len(self.modules)
        side = count + 2 * quiet
        runs = []
        for row_index, row in enumerate(self.modules):
            y = side - quiet - 1 - row_index
            column = quiet
            for dark, group in groupby(row):
                length = sum(1 for _ in group)
                if dark:
                    runs.append(f"{column} {y} {length} 1 re")
                column += length
        self.canv.scale(self.width / side, self.height / side)
        self.canv.setFillColor(colors.black)
        self.canv.addLiteral("\n".join(runs) + "\nf")


def _remittance_slip(doc: InvoiceDocument, fmt: _Formats, theme: _Theme) -> Table:
    """Contents of the tear-off slip: how to pay | payment references | QR pay link."""
    pay_link = doc.payment.pay_link
    qr_width = 34 * mm if pay_link else 0
    refs_width = 72 * mm
    gutter = 5 * mm
    how_width = CONTENT_WIDTH - refs_width - qr_width - gutter * (2 if pay_link else 1)
    heading = functools.partial(_Text, size=8, font=BOLD, colour=theme.accent_text)

    how_to_pay = _stack(
        [
            heading("HOW TO PAY"),
            *(_Text(text, 8, gap=0, max_lines=4) for text in doc.payment.instructions.splitlines()),
        ],
        how_width,
    )
    refs = Table(
        [
            ["Customer", _wrap(clean_text(doc.customer.billing_name), 40 * mm, 8.5, BOLD, 2)],
            *([label, clean_text(value)] for label, value in _account_row(doc.customer)),
            ["Invoice number", clean_text(doc.invoice_number)],
            ["Due date", fmt.date(doc.due_date)],
            ["Amount due", fmt.money(doc.amount_due)],
        ],
        colWidths=[31 * mm, refs_width - 31 * mm],
        style=[
            ("FONT", (0, 0), (-1, -1), REGULAR, 8.5, 10.5),
            ("FONT", (1, 0), (1, -1), BOLD, 8.5, 10.5),
            ("FONT", (0, -1), (-1, -1), BOLD, 11, 13),
            ("TEXTCOLOR", (0, 0), (-1, -1), INK),
            ("TEXTCOLOR", (0, 0), (0, -2), MUTED),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LINEABOVE", (0, -1), (-1, -1), 0.8, INK),
            ("TOPPADDING", (0, -1), (-1, -1), 4),
            ("LEFTPADDING", (0, 0), (-1, -1), 0),
        ],
    )
    cells: list[Flowable] = [how_to_pay, refs]
    if pay_link:
        cells.append(
            Table(
                [
                    ["PAY ONLINE"],
                    [_QrCode(pay_link, 28 * mm)],
                    [
                        Paragraph(
                            f"<a href={quoteattr(pay_link)}>{_markup(pay_link)}</a>",
                            _style("url", 6.5, colour=MUTED, alignment=TA_CENTER),
                        )
                    ],
                ],
                colWidths=[qr_width],
                style=[
                    ("FONT", (0, 0), (0, 0), BOLD, 8),
                    ("TEXTCOLOR", (0, 0), (0, 0), theme.accent_text),
                    ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                    ("TOPPADDING", (0, 0), (-1, -1), 0),
                ],
            )
        )
    widths = [how_width + gutter, refs_width + (gutter if pay_link else 0), qr_width]
    return Table(
        [cells],
        colWidths=widths[: len(cells)],
        style=[
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 0),
            ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ("TOPPADDING", (0, 0), (-1, -1), 0),
        ],
    )


# --- page 2+: service summary -------------------------------------------------


def _service_summary(doc: InvoiceDocument, fmt: _Formats, theme: _Theme) -> list[Flowable]:
    """Per service (product, SKU, category) and, when sites are known, per site by category."""
    services: dict[tuple[str, str, Category], list[Decimal]] = {}
    for line in doc.lines:
        totals = services.setdefault((line.product_name, line.sku, line.category), [ZERO, ZERO])
        totals[0] += line.quantity
        totals[1] += line.net
    widths = [74 * mm, 34 * mm, 32 * mm, 18 * mm]
    by_service = _table(
        [
            ["Service", "SKU", "Category", "Quantity", "Amount"],
            *(
                [
                    _wrap(clean_text(name), widths[0] - 2 * CELL_PAD_X, 8),
                    _wrap(clean_text(sku), widths[1] - 2 * CELL_PAD_X, 8),
                    CATEGORY_LABELS[category],
                    fmt.quantity(quantity),
                    fmt.money(amount),
                ]
                for (name, sku, category), (quantity, amount) in services.items()
            ),
            ["Total", "", "", "", fmt.money(doc.net_total)],
        ],
        [*widths, CONTENT_WIDTH - sum(widths)],
        theme,
        numeric_from=3,
        style=_total_row_style(),
    )
    intro = f"Amounts exclude {escape(clean_text(doc.tax_label))}."
    flowables = [
        Paragraph("Service summary", theme.heading(13)),
        Paragraph(intro, SMALL_MUTED),
        Spacer(0, 2 * mm),
        by_service,
    ]
    if any(line.site_name for line in doc.lines):
        flowables += [
            CondPageBreak(40 * mm),
            Paragraph("Charges by site", theme.heading()),
            _by_site(doc, fmt, theme),
        ]
    return flowables


def _by_site(doc: InvoiceDocument, fmt: _Formats, theme: _Theme) -> Table:
    zero = dict.fromkeys(Category, ZERO)
    sites: dict[str, dict[Category, Decimal]] = {}
    for line in doc.lines:
        sites.setdefault(line.site_name or "Not site-specific", dict(zero))[line.category] += (
            line.net
        )
    site_width = CONTENT_WIDTH - 5 * 25 * mm
    return _table(
        [
            ["Site", *CATEGORY_COLUMNS.values(), "Total"],
            *(
                [_wrap(clean_text(site), site_width - 2 * CELL_PAD_X, 8)]
                + [fmt.money(totals[c]) for c in Category]
                + [fmt.money(sum(totals.values(), ZERO))]
                for site, totals in sites.items()
            ),
            ["Total", *(fmt.money(doc.subtotals[c]) for c in Category), fmt.money(doc.net_total)],
        ],
        [site_width, *[25 * mm] * 5],
        theme,
        numeric_from=1,
        style=_total_row_style(),
    )


# --- page 2+: itemised lines with carried subtotals ---------------------------

LEDGER_SIZE, LEDGER_LEADING, LEDGER_PAD = 7.5, 9.2, (CELL_PAD_X, 1.8)
NUMERIC_WIDTHS = [11 * mm, 17 * mm, 16 * mm, 20 * mm]  # qty, unit price, tax, amount
SITE_WIDTH = 27 * mm
PERIOD_WIDTH = 34 * mm  # the longest en_US range, "May 28 - Aug 28, 2025", on one line


def _row_height(cells: Iterable[str]) -> float:
    return (max(cell.count("\n") for cell in cells) + 1) * LEDGER_LEADING + 2 * LEDGER_PAD[1]


class _Ledger:
    """Every invoice line as pre-wrapped table rows, with prefix sums of row
    heights and of (tax, amount), so any page-sized slice and its running
    totals are found by bisection -- O(log n) per page, not O(n).

    The Site column appears only when some line has a site; otherwise the
    description gets its width."""

    def __init__(self, doc: InvoiceDocument, fmt: _Formats, theme: _Theme):
        self.fmt, self.theme = fmt, theme
        self.with_sites = any(line.site_name for line in doc.lines)
        text_widths = [SITE_WIDTH, PERIOD_WIDTH] if self.with_sites else [PERIOD_WIDTH]
        self.widths = [
            CONTENT_WIDTH - sum(text_widths) - sum(NUMERIC_WIDTHS),
            *text_widths,
            *NUMERIC_WIDTHS,
        ]
        self.header = [
            "Description",
            *(["Site"] if self.with_sites else []),
            "Period",
            "Qty",
            "Unit price",
            clean_text(doc.tax_label),
            "Amount",
        ]
        self.rows = [self._cells(line) for line in doc.lines]
        self.heights = [_row_height(row) for row in self.rows]
        self.tops = [0.0, *accumulate(self.heights)]
        self.running = [
            (ZERO, ZERO),
            *accumulate(
                ((line.tax, line.net) for line in doc.lines),
                lambda a, b: (a[0] + b[0], a[1] + b[1]),
            ),
        ]
        self.fixed_height = _row_height(self.header)  # header; also each carried/total row

    def _cells(self, line: InvoiceLine) -> list[str]:
        fmt = self.fmt
        texts = [
            line.description,
            *([line.site_name or ""] if self.with_sites else []),
            fmt.period(line.period),
        ]
        return [
            *(
                _wrap(clean_text(text), width - 2 * LEDGER_PAD[0], LEDGER_SIZE)
                for text, width in zip(texts, self.widths[: len(texts)], strict=True)
            ),
            fmt.quantity(line.quantity),
            fmt.money(line.unit_price),
            fmt.money(line.tax),
            fmt.money(line.net),
        ]

    def _running_row(self, label: str, index: int) -> list[str]:
        tax, net = self.running[index]
        return [label, *[""] * (len(self.widths) - 3), self.fmt.money(tax), self.fmt.money(net)]

    def table(self, start: int, end: int) -> Table:
        """Rows ``start:end`` framed by "Brought forward" (unless first) and
        "Carried forward" (or the grand total on the last slice)."""
        last = end == len(self.rows)
        framing_before = [self._running_row("Brought forward", start)] if start else []
        rows = [
            self.header,
            *framing_before,
            *self.rows[start:end],
            self._running_row("Total" if last else "Carried forward", end),
        ]
        heights = (
            [self.fixed_height] * (1 + len(framing_before))
            + self.heights[start:end]
            + [self.fixed_height]
        )
        first_line = 1 + len(framing_before)
        style = [
            ("FONT", (0, 1), (-1, first_line - 1), BOLD),
            ("TEXTCOLOR", (0, 1), (-1, first_line - 1), MUTED),
            ("ROWBACKGROUNDS", (0, first_line), (-1, -2), [colors.white, ZEBRA]),
            *_total_row_style(),
            *([] if last else [("TEXTCOLOR", (0, -1), (-1, -1), MUTED)]),
        ]
        return _table(
            rows,
            self.widths,
            self.theme,
            numeric_from=len(self.widths) - 4,
            size=LEDGER_SIZE,
            leading=LEDGER_LEADING,
            pad=LEDGER_PAD,
            rules=False,  # zebra stripes instead: thousands of rules cost time and ink
            row_heights=heights,
            style=style,
        )


class _LedgerFlowable(Flowable):
    """Itemised lines from ``start`` on.  When platypus asks it to split, it
    answers with one page-sized Table closed by a carried-forward row plus a
    remainder that opens with the matching brought-forward row, so every page
    break's running totals are right by construction."""

    def __init__(self, ledger: _Ledger, start: int = 0):
        super().__init__()
        self.ledger, self.start = ledger, start

    def _height(self, end: int) -> float:
        ledger = self.ledger
        framing = 3 if self.start else 2  # header, brought forward, carried forward/total
        return framing * ledger.fixed_height + ledger.tops[end] - ledger.tops[self.start]

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        self.width, self.height = CONTENT_WIDTH, self._height(len(self.ledger.rows))
        return self.width, self.height

    def split(self, availWidth: float, availHeight: float) -> list[Flowable]:
        ledger = self.ledger
        budget = availHeight - self._height(self.start)
        end = bisect_right(ledger.tops, ledger.tops[self.start] + budget) - 1
        # Keep at least one line with the grand total so it never stands alone.
        end = min(end, len(ledger.rows) - 1)
        if end <= self.start:
            return []
        return [ledger.table(self.start, end), _LedgerFlowable(ledger, end)]

    def draw(self) -> None:
        table = self.ledger.table(self.start, len(self.ledger.rows))
        table.wrapOn(self.canv, self.width, self.height)
        table.drawOn(self.canv, 0, 0)


# --- page furniture -----------------------------------------------------------


class _NumberedCanvas(Canvas):
    """Holds pages back until save() so each footer can say "Page N of M"."""

    def __init__(
        self,
        *args: Any,
        footer: Callable[[Canvas, int, int], None],
        pdf_date: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._footer = footer
        self._held_pages: list[dict[str, Any]] = []
        # PDF CreationDate/ModDate come from the invoice, never the clock.
        self.setDateFormatter(lambda *_: pdf_date)
        # The /ID is a digest of the metadata seeded with reportlab's invariant
        # timestamp, which honours SOURCE_DATE_EPOCH; seed it from the invoice
        # date instead so every environment produces the same bytes.
        # (Canvas._doc is reportlab's private attribute, absent from types-reportlab.)
        self._doc.signature = hashlib.md5(  # type: ignore[attr-defined]
            pdf_date.encode(), usedforsecurity=False
        )

    def showPage(self) -> None:
        self._held_pages.append(dict(self.__dict__))
        self._startPage()  # type: ignore[attr-defined]  # reportlab's private, no stub

    def save(self) -> None:
        for number, state in enumerate(self._held_pages, 1):
            self.__dict__.update(state)
            self._footer(self, number, len(self._held_pages))
            super().showPage()
        super().save()


def _frame(bottom: float, top: float) -> Frame:
    """A full-width frame between two heights, without reportlab's default padding."""
    return Frame(MARGIN, bottom, CONTENT_WIDTH, top - bottom, 0, 0, 0, 0)


def _fit(text: str, width: float, font: str, size: float) -> str:
    """User text on one line of at most ``width``, cut with an ellipsis if needed."""
    return _wrap(clean_text(text), width, size, font, max_lines=1)


def _draw_pair(canvas: Canvas, y: float, left: _Text, right: _Text) -> None:
    """Draw two texts flush left and flush right on one baseline; the left one
    is shortened so that they never collide."""
    right_text = clean_text(right.text)
    canvas.setFont(right.font, right.size)
    canvas.setFillColor(right.colour)
    canvas.drawRightString(PAGE_WIDTH - MARGIN, y, right_text)
    room = CONTENT_WIDTH - pdfmetrics.stringWidth(right_text, right.font, right.size) - 6 * mm
    canvas.setFont(left.font, left.size)
    canvas.setFillColor(left.colour)
    canvas.drawString(MARGIN, y, _fit(left.text, room, left.font, left.size))


def _draw_footer(canvas: Canvas, doc: InvoiceDocument, page: int, pages: int) -> None:
    canvas.saveState()
    reference = f"Invoice {doc.invoice_number}"
    if doc.customer.account_reference:
        reference += f" · Account {doc.customer.account_reference}"
    _draw_pair(
        canvas,
        FOOTER_BASELINE,
        _Text(f"{reference} · {doc.branding.display_name}", 7, colour=MUTED),
        _Text(f"Page {page} of {pages}", 7, colour=MUTED),
    )
    canvas.restoreState()


def _draw_first_page(canvas: Canvas, doc: InvoiceDocument, slip: Table, theme: _Theme) -> None:
    """Accent band at the top; the tear-off remittance slip at the foot."""
    canvas.saveState()
    canvas.setFillColor(theme.accent)
    canvas.rect(0, PAGE_HEIGHT - 5 * mm, PAGE_WIDTH, 5 * mm, stroke=0, fill=1)

    top = SLIP_BOTTOM + SLIP_HEIGHT
    canvas.setStrokeColor(MUTED)
    canvas.setLineWidth(0.6)
    canvas.setDash(3, 2.5)
    canvas.line(MARGIN + 5 * mm, top, PAGE_WIDTH - MARGIN, top)
    canvas.setFont(REGULAR, 10)
    canvas.setFillColor(MUTED)
    canvas.drawString(MARGIN, top - 3.5, "✂")
    canvas.setFont(REGULAR, 6.5)
    canvas.drawRightString(
        PAGE_WIDTH - MARGIN, top + 3, "Please detach and return this slip with your payment"
    )
    payable_to = _fit(f"Payable to {doc.branding.display_name}", 110 * mm, REGULAR, 8.5)
    _draw_pair(
        canvas,
        top - 8 * mm,
        _Text("Remittance advice", 10, BOLD, theme.accent_text),
        _Text(payable_to, 8.5),
    )
    canvas.restoreState()

    # Below the heading line; shrinks rather than loses over-long instructions.
    slip_top = top - 11 * mm
    _frame(SLIP_BOTTOM, slip_top).addFromList(
        [KeepInFrame(CONTENT_WIDTH, slip_top - SLIP_BOTTOM, [slip], mode="shrink")], canvas
    )


def _draw_continuation_header(canvas: Canvas, doc: InvoiceDocument, theme: _Theme) -> None:
    canvas.saveState()
    canvas.setFillColor(theme.accent)
    canvas.rect(0, PAGE_HEIGHT - 2.5 * mm, PAGE_WIDTH, 2.5 * mm, stroke=0, fill=1)
    y = PAGE_HEIGHT - 11 * mm
    invoice = clean_text(f" · Invoice {doc.invoice_number}")
    customer_room = CONTENT_WIDTH * 0.6 - pdfmetrics.stringWidth(invoice, REGULAR, 8)
    customer = _fit(doc.customer.billing_name, customer_room, REGULAR, 8)
    _draw_pair(
        canvas,
        y,
        _Text(doc.branding.display_name, 9, BOLD, theme.accent_text),
        _Text(customer + invoice, 8, colour=MUTED),
    )
    canvas.setStrokeColor(RULE)
    canvas.setLineWidth(0.5)
    canvas.line(MARGIN, y - 3 * mm, PAGE_WIDTH - MARGIN, y - 3 * mm)
    canvas.restoreState()


# --- entry point --------------------------------------------------------------


def render_invoice_pdf(doc: InvoiceDocument) -> bytes:
    """Render ``doc`` as a PDF; the same document always yields the same bytes."""
    _setup_once()
    fmt, theme = _Formats(doc), _Theme.from_hex(doc.branding.accent_colour)
    slip = _remittance_slip(doc, fmt, theme)

    first = PageTemplate(
        "summary",
        [_frame(SLIP_BOTTOM + SLIP_HEIGHT + 6 * mm, PAGE_HEIGHT - 12 * mm)],
        onPage=lambda canvas, _: _draw_first_page(canvas, doc, slip, theme),
    )
    later = PageTemplate(
        "continuation",
        [_frame(17 * mm, PAGE_HEIGHT - 18 * mm)],
        onPage=lambda canvas, _: _draw_continuation_header(canvas, doc, theme),
    )
    out = io.BytesIO()
    template = BaseDocTemplate(
        out,
        pagesize=A4,
        pageTemplates=[first, later],
        invariant=1,
        title=clean_text(f"Invoice {doc.invoice_number}"),
        author=clean_text(doc.branding.display_name),
        subject=clean_text(f"Invoice for {doc.customer.billing_name}"),
        creator="Halo Partner Portal",
        lang=doc.locale.replace("_", "-"),
    )
    story = [
        NextPageTemplate("continuation"),  # takes effect from page 2
        *_summary_page(doc, fmt, theme),
        PageBreak(),
        *_service_summary(doc, fmt, theme),
        CondPageBreak(50 * mm),
        Paragraph("Itemised charges", theme.heading(13)),
        _LedgerFlowable(_Ledger(doc, fmt, theme)),
    ]
    pdf_date = doc.invoice_date.strftime("D:%Y%m%d000000+00'00'")
    template.build(
        story,
        canvasmaker=functools.partial(
            _NumberedCanvas, footer=lambda c, n, m: _draw_footer(c, doc, n, m), pdf_date=pdf_date
        ),
    )
    return out.getvalue()
