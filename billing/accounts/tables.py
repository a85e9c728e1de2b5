"""The account page's long tables (invoices, payments), built as HTML here.

A customer may have hundreds of invoices: the template engine costs about 60 µs a row
(some 25 variable lookups each), `format_html` about 15; one `str.format` per row with every
value escaped by `html.escape` (quotes too) a few. The markup is what the template would
write; the rest of the page is templates/accounts/account.html."""

from html import escape

from django.utils.safestring import mark_safe

NEW_TAB = ' target="_blank" rel="noopener"'
NEW_TAB_NOTE = " (opens in a new tab)"

INVOICE_ROW = (
    '<tr class="is-{kind}"><th scope="row" class="cell-number">{number}{note}</th>'
    '<td class="cell-date" data-label="Dated">{dated}</td>'
    '<td class="cell-due-date" data-label="Due">{due_date}</td>'
    '<td class="cell-status"><span class="badge badge-{kind}">{status}</span></td>'
    '<td class="num cell-total" data-label="Total">{total}</td>'
    '<td class="num cell-due" data-label="Amount due">{due}</td>'
    '<td class="cell-actions">{action}<a href="{pdf}" target="_blank" rel="noopener">PDF'
    '<span class="visually-hidden"> of invoice {number} (opens in a new tab)</span></a></td></tr>'
)
ACTIONS = {
    "progress": '<a href="{url}"{target}>Payment in progress<span class="visually-hidden"> for '
    "invoice {number}</span></a> ",
    "pay": '<a class="button button-small" href="{url}"{target}>Pay<span class="visually-hidden">'
    " invoice {number}{note}</span></a> ",
    "details": '<a href="{url}"{target}>Details<span class="visually-hidden"> of invoice '
    "{number}</span></a> ",
}
PAYMENT_ROW = (
    '<tr><th scope="row" class="cell-number">{when}</th><td data-label="Invoice">{invoice}</td>'
    '<td data-label="Card">{card}{automatic}</td><td class="num" data-label="Amount">{amount}'
    '</td><td class="num" data-label="Refunded">{refunded}</td><td class="cell-actions">'
    '<a href="{url}"{target}>Receipt<span class="visually-hidden"> for {amount} on {when}'
    "</span></a></td></tr>"
)
AUTOPAY_BADGE = ' <span class="badge badge-muted">Auto-pay</span>'


def invoice_rows(rows, *, new_tab, staff):
    """The invoice table's rows; `new_tab`: inside a frame, links leave it for a new tab;
    `staff`: the staff view offers no Pay buttons."""
    target = NEW_TAB if new_tab else ""
    note = NEW_TAB_NOTE if new_tab else ""
    # Amounts, states and kinds repeat from row to row: each is escaped once.
    escaped: dict[str, str] = {}

    def once(text):
        if (html := escaped.get(text)) is None:
            html = escaped[text] = escape(text)
        return html

    html = []
    for row in rows:
        number = escape(row.number)
        if row.in_flight:
            action = "progress"
        elif not row.due_amount:
            action = "details"
        else:
            action = "" if staff else "pay"
        html.append(
            INVOICE_ROW.format(
                kind=once(row.kind),
                number=number,
                note=f'<span class="row-note">{escape(row.note)}</span>' if row.note else "",
                dated=escape(row.invoice_date) or "–",
                due_date=escape(row.due_date) or "–",
                status=once(row.status),
                total=once(row.total),
                due=once(row.due),
                action=ACTIONS[action].format(
                    url=escape(row.pay_url), target=target, number=number, note=note
                )
                if action
                else "",
                pdf=escape(row.pdf_url),
            )
        )
    return mark_safe("\n".join(html))  # noqa: S308 - every value above is escaped


def payment_rows(payments, *, new_tab):
    target = NEW_TAB if new_tab else ""
    html = [
        PAYMENT_ROW.format(
            when=escape(p["when"]),
            invoice=escape(p["invoice"]),
            card=escape(p["card"]) or "–",
            automatic=AUTOPAY_BADGE if p["automatic"] else "",
            amount=escape(p["amount"]),
            refunded=escape(p["refunded"]) or "–",
            url=escape(p["receipt_url"]),
            target=target,
        )
        for p in payments
    ]
    return mark_safe("\n".join(html))  # noqa: S308 - every value above is escaped
