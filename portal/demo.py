"""Demo data: the tenant and catalogue here, and steps that later features register.

The organisations and products match the Halo simulator's `demo` seed (external refs and
SKUs), so mapping suggestions and syncs have something real to find.
"""

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.files.base import ContentFile
from django.utils.module_loading import autodiscover_modules

from portal.models import Organisation, Product, Tenant

ORGANISATIONS = [
    ("Northwind Traders", "NW-1001"),
    ("Contoso Dental", "CD-1002"),
    ("Fabrikam Legal", "FL-1003"),
    ("Tailspin Toys", "TT-1004"),
    ("Wide World Importers", "WW-1005"),
    ("Αθηνά Λογιστική", "AL-1006"),
    ("ООО Ромашка", "RM-1007"),
    ("Blue Yonder Airlines", "BY-1008"),
]
PRODUCTS = [
    ("Endpoint Protection", "EDR-STD", "4.50"),
    ("Managed Detection & Response", "MDR-PRO", "9.00"),
    ("Cloud Backup 1TB", "BKP-1TB", "12.00"),
    ("Email Security", "EML-SEC", "2.25"),
    ("Security Awareness Training", "SAT-USR", "1.75"),
]

_steps: "list[Callable[[DemoContext], None]]" = []


@dataclass
class DemoContext:
    tenant: Tenant
    user: object
    halo_url: str
    notes: list = field(default_factory=list)


def register(func):
    """Add a demo step `(context) -> None`; steps must be idempotent."""
    _steps.append(func)
    return func


def steps():
    """Every app's demo steps, in INSTALLED_APPS order. The apps' `demo` modules (which may
    use the Halo simulator's seed) are imported here, by the demo command, never at start-up:
    the running portal does not import the simulator."""
    autodiscover_modules("demo")
    return list(_steps)


def ensure_tenant():
    tenant, _ = Tenant.objects.update_or_create(
        slug="acme",
        defaults={
            "name": "Acme IT Services",
            "display_name": "Acme IT Services Ltd",
            "time_zone": "Europe/London",
            "currency": "GBP",
            "locale": "en_GB",
            "accent_colour": "#0B6E4F",
            "address": "Unit 4, Riverside Works\n12 Mill Lane\nLeeds LS1 4AB\nUnited Kingdom",
            "support_email": "billing@acme-it.example",
            "support_phone": "+44 113 496 0000",
        },
    )
    if not tenant.logo:
        tenant.logo.save("acme-logo.png", ContentFile(_logo_png(tenant.accent_colour)), save=True)
    return tenant


@register
def catalogue(context):
    tenant = context.tenant
    for name, ref in ORGANISATIONS:
        Organisation.objects.update_or_create(
            tenant=tenant, external_ref=ref, defaults={"name": name, "active": True}
        )
    for name, sku, price in PRODUCTS:
        Product.objects.update_or_create(
            tenant=tenant, sku=sku, defaults={"name": name, "unit_price": Decimal(price)}
        )
    context.notes.append(f"{len(ORGANISATIONS)} organisations, {len(PRODUCTS)} products")


def _logo_png(colour):
    """A simple square logo drawn with Pillow (a reportlab dependency), deterministic bytes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (240, 240), colour)
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 200, 200), outline="white", width=14)
    draw.polygon([(120, 66), (176, 176), (64, 176)], fill="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
