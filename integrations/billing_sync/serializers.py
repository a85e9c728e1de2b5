"""Usage rows as the API and the CSV import accept them, validated as a whole."""

import re
from decimal import Decimal

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

MAX_ROWS = 20_000
MAX_QUANTITY = 10_000_000


MAX_PRICE = Decimal("99999999.9999")  # Product.unit_price: 12 digits, 4 after the point
PRICE_TEXT = re.compile(r"\s*\d{1,8}(\.\d{1,4})?\s*")

#: What a blank field fails anyway (fields are stripped first): for the schema, as `pattern`.
NOT_BLANK = RegexValidator(r"\S", "This field may not be blank.")


class UsageRowSerializer(serializers.Serializer):
    organisation = serializers.CharField(
        max_length=100,
        validators=[NOT_BLANK],
        help_text="The organisation's external reference (case-insensitive).",
    )
    product = serializers.CharField(
        max_length=64, validators=[NOT_BLANK], help_text="The product's SKU."
    )
    quantity = serializers.IntegerField(
        min_value=0, max_value=MAX_QUANTITY, help_text="How many it uses now (not a delta)."
    )
    organisation_name = serializers.CharField(
        max_length=200,
        required=False,
        validators=[NOT_BLANK],
        help_text="Used only when the tenant lets usage create unknown organisations: the "
        "name of the organisation this row creates (default: its external reference). An "
        "existing organisation is never renamed by usage.",
    )


@extend_schema_field(
    {"oneOf": [{"type": "string", "maxLength": 100, "nullable": True}, {"type": "integer"}]}
)
class IdempotencyKeyField(serializers.CharField):
    """Text, or a whole number (read as its digits): at most 100 characters either way; null
    is no key."""


class UsageRequestSerializer(serializers.Serializer):
    """Documents the object form; a bare list of rows is accepted too."""

    usage = UsageRowSerializer(many=True)
    idempotency_key = IdempotencyKeyField(
        max_length=100,
        required=False,
        help_text="Send the same key when retrying: the usage is applied once. Text or a "
        "whole number, at most 100 characters. An `Idempotency-Key` header works too.",
    )


class UsageChangeSerializer(serializers.Serializer):
    organisation = serializers.CharField()
    product = serializers.CharField()
    previous = serializers.IntegerField(allow_null=True)
    quantity = serializers.IntegerField()


class UsageResponseSerializer(serializers.Serializer):
    submission = serializers.IntegerField(help_text="Id of the stored submission.")
    rows = serializers.IntegerField()
    changed = serializers.IntegerField(help_text="Rows whose count differed from the stored one.")
    replayed = serializers.BooleanField(
        help_text="True when the idempotency key was seen before: nothing changed this time."
    )
    changes = UsageChangeSerializer(many=True)
    created_organisations = serializers.ListField(
        child=serializers.CharField(),
        help_text="External references of the organisations this submission created (only "
        "when the tenant lets usage create unknown organisations; else always empty).",
    )


class UsageRowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(help_text="1-based position in the list.")
    organisation = serializers.CharField()
    product = serializers.CharField()
    # A field named like Serializer.errors: DRF's metaclass takes declared fields off the
    # class, so the property stays; django-stubs sees only the clash.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField())
    )


class UsageErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField()
    rows = UsageRowErrorSerializer(many=True, required=False)


# -- onboarding (integrations.billing_sync.onboarding) ---------------------------------------
# Fields that take JSON as the schema documents it, and nothing else.


class TextField(serializers.CharField):
    """Text only: DRF's CharField also takes numbers (as their digits) and booleans, which
    the schema does not allow."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanField(serializers.BooleanField):
    """true or false only (DRF's also takes "yes", 1, "on"...)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


@extend_schema_field(
    {
        "oneOf": [
            {"type": "number", "minimum": 0, "maximum": float(MAX_PRICE)},
            {"type": "string", "pattern": rf"^{PRICE_TEXT.pattern}$"},
        ]
    }
)
class PriceField(serializers.DecimalField):
    """A price as a JSON number or as decimal text ("12.50"), at most 4 decimal places."""

    def __init__(self, **kwargs):
        super().__init__(max_digits=12, decimal_places=4, min_value=Decimal(0), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("invalid")
        if isinstance(data, str) and not PRICE_TEXT.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


HALO_HELP = (
    "Optional: the Halo {noun} to map it to, by Halo id or exact name (as listed under Halo "
    "{noun}s, refreshed from Halo). Omitted: the mapping is left as it is."
)


class OrganisationRowSerializer(serializers.Serializer):
    external_ref = TextField(
        max_length=100,
        validators=[NOT_BLANK],
        help_text="The vendor's id for the customer: the key (case-insensitive) that usage "
        "rows name.",
    )
    name = TextField(
        max_length=200,
        required=False,
        validators=[NOT_BLANK],
        help_text="Required for a new organisation; omitted, an existing one keeps its name.",
    )
    active = StrictBooleanField(
        required=False, help_text="Default true for a new organisation; omitted: unchanged."
    )
    halo_client = TextField(
        max_length=300,
        required=False,
        validators=[NOT_BLANK],
        help_text=HALO_HELP.format(noun="client"),
    )


class ProductRowSerializer(serializers.Serializer):
    sku = TextField(
        max_length=64,
        validators=[NOT_BLANK],
        help_text="The product's SKU: the key (case-insensitive) that usage rows name.",
    )
    name = TextField(
        max_length=200,
        required=False,
        validators=[NOT_BLANK],
        help_text="Required for a new product; omitted, an existing one keeps its name.",
    )
    unit_price = PriceField(
        required=False,
        help_text="Price per unit, in the tenant's currency, at most 4 decimal places. "
        "Default 0 for a new product; omitted: unchanged.",
    )
    active = StrictBooleanField(
        required=False, help_text="Default true for a new product; omitted: unchanged."
    )
    halo_item = TextField(
        max_length=300,
        required=False,
        validators=[NOT_BLANK],
        help_text=HALO_HELP.format(noun="item"),
    )


def _onboarding_serializers(noun, plural, row_serializer, key, halo_field):
    """Request, answer and error serializers of one onboarding endpoint (for the schema)."""
    title = noun.capitalize()
    request = type(
        f"{title}ImportRequestSerializer",
        (serializers.Serializer,),
        {
            plural: serializers.ListField(
                child=row_serializer(),
                max_length=MAX_ROWS,
                min_length=1,
                help_text=f"1 to {MAX_ROWS:,} {plural}, each created or updated by its `{key}`.",
            ),
            "idempotency_key": IdempotencyKeyField(
                max_length=100,
                required=False,
                help_text=f"Send the same key when retrying: the {plural} are applied once, and "
                "the retry gets the first answer again. Text or a whole number, at most 100 "
                "characters. An `Idempotency-Key` header works too.",
            ),
            "__doc__": f"{title}s to create or update, all or nothing.",
        },
    )
    halo = type(
        f"{title}HaloRecordSerializer",
        (serializers.Serializer,),
        {"id": serializers.IntegerField(), "name": serializers.CharField()},
    )
    result_fields = {
        "id": serializers.IntegerField(help_text=f"The portal's id of the {noun}."),
        key: serializers.CharField(),
        "name": serializers.CharField(),
        **(
            {"unit_price": serializers.CharField(help_text="As decimal text.")}
            if noun == "product"
            else {}
        ),
        "active": serializers.BooleanField(),
        "action": serializers.ChoiceField(choices=["created", "updated", "unchanged"]),
        halo_field: halo(
            allow_null=True,
            help_text=f"The Halo {halo_field.split('_')[1]} the row mapped it to; null when "
            "the row named none.",
        ),
    }
    result = type(f"{title}ResultSerializer", (serializers.Serializer,), result_fields)
    response = type(
        f"{title}ImportResponseSerializer",
        (serializers.Serializer,),
        {
            "submission": serializers.IntegerField(help_text="Id of the stored submission."),
            "rows": serializers.IntegerField(),
            "created": serializers.IntegerField(),
            "updated": serializers.IntegerField(),
            "unchanged": serializers.IntegerField(),
            "mapped": serializers.IntegerField(
                help_text="Rows that set or changed a Halo mapping."
            ),
            "replayed": serializers.BooleanField(
                help_text="True when the idempotency key was seen before: nothing changed this "
                "time, and the answer is the first one's."
            ),
            "results": result(many=True, help_text=f"Each {noun} as it is now, in request order."),
        },
    )
    row_error = type(
        f"{title}RowErrorSerializer",
        (serializers.Serializer,),
        {
            "row": serializers.IntegerField(help_text="1-based position in the list."),
            key: serializers.CharField(help_text="As sent."),
            "errors": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()),
                help_text="Messages per field (`row`: about the row as a whole).",
            ),
        },
    )
    error = type(
        f"{title}ImportErrorSerializer",
        (serializers.Serializer,),
        {
            "error": serializers.CharField(),
            "detail": serializers.CharField(),
            "rows": row_error(many=True, required=False),
        },
    )
    return request, response, error


(
    OrganisationImportRequestSerializer,
    OrganisationImportResponseSerializer,
    OrganisationImportErrorSerializer,
) = _onboarding_serializers(
    "organisation", "organisations", OrganisationRowSerializer, "external_ref", "halo_client"
)
(
    ProductImportRequestSerializer,
    ProductImportResponseSerializer,
    ProductImportErrorSerializer,
) = _onboarding_serializers("product", "products", ProductRowSerializer, "sku", "halo_item")


def validate_usage(tenant, rows, create_organisations=False):
    """`(resolved, errors)`: `(organisation, product, quantity)` per row, or per-row errors.

    With `create_organisations`, an unknown external reference is no error: its rows name a
    `NewOrganisation`, which `UsageSubmission.objects.record` creates. Raises
    `serializers.ValidationError` when `rows` is not a usable list at all.
    """
    from integrations.billing_sync.models import NewOrganisation

    if not isinstance(rows, list):
        raise serializers.ValidationError(
            "Send a JSON list of {organisation, product, quantity} rows, or an object with "
            "that list as `usage`."
        )
    if not rows:
        raise serializers.ValidationError("The list of usage rows is empty.")
    if len(rows) > MAX_ROWS:
        raise serializers.ValidationError(f"Send at most {MAX_ROWS} rows per request.")
    organisations = {o.external_ref.casefold(): o for o in tenant.organisations.all()}
    products = {p.sku.casefold(): p for p in tenant.products.all()}
    resolved, errors, seen = [], [], {}
    for number, data in enumerate(rows, 1):
        row = UsageRowSerializer(data=data)
        problems = {} if row.is_valid() else dict(row.errors)
        values = row.validated_data if not problems else {}
        organisation = product = None
        if "organisation" in values:
            ref = values["organisation"].strip()
            organisation = organisations.get(ref.casefold())
            if organisation is None and create_organisations:
                name = values.get("organisation_name", "").strip() or ref
                organisation = organisations[ref.casefold()] = NewOrganisation(ref, name)
            elif organisation is None:
                problems["organisation"] = [
                    f"No organisation has the external reference “{values['organisation']}”."
                ]
        if "product" in values:
            product = products.get(values["product"].strip().casefold())
            if product is None:
                problems["product"] = [f"No product has the SKU “{values['product']}”."]
        if organisation and product and not problems:
            pair = (organisation.external_ref.casefold(), product.pk)
            if first := seen.get(pair):
                problems["row"] = [f"Row {first} already gives this organisation and product."]
            seen.setdefault(pair, number)
        if problems:
            errors.append(
                {
                    "row": number,
                    "organisation": str(_get(data, "organisation")),
                    "product": str(_get(data, "product")),
                    "errors": {
                        field: [str(m) for m in messages] for field, messages in problems.items()
                    },
                }
            )
        else:
            resolved.append((organisation, product, values["quantity"]))
    return (resolved, []) if not errors else ([], errors)


def _get(data, name):
    return data.get(name, "") if isinstance(data, dict) else ""
