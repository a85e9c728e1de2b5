"""Usage rows as the API and the CSV import accept them, validated as a whole."""

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

MAX_ROWS = 20_000
MAX_QUANTITY = 10_000_000


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


def validate_usage(tenant, rows):
    """`(resolved, errors)`: `(organisation, product, quantity)` per row, or per-row errors.

    Raises `serializers.ValidationError` when `rows` is not a usable list at all.
    """
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
            organisation = organisations.get(values["organisation"].strip().casefold())
            if organisation is None:
                problems["organisation"] = [
                    f"No organisation has the external reference “{values['organisation']}”."
                ]
        if "product" in values:
            product = products.get(values["product"].strip().casefold())
            if product is None:
                problems["product"] = [f"No product has the SKU “{values['product']}”."]
        if organisation and product and not problems:
            if first := seen.get((organisation.pk, product.pk)):
                problems["row"] = [f"Row {first} already gives this organisation and product."]
            seen.setdefault((organisation.pk, product.pk), number)
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
