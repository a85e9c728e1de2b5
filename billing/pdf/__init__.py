"""Invoice PDF rendering: build an ``InvoiceDocument``, get PDF bytes back.

Pure Python (reportlab platypus), no Django: usable from views, tasks and tests alike.
"""

from .model import (
    Branding,
    Category,
    Customer,
    InvoiceDocument,
    InvoiceLine,
    Payment,
    Period,
    TaxBand,
    round_money,
)
from .render import render_invoice_pdf

__all__ = [
    "Branding",
    "Category",
    "Customer",
    "InvoiceDocument",
    "InvoiceLine",
    "Payment",
    "Period",
    "TaxBand",
    "render_invoice_pdf",
    "round_money",
]
