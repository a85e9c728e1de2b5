"""Usage from a CSV file: parsed and previewed with per-row errors, saved only when clean.

The file travels back with the confirmation (a hidden field), so nothing is kept on the
server between preview and save, and the saved data is exactly what was previewed.
"""

import csv
import io
from dataclasses import dataclass, field

from django import forms
from rest_framework import serializers

from integrations.billing_sync.models import UsageCount
from integrations.billing_sync.serializers import validate_usage

MAX_BYTES = 5 * 1024 * 1024
COLUMNS = {
    "organisation": ("organisation", "organization", "external_ref", "external reference"),
    "product": ("product", "sku"),
    "quantity": ("quantity", "count", "qty"),
}


class CsvImportForm(forms.Form):
    file = forms.FileField(
        required=False,
        help_text="Columns organisation (external reference), product (SKU) and quantity, with "
        "a header line. UTF-8.",
    )
    content = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is not None:
            if upload.size > MAX_BYTES:
                raise forms.ValidationError("The file is larger than 5 MB: split it.")
            try:
                cleaned["content"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError(
                    "The file is not UTF-8 text: save it as “CSV UTF-8” and try again."
                ) from None
        if not cleaned.get("content"):
            raise forms.ValidationError("Choose a CSV file.")
        return cleaned


@dataclass
class PreviewRow:
    line: int
    organisation: str
    product: str
    quantity: str
    current: int | None = None
    errors: dict = field(default_factory=dict)

    @property
    def changes(self):
        return not self.errors and str(self.current) != str(self.quantity)


@dataclass
class Preview:
    rows: list
    resolved: list
    problem: str = ""

    @property
    def errors(self):
        return [row for row in self.rows if row.errors]

    @property
    def ok(self):
        return not self.problem and not self.errors and bool(self.resolved)


def preview(tenant, content):
    """Parse and validate the CSV text against the tenant's catalogue; saves nothing."""
    try:
        data = parse(content)
    except ValueError as error:
        return Preview([], [], str(error))
    rows = [
        PreviewRow(line, item["organisation"], item["product"], item["quantity"])
        for line, item in data
    ]
    try:
        resolved, errors = validate_usage(tenant, [item for _, item in data])
    except serializers.ValidationError as error:
        return Preview(rows, [], str(error.detail[0]))
    for error in errors:
        rows[error["row"] - 1].errors = error["errors"]
    current = {
        (c.organisation_id, c.product_id): c.quantity
        for c in UsageCount.objects.filter(tenant=tenant)
    }
    for row, (organisation, product, _) in zip(rows, resolved, strict=False):
        row.current = current.get((organisation.pk, product.pk))
    return Preview(rows, resolved)


def parse(content):
    """[(line number, {organisation, product, quantity})]; raises ValueError for bad files."""
    reader = csv.reader(io.StringIO(content))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise ValueError("The file is empty.") from None
    names = [cell.strip().casefold() for cell in header]
    positions = {}
    for column, aliases in COLUMNS.items():
        found = [i for i, name in enumerate(names) if name in aliases]
        if not found:
            raise ValueError(
                f"The first line must name the columns organisation, product and quantity; "
                f"“{column}” is missing (found: {', '.join(header) or 'nothing'})."
            )
        positions[column] = found[0]
    rows = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            rows.append(
                (
                    reader.line_num,
                    {
                        column: cells[i].strip() if i < len(cells) else ""
                        for column, i in positions.items()
                    },
                )
            )
    except csv.Error as error:
        raise ValueError(f"Line {reader.line_num} is not valid CSV: {error}.") from None
    return rows
