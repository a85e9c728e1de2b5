"""Organisations and products in bulk, upserted by external reference / SKU, all or nothing.

One path for the API (`POST /api/v1/organisations`, `/products`) and the CSV import: rows
are first `check`ed on their own (types, lengths, a reference given twice), then `plan`ned
against the tenant's catalogue (create, update or unchanged; the Halo client or item a row
maps to, found by Halo id or exact name in the cache the pickers use), then the plan is
`apply`d in a few bulk queries. `OnboardingSubmission.objects.record` runs the three in one
transaction with an idempotency key; the CSV preview shows the plan without applying it.
"""

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import models
from rest_framework import serializers

from integrations.billing_sync.models import (
    HaloClientRecord,
    HaloItemRecord,
    OnboardingSubmission,
    OrganisationMapping,
    ProductMapping,
)
from integrations.billing_sync.serializers import (
    MAX_ROWS,
    OrganisationRowSerializer,
    ProductRowSerializer,
)
from portal.models import Organisation, Product


class Action(models.TextChoices):
    CREATED = "created", "Create"
    UPDATED = "updated", "Update"
    UNCHANGED = "unchanged", "Unchanged"


# -- check, plan, apply --------------------------------------------------------------------


@dataclass
class Row:
    """One row through check and plan: what was sent, what it will do, or why not."""

    number: int  # 1-based position in the request (the CSV import shows `line`)
    data: object
    catalogue_key: str
    line: int | None = None
    values: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    obj: models.Model | None = None  # the organisation or product it updates
    changes: dict = field(default_factory=dict)  # field -> (now, new)
    halo: object = None  # the Halo record it maps to (given and found)
    halo_before: object = None  # the record it was mapped to, when the mapping changes
    new: bool = False  # the row creates its organisation or product

    def error(self, name, message):
        self.errors.setdefault(name, []).append(message)

    @property
    def key(self):
        return self.values.get(self.catalogue_key, "")

    @property
    def action(self):
        if self.new:
            return Action.CREATED
        return Action.UPDATED if self.changes else Action.UNCHANGED

    @property
    def remaps(self):
        return self.halo is not None and self.halo != self.halo_before


@dataclass
class Checked:
    catalogue: "Catalogue"
    rows: list
    problem: str = ""

    @property
    def errors(self):
        return [self.catalogue.error_row(row) for row in self.rows if row.errors]

    @property
    def ok(self):
        return not self.problem and not any(row.errors for row in self.rows)

    def summary(self):
        if self.problem:
            return self.problem
        return f"{len(self.errors)} of {len(self.rows)} rows are invalid; nothing was saved."

    @property
    def fingerprint(self):
        """The rows' values, in any order: a key sent again must come with the same rows."""
        values = sorted(json.dumps(row.values, sort_keys=True, default=str) for row in self.rows)
        return hashlib.sha256(json.dumps(values).encode()).hexdigest()


@dataclass
class Plan(Checked):
    tenant: object = None

    def counts(self):
        """What the rows without errors do."""
        valid = [row for row in self.rows if not row.errors]
        actions = [row.action for row in valid]
        return {
            "added": actions.count(Action.CREATED),
            "updated": actions.count(Action.UPDATED),
            "unchanged": actions.count(Action.UNCHANGED),
            "mapped": sum(row.remaps for row in valid),
        }

    def apply(self):
        """Write the plan (all rows valid): answers each row's result, in order."""
        return self.catalogue.apply(self)


class Catalogue:
    """Organisations or products as onboarding sees them (`ORGANISATIONS`, `PRODUCTS`)."""

    kind: str
    model: type[models.Model]
    key: str  # the field rows are matched on (case-insensitive)
    noun = noun_plural = ""
    serializer: type[serializers.Serializer]
    defaults: dict  # fields a new row takes when the row does not say
    fields: tuple  # fields a row may change
    halo_field = ""  # the row's Halo column
    record_model: type[models.Model]
    mapping_model: type[models.Model]

    def check(self, rows, lines=None):
        """Each row on its own, and no key twice; nothing is read from the database."""
        if not isinstance(rows, list):
            return Checked(self, [], f"Send an object with a JSON list of {self.noun_plural}.")
        if not rows:
            return Checked(self, [], f"The list of {self.noun_plural} is empty.")
        if len(rows) > MAX_ROWS:
            return Checked(self, [], f"Send at most {MAX_ROWS:,} {self.noun_plural} at a time.")
        checked, seen = [], {}
        serializer = self.serializer()  # one for every row, as DRF's ListSerializer does
        for number, data in enumerate(rows, 1):
            row = Row(number, data, self.key, line=lines[number - 1] if lines else None)
            checked.append(row)
            if not isinstance(data, dict):
                row.error("row", f"Each {self.noun} is an object, not {type(data).__name__}.")
                continue
            try:
                row.values = dict(serializer.run_validation(data))
            except serializers.ValidationError as error:
                for name, messages in error.detail.items():
                    for message in messages:
                        row.error(name, str(message))
                continue
            folded = row.key.casefold()
            if first := seen.get(folded):
                where = f"line {checked[first - 1].line}" if lines else f"row {first}"
                row.error(self.key, f"{where.capitalize()} already gives “{row.key}”.")
            seen.setdefault(folded, number)
        return Checked(self, checked)

    def plan(self, tenant, checked, lock=False):
        """What each checked row would do to `tenant`'s catalogue; errors for the rows that
        cannot be applied. `lock`: lock the rows it reads (inside the writing transaction)."""
        existing = self.model.objects.filter(tenant=tenant)
        if lock:
            existing = existing.select_for_update(no_key=True)  # usage may still point at them
        by_key = {getattr(obj, self.key).casefold(): obj for obj in existing}
        # Fresh rows each time: a transaction retried after a race plans again.
        rows = [
            Row(row.number, row.data, row.catalogue_key, row.line, row.values, dict(row.errors))
            for row in checked.rows
        ]
        for row in rows:
            if row.errors:
                continue  # nothing usable to match
            row.obj = by_key.get(row.key.casefold())
            row.new = row.obj is None
            if row.obj is None:
                if "name" not in row.values:
                    row.error("name", f"Required for a new {self.noun}.")
                continue
            for name in self.fields:
                if name in row.values and getattr(row.obj, name) != row.values[name]:
                    row.changes[name] = (getattr(row.obj, name), row.values[name])
        if any(self.halo_field in row.values for row in rows):
            self._plan_mappings(tenant, rows)
        return Plan(self, rows, tenant=tenant)

    def _plan_mappings(self, tenant, rows):
        records = list(self.record_model.objects.filter(tenant=tenant))
        by_id = {str(record.halo_id): record for record in records}
        by_name = {}
        for record in records:
            by_name.setdefault(record.name.strip().casefold(), []).append(record)
        subject = self.mapping_model.SUBJECT_FIELD
        mapped = {
            getattr(mapping, f"{subject}_id"): mapping.record
            for mapping in self.mapping_model.objects.filter(tenant=tenant).select_related(
                self.mapping_model.RECORD_FIELD
            )
        }
        noun = self.record_model.noun
        for row in rows:
            given = row.values.get(self.halo_field)
            if given is None:  # also: the row failed its check
                continue
            found = [by_id[given]] if given in by_id else by_name.get(given.casefold(), [])
            if not found:
                row.error(
                    self.halo_field,
                    f"No Halo {noun} has the id or name “{given}”. If it is new in Halo, "
                    f"refresh the Halo lists (Halo {noun}s › Refresh from Halo) first.",
                )
            elif len(found) > 1:
                ids = ", ".join(f"#{record.halo_id}" for record in found)
                row.error(
                    self.halo_field,
                    f"{len(found)} Halo {noun}s are named “{given}” ({ids}): give the id.",
                )
            elif problem := found[0].problem:
                row.error(self.halo_field, problem)
            else:
                row.halo = found[0]
                row.halo_before = mapped.get(row.obj.pk) if row.obj else None
        self._check_one_subject_per_record(rows, mapped)

    def _check_one_subject_per_record(self, rows, mapped):
        """Only organisations: two organisations on one Halo client would overwrite each
        other's licences. Checked on the mappings as they would be after the import."""

    def apply(self, plan):
        new = [
            self.model(tenant=plan.tenant, **(self.defaults | self._fields(row.values)))
            for row in plan.rows
            if row.obj is None
        ]
        self.model.objects.bulk_create(new, batch_size=500)
        created = iter(new)
        changed = []
        for row in plan.rows:
            if row.obj is None:
                row.obj = next(created)
            elif row.changes:
                for name, (_, value) in row.changes.items():
                    setattr(row.obj, name, value)
                changed.append(row.obj)
        self.model.objects.bulk_update(changed, list(self.fields), batch_size=500)
        self._apply_mappings(plan)
        return [self.result(row) for row in plan.rows]

    def _fields(self, values):
        return {name: values[name] for name in (self.key, *self.fields) if name in values}

    def _apply_mappings(self, plan):
        """Mappings that change are replaced (keeping their removal policy): swapping two
        organisations' clients must not trip the one-organisation-per-client constraint."""
        remaps = [row for row in plan.rows if row.remaps]
        if not remaps:
            return
        subject, record = self.mapping_model.SUBJECT_FIELD, self.mapping_model.RECORD_FIELD
        old = self.mapping_model.objects.filter(
            tenant=plan.tenant,
            **{f"{subject}__in": [row.obj.pk for row in remaps if row.halo_before is not None]},
        )
        policies = dict(old.values_list(f"{subject}_id", "removal_policy"))
        if policies:
            old.delete()
        self.mapping_model.objects.bulk_create(
            [
                self.mapping_model(
                    tenant=plan.tenant,
                    matched_by="onboarding import",
                    removal_policy=policies.get(row.obj.pk, ""),
                    **{subject: row.obj, record: row.halo},
                )
                for row in remaps
            ],
            batch_size=500,
        )

    def result(self, row):
        halo = row.halo
        return {
            "id": row.obj.pk,
            **{name: self._json(getattr(row.obj, name)) for name in (self.key, *self.fields)},
            "action": row.action.value,
            self.halo_field: {"id": halo.halo_id, "name": halo.name} if halo else None,
        }

    @staticmethod
    def _json(value):
        return str(value) if isinstance(value, Decimal) else value

    def error_row(self, row):
        data = row.data if isinstance(row.data, dict) else {}
        given = data.get(self.key, "")
        return {
            "row": row.line or row.number,
            self.key: given if isinstance(given, str) else json.dumps(given),
            "errors": row.errors,
        }


class OrganisationCatalogue(Catalogue):
    kind = OnboardingSubmission.Kind.ORGANISATIONS
    model = Organisation
    key = "external_ref"
    noun, noun_plural = "organisation", "organisations"
    serializer = OrganisationRowSerializer
    defaults = {"active": True}
    fields = ("name", "active")
    halo_field = "halo_client"
    record_model = HaloClientRecord
    mapping_model = OrganisationMapping

    def _check_one_subject_per_record(self, rows, mapped):
        after = dict(mapped)  # organisation (pk, or the row of a new one) -> Halo client
        for row in rows:
            if row.halo is not None:
                after[row.obj.pk if row.obj else ("row", row.number)] = row.halo
        holders = {}
        for subject, record in after.items():
            holders.setdefault(record.pk, []).append(subject)
        names = {row.obj.pk: row.obj for row in rows if row.obj}
        for row in rows:
            if row.halo is None or len(holders[row.halo.pk]) < 2:
                continue
            me = row.obj.pk if row.obj else ("row", row.number)
            others = [s for s in holders[row.halo.pk] if s != me]
            described = []
            for other in others:
                if isinstance(other, tuple):
                    other_row = rows[other[1] - 1]
                    described.append(f"“{other_row.key}” ({self._where(other_row)})")
                else:
                    org = names.get(other) or Organisation.objects.get(pk=other)
                    described.append(f"“{org.external_ref}”")
            row.error(
                self.halo_field,
                f"Halo client “{row.halo.name}” (#{row.halo.halo_id}) would also be mapped to "
                f"{', '.join(described)}: two organisations on one client would overwrite "
                "each other's licences.",
            )

    @staticmethod
    def _where(row):
        return f"line {row.line}" if row.line else f"row {row.number}"


class ProductCatalogue(Catalogue):
    kind = OnboardingSubmission.Kind.PRODUCTS
    model = Product
    key = "sku"
    noun, noun_plural = "product", "products"
    serializer = ProductRowSerializer
    defaults = {"active": True, "unit_price": Decimal("0.0000")}
    fields = ("name", "unit_price", "active")
    halo_field = "halo_item"
    record_model = HaloItemRecord
    mapping_model = ProductMapping


ORGANISATIONS = OrganisationCatalogue()
PRODUCTS = ProductCatalogue()
