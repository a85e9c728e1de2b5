"""Usage from a CSV file: parsed and previewed with per-row errors, saved only when clean.

The uploaded file is kept on the server between preview and confirmation (`CsvUpload`, in
the database so every web process finds it), found by a random token that only the tenant
and user who uploaded it can use, until it expires (`CSV_IMPORT_KEEP_MINUTES`) or is saved.
So the file never travels back with the form (Django refuses form fields over 2.5 MB), and
what is saved is exactly what was previewed. Files up to `CSV_IMPORT_MAX_BYTES` (20 MB).
"""

import csv
import io
from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from rest_framework import serializers

from integrations.billing_sync.models import CsvUpload, UsageCount
from integrations.billing_sync.serializers import MAX_ROWS, validate_usage

COLUMNS = {
    "organisation": ("organisation", "organization", "external_ref", "external reference"),
    "product": ("product", "sku"),
    "quantity": ("quantity", "count", "qty"),
}
GONE = (
    "This upload has expired, was saved already or belongs to someone else: upload the file again."
)


def megabytes(size):
    """Binary megabytes as people read them: "20 MB" for 20 MiB, "3.1 MB"."""
    return f"{size / 2**20:.1f}".removesuffix(".0") + " MB"


class CsvImportForm(forms.Form):
    """A new file (`file`), or the token of the user's upload being confirmed (`upload`)."""

    file = forms.FileField(
        required=False,
        help_text="Columns organisation (external reference), product (SKU) and quantity, with "
        "a header line. UTF-8.",
    )
    upload = forms.CharField(required=False, widget=forms.HiddenInput, max_length=100)

    def __init__(self, *args, tenant, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.tenant, self.user = tenant, user
        self.fields[
            "file"
        ].help_text += f" At most {megabytes(settings.CSV_IMPORT_MAX_BYTES)} and {MAX_ROWS:,} rows."

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is not None:
            limit = settings.CSV_IMPORT_MAX_BYTES
            if upload.size > limit:
                raise forms.ValidationError(
                    f"The file is {megabytes(upload.size)}, larger than {megabytes(limit)} "
                    "(the import's limit): split it into smaller files."
                )
            try:
                cleaned["content"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError(
                    "The file is not UTF-8 text: save it as “CSV UTF-8” and try again."
                ) from None
            cleaned["stored"] = None
        elif cleaned.get("upload"):
            stored = CsvUpload.find(self.tenant, self.user, cleaned["upload"])
            if stored is None:
                raise forms.ValidationError(GONE, code="gone")
            cleaned["content"], cleaned["stored"] = stored.content, stored
        else:
            raise forms.ValidationError("Choose a CSV file.")
        return cleaned

    def gone(self):
        return any(error.code == "gone" for error in self.non_field_errors().as_data())


@dataclass
class PreviewRow:
    line: int
    organisation: str
    product: str
    quantity: str
    current: int | None = None  # the count it replaces; None: none yet, or `known` is False
    known: bool = False  # the organisation and product both exist
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
    if len(data) > MAX_ROWS:
        return Preview(
            [], [], f"The file has {len(data):,} rows: import at most {MAX_ROWS:,} at a time."
        )
    rows = [
        PreviewRow(line, item["organisation"], item["product"], item["quantity"])
        for line, item in data
    ]
    try:
        resolved, errors = validate_usage(tenant, [item for _, item in data])
    except serializers.ValidationError as error:
        return Preview(rows, [], str(error.detail[0]))
    for problem in errors:
        rows[problem["row"] - 1].errors = problem["errors"]
    _show_current_counts(tenant, rows)
    return Preview(rows, resolved)


def _show_current_counts(tenant, rows):
    """Each row's count now, also on rows with errors (fixing the file should not hide
    what it would change), matched as `validate_usage` matches (trimmed, any case)."""
    organisations = {
        ref.casefold(): pk for pk, ref in tenant.organisations.values_list("pk", "external_ref")
    }
    products = {sku.casefold(): pk for pk, sku in tenant.products.values_list("pk", "sku")}
    current = {
        (organisation, product): quantity
        for organisation, product, quantity in UsageCount.objects.filter(tenant=tenant).values_list(
            "organisation_id", "product_id", "quantity"
        )
    }
    for row in rows:
        pair = (
            organisations.get(str(row.organisation).strip().casefold()),
            products.get(str(row.product).strip().casefold()),
        )
        row.known = None not in pair
        row.current = current.get(pair) if row.known else None


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
