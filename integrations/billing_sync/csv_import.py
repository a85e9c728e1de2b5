"""CSV imports: usage counts, organisations and products, each parsed and previewed with
per-row errors, saved only when clean (all or nothing).

The uploaded file is kept on the server between preview and confirmation (`CsvUpload`, in
the database so every web process finds it), found by a random token that only the tenant
and user who uploaded it can use, until it expires (`CSV_IMPORT_KEEP_MINUTES`) or is saved.
So the file never travels back with the form (Django refuses form fields over 2.5 MB), and
what is saved is exactly what was previewed. Files up to `CSV_IMPORT_MAX_BYTES` (20 MB).
Each import (`USAGE`, `ORGANISATIONS`, `PRODUCTS`) names its columns, previews and saves;
the form, the kept upload and the admin view (`admin.CsvImportMixin`) are shared.
"""

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal

from django import forms
from django.conf import settings
from rest_framework import serializers

from integrations.billing_sync import onboarding
from integrations.billing_sync.models import (
    CsvUpload,
    OnboardingSubmission,
    UsageCount,
    UsageSubmission,
)
from integrations.billing_sync.serializers import MAX_ROWS, validate_usage
from portal.formats import format_money

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

    file = forms.FileField(required=False)
    upload = forms.CharField(required=False, widget=forms.HiddenInput, max_length=100)

    def __init__(self, *args, tenant, user, importer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tenant, self.user = tenant, user
        self.importer = importer or USAGE
        self.fields["file"].help_text = (
            f"{self.importer.help} UTF-8. "
            f"At most {megabytes(settings.CSV_IMPORT_MAX_BYTES)} and {MAX_ROWS:,} rows."
        )

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
            stored = CsvUpload.find(
                self.tenant, self.user, cleaned["upload"], kind=self.importer.kind
            )
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
    """Parse and validate usage CSV text against the tenant's catalogue; saves nothing."""
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


def parse(content, columns=COLUMNS, optional=()):
    """[(line number, {column: text})] for `columns` ({name: header aliases}); raises
    ValueError for bad files. Columns named in `optional` may be left out of the file."""
    reader = csv.reader(io.StringIO(content))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise ValueError("The file is empty.") from None
    names = [cell.strip().casefold() for cell in header]
    positions = {}
    for column, aliases in columns.items():
        found = [i for i, name in enumerate(names) if name in aliases]
        if found:
            positions[column] = found[0]
        elif column not in optional:
            required = [name for name in columns if name not in optional]
            listed = " and ".join(
                [", ".join(required[:-1]), required[-1]] if required[1:] else required
            )
            extra = f" (optional: {', '.join(optional)})" if optional else ""
            raise ValueError(
                f"The first line must name the columns {listed}{extra}; "
                f"“{column}” is missing (found: {', '.join(header) or 'nothing'})."
            )
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


# -- the imports ---------------------------------------------------------------------------


class UsageImport:
    kind = CsvUpload.Kind.USAGE
    title = "Import usage from CSV"
    help = (
        "Columns organisation (external reference), product (SKU) and quantity, with a header line."
    )
    template = "admin/billing_sync/usagecount/import.html"

    @staticmethod
    def preview(tenant, content):
        return preview(tenant, content)

    @staticmethod
    def save(tenant, preview, *, key, user):
        """Keyed by the upload: a second click replays the first, saving nothing twice."""
        submission, _ = UsageSubmission.objects.record(
            tenant, preview.resolved, source=UsageSubmission.Source.CSV, key=key, user=user
        )
        return f"Imported {submission.rows} rows: {submission.changed} count(s) changed."


#: CSV cells read as yes and no in an `active` column (anything else is an error).
YES = frozenset("yes y true 1 active".split())  # noqa: SIM905
NO = frozenset("no n false 0 inactive".split())  # noqa: SIM905


@dataclass
class OnboardingPreview:
    """The plan of an organisations or products file, and the rows it would send."""

    plan: onboarding.Plan
    sent: list = field(default_factory=list)
    columns: tuple = ()  # the optional columns the file has

    @property
    def problem(self):
        return self.plan.problem

    @property
    def rows(self):
        return self.plan.rows

    @property
    def errors(self):
        return [row for row in self.plan.rows if row.errors]

    @property
    def ok(self):
        return self.plan.ok and bool(self.plan.rows)

    @property
    def counts(self):
        return self.plan.counts()

    @property
    def halo_column(self):
        """The Halo column's label, when the file has one."""
        catalogue = self.plan.catalogue
        if catalogue.halo_field in self.columns:
            return f"Halo {catalogue.record_model.noun}"
        return ""

    def headers(self):
        model = self.plan.catalogue.model
        return [
            str(model._meta.get_field(name).verbose_name) for name in self.plan.catalogue.fields
        ]

    def lines(self):
        """Each row as the preview shows it: its cells as (was, now) when a value changes,
        (None, value) otherwise; the Halo record it maps to and what it was mapped to."""
        catalogue, tenant = self.plan.catalogue, self.plan.tenant
        for row in self.plan.rows:
            cells = []
            for name in catalogue.fields:
                if name in row.changes:
                    was, now = row.changes[name]
                elif name in row.values:
                    was, now = None, row.values[name]
                elif row.obj is not None:
                    was, now = None, getattr(row.obj, name)
                elif row.new:
                    was, now = None, catalogue.defaults.get(name, "")
                else:
                    was, now = None, (row.data or {}).get(name, "")
                cells.append((_shown(was, tenant), _shown(now, tenant)))
            halo = halo_was = ""
            if row.halo is not None:
                halo = _record(row.halo)
                if row.halo_before is not None and row.halo_before != row.halo:
                    halo_was = _record(row.halo_before)
            yield {
                "row": row,
                "key": row.key or (row.data or {}).get(catalogue.key, ""),
                "cells": cells,
                "halo": halo,
                "halo_was": halo_was,
                "halo_state": (
                    ""
                    if row.halo is None
                    else "changes"
                    if halo_was
                    else "new mapping"
                    if row.remaps
                    else "unchanged"
                ),
                "action": "" if row.errors else row.action.label,
            }


def _shown(value, tenant):
    if value is None or value == "":
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return format_money(value, tenant.currency, tenant.locale)
    return value


def _record(record):
    return f"{record.name} (#{record.halo_id})"


class OnboardingImport:
    """Organisations or products from CSV: the API's upsert (`onboarding`), row by row from
    the file's lines, blank cells leaving a field as it is."""

    def __init__(self, catalogue, columns, optional, help):
        self.catalogue, self.columns, self.optional, self.help = (
            catalogue,
            columns,
            optional,
            help,
        )
        self.kind = CsvUpload.Kind(catalogue.kind)
        self.title = f"Import {catalogue.noun_plural} from CSV"
        self.template = "admin/billing_sync/onboarding_import.html"

    def preview(self, tenant, content):
        empty = onboarding.Plan(self.catalogue, [], tenant=tenant)
        try:
            data = parse(content, self.columns, self.optional)
        except ValueError as error:
            return OnboardingPreview(onboarding.Plan(self.catalogue, [], str(error)))
        if len(data) > MAX_ROWS:
            empty.problem = (
                f"The file has {len(data):,} rows: import at most {MAX_ROWS:,} at a time."
            )
            return OnboardingPreview(empty)
        if not data:
            empty.problem = "The file has no rows below its header line."
            return OnboardingPreview(empty)
        sent = [self.row(cells) for _, cells in data]
        checked = self.catalogue.check(sent, lines=[line for line, _ in data])
        present = tuple(name for name in self.optional if name in data[0][1])
        return OnboardingPreview(self.catalogue.plan(tenant, checked), sent, present)

    @staticmethod
    def row(cells):
        """A file's line as the API's row: blank cells left out, yes/no read as booleans."""
        row = {}
        for name, text in cells.items():
            if not text:
                continue
            if name == "active":
                folded = text.casefold()
                text = True if folded in YES else False if folded in NO else text
            row[name] = text
        return row

    def save(self, tenant, preview, *, key, user):
        """Keyed by the upload: a second click replays the first, saving nothing twice.
        Raises `OnboardingRejected` if the catalogue changed since the preview."""
        submission, _ = OnboardingSubmission.objects.record(
            tenant,
            self.catalogue,
            preview.sent,
            source=OnboardingSubmission.Source.CSV,
            key=key,
            user=user,
        )
        return f"Imported {submission.rows:,} {self.catalogue.noun_plural}: {submission.summary()}."


USAGE = UsageImport()
ORGANISATIONS = OnboardingImport(
    onboarding.ORGANISATIONS,
    {
        "external_ref": ("external_ref", "external reference", "external ref", "reference", "ref"),
        "name": ("name", "organisation name", "organization name"),
        "active": ("active",),
        "halo_client": ("halo_client", "halo client", "halo client id", "halo_client_id"),
    },
    ("name", "active", "halo_client"),
    "Columns external_ref and name (needed for new organisations), optionally active (yes/no) "
    "and halo_client (Halo id or exact name), with a header line. Blank cells leave a field "
    "as it is.",
)
PRODUCTS = OnboardingImport(
    onboarding.PRODUCTS,
    {
        "sku": ("sku", "product", "product code"),
        "name": ("name", "product name"),
        "unit_price": ("unit_price", "unit price", "price"),
        "active": ("active",),
        "halo_item": ("halo_item", "halo item", "halo item id", "halo_item_id"),
    },
    ("name", "unit_price", "active", "halo_item"),
    "Columns sku and name (needed for new products), optionally unit_price, active (yes/no) "
    "and halo_item (Halo id or exact name), with a header line. Blank cells leave a field as "
    "it is.",
)
