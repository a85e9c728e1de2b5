"""Billing sync: usage counts, their mapping to Halo, and what every sync run did.

Usage arrives through the API, CSV import or the admin and lands in `UsageCount` (current
state) with a `UsageChange` per change (history). Mappings tie organisations to Halo clients
and products to Halo items, picked from a cache of Halo's records. A `BillingSyncRun` plans every
mapped pair against the licences in Halo (`engine`), writes the difference (`runner`) and
keeps one `SyncResult` per pair.
"""

import hashlib
import json
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce, TruncMonth
from django.utils import timezone

from integrations.halo.records import custom_field_text
from portal.crypto import token_digest
from portal.models import ApiToken, OnePerTenant, Organisation, Product, Tenant
from portal.runs import ClaimLost, TenantRun, active_run_constraint


class RemovalPolicy(models.TextChoices):
    ZERO = "zero", "Set the licence count to 0"
    DEACTIVATE = "deactivate", "Deactivate the licence"
    LEAVE = "leave", "Leave the licence as it is"


class BillingSyncSettings(OnePerTenant):
    """A tenant's billing sync choices (created with defaults on first use)."""

    class Schedule(models.TextChoices):
        OFF = "off", "Off (Sync now only)"
        DAILY = "daily", "Daily"
        MONTHLY = "monthly", "Monthly"

    LAST_DAY = 0
    DAY_CHOICES = [(day, str(day)) for day in range(1, 29)] + [(LAST_DAY, "Last day")]

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="billing_sync_settings"
    )
    client_match_field = models.CharField(
        "Halo client field for matching",
        max_length=100,
        default="CFVendorCustomerId",
        help_text="The Halo client custom field holding the organisation's external reference; "
        "mapping suggestions match on it first, then on the name.",
    )
    removal_policy = models.CharField(
        max_length=10,
        choices=RemovalPolicy.choices,
        default=RemovalPolicy.ZERO,
        help_text="What happens to a licence when its count drops to 0 or its mapping is "
        "deleted. A mapping may override it.",
    )
    approval_required = models.BooleanField(
        default=False,
        help_text="Scheduled runs stop at a preview and write nothing until staff approve it.",
    )
    hold_percent = models.PositiveIntegerField(
        "hold changes above (%)",
        null=True,
        blank=True,
        help_text="Hold a pair for approval when its count moves by more than this percentage "
        "and by more than the number of units below (leave either blank to ignore it).",
    )
    hold_units = models.PositiveIntegerField("hold changes above (units)", null=True, blank=True)
    schedule = models.CharField(max_length=10, choices=Schedule.choices, default=Schedule.OFF)
    schedule_hour = models.PositiveSmallIntegerField(
        "at hour",
        default=2,
        validators=[MaxValueValidator(23)],
        help_text="0-23, in the tenant's time zone.",
    )
    schedule_day = models.PositiveSmallIntegerField(
        "on day", default=1, choices=DAY_CHOICES, help_text="Monthly schedules only."
    )
    email_owners = models.BooleanField(
        default=True,
        help_text="Email the tenant's owners when a run has failed pairs or pairs held for "
        "approval.",
    )
    halo_refreshed = models.DateTimeField(
        "Halo lists refreshed", null=True, blank=True, editable=False
    )
    usage_creates_organisations = models.BooleanField(
        "usage API creates unknown organisations",
        default=False,
        help_text="A row of POST /api/v1/usage naming an external reference the portal does "
        "not know creates that organisation (named by the row's organisation_name, else its "
        "reference) instead of refusing the request; the answer lists the organisations it "
        "created. Off: such rows are errors and nothing is saved. The CSV import never creates "
        "organisations from usage.",
    )

    class Meta:
        verbose_name = "billing sync settings"
        verbose_name_plural = "billing sync settings"

    def __str__(self):
        return f"Billing sync settings of {self.tenant}"


# -- Halo records the mappings point at ---------------------------------------------------


class HaloRecordQuerySet(models.QuerySet):
    def usable(self):
        return self.filter(inactive=False, missing=False)


class HaloRecord(models.Model):
    """A cached Halo client or item: the admin's pickers search these, mappings point here.

    A record that Halo deactivated or deleted stays (marked) so its mappings can say why
    they are broken.
    """

    noun = ""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    halo_id = models.PositiveBigIntegerField("Halo id")
    name = models.CharField(max_length=300)
    inactive = models.BooleanField(default=False)
    missing = models.BooleanField(
        "gone from Halo", default=False, help_text="Not in Halo at the last refresh."
    )
    changed = models.DateTimeField(default=timezone.now, editable=False)

    objects = HaloRecordQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["missing", "inactive", "name"]

    def __str__(self):
        state = " – gone from Halo" if self.missing else " – inactive" if self.inactive else ""
        return f"{self.name} (#{self.halo_id}){state}"

    @property
    def problem(self):
        """Why pairs using this record cannot sync, or ''."""
        where = f"Halo {self.noun} “{self.name}” (#{self.halo_id})"
        if self.missing:
            return f"{where} no longer exists in Halo: map to another {self.noun}."
        if self.inactive:
            return (
                f"{where} is inactive in Halo: reactivate it in Halo, or map to an active "
                f"{self.noun}."
            )
        return ""

    @staticmethod
    def fields_from_halo(row):
        raise NotImplementedError

    @classmethod
    def refresh(cls, tenant, rows):
        """Bring the cache in line with Halo's full list (inactive rows included)."""
        now = timezone.now()
        known = {record.halo_id: record for record in cls.objects.filter(tenant=tenant)}
        seen, new, changed = set(), [], []
        for row in rows:
            halo_id = int(row["id"])
            seen.add(halo_id)
            fields = {**cls.fields_from_halo(row), "missing": False}
            record = known.get(halo_id)
            if record is None:
                new.append(cls(tenant=tenant, halo_id=halo_id, changed=now, **fields))
            elif any(getattr(record, name) != value for name, value in fields.items()):
                for name, value in fields.items():
                    setattr(record, name, value)
                record.changed = now
                changed.append(record)
        for record in known.values():
            if record.halo_id not in seen and not record.missing:
                record.missing, record.changed = True, now
                changed.append(record)
        cls.objects.bulk_create(new, batch_size=500)
        update_fields = [*cls.fields_from_halo({}).keys(), "missing", "changed"]
        cls.objects.bulk_update(changed, update_fields, batch_size=500)
        return {"seen": len(seen), "new": len(new), "changed": len(changed)}


class HaloClientRecord(HaloRecord):
    """A Halo client in billing sync's picker cache.

    Deliberately not `billing.Customer`, though both mirror Halo clients (and answer
    `custom_field` alike): this cache is rebuilt from Halo's whole list (inactive clients
    too) on every refresh and keeps clients gone from Halo as tombstones so mappings can say
    why they broke, for tenants that may not use invoice sync at all; `Customer` is invoice
    sync's record of whom invoices are addressed to (billing contact, agreements), moved
    forward by a change cursor and referenced by invoices and payments. One table would tie
    billing sync to invoice sync's schedule and let a picker refresh rewrite invoicing
    contacts."""

    noun = "client"

    custom_fields = models.JSONField(default=dict, blank=True)

    class Meta(HaloRecord.Meta):
        verbose_name = "Halo client"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "halo_id"], name="haloclientrecord_unique")
        ]

    @staticmethod
    def fields_from_halo(row):
        return {
            "name": str(row.get("name") or "")[:300],
            "inactive": bool(row.get("inactive")),
            "custom_fields": {
                field["name"]: field.get("value")
                for field in row.get("customfields") or []
                if isinstance(field, dict) and field.get("name")
            },
        }

    def custom_field(self, name):
        """A Halo custom field by name: trimmed text, '' when unset (as `Customer`'s)."""
        return custom_field_text(self.custom_fields.get(name))


class HaloItemRecord(HaloRecord):
    noun = "item"

    sku = models.CharField(
        "SKU", max_length=100, blank=True, help_text="Halo's supplier part code."
    )

    class Meta(HaloRecord.Meta):
        verbose_name = "Halo item"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "halo_id"], name="haloitemrecord_unique")
        ]

    @staticmethod
    def fields_from_halo(row):
        sku = row.get("supplier_part_code") or row.get("internalreference") or ""
        return {
            "name": str(row.get("name") or "")[:300],
            "inactive": bool(row.get("inactive")),
            "sku": str(sku)[:100],
        }


# -- Mappings -----------------------------------------------------------------------------


# Trailing words dropped before comparing names ("Contoso Ltd" matches "Contoso").
LEGAL_SUFFIXES = frozenset(
    "ltd limited inc incorporated llc plc gmbh co corp corporation company pty bv ag sa".split()  # noqa: SIM905
)


def normalise_name(name):
    """'Blue  Yonder AIRLINES Ltd.' and 'blue yonder airlines' compare equal."""
    text = unicodedata.normalize("NFKC", name or "").casefold()
    words = "".join(c if c.isalnum() else " " for c in text).split()
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)


@dataclass(frozen=True)
class Suggestion:
    subject: models.Model  # the organisation or product
    record: HaloRecord
    reason: str


def suggest(subjects, records, matchers):
    """One suggestion per subject: the first matcher that finds exactly one free record.

    `matchers` are `(reason, subject_key, record_key)`; a record is suggested once at most.
    """
    indexes = []
    for reason, subject_key, record_key in matchers:
        index = {}
        for record in records:
            if key := record_key(record):
                index.setdefault(key, []).append(record)
        indexes.append((reason, subject_key, index))
    taken, suggestions = set(), []
    for subject in subjects:
        for reason, subject_key, index in indexes:
            candidates = [r for r in index.get(subject_key(subject), []) if r.pk not in taken]
            if len(candidates) == 1:
                taken.add(candidates[0].pk)
                suggestions.append(Suggestion(subject, candidates[0], reason(subject)))
                break
    return suggestions


class Mapping(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    removal_policy = models.CharField(
        max_length=10,
        choices=RemovalPolicy.choices,
        blank=True,
        help_text="Blank: the tenant's removal policy.",
    )
    matched_by = models.CharField(max_length=100, default="chosen by hand", editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        abstract = True

    @property
    def record(self):
        return getattr(self, self.RECORD_FIELD)

    @property
    def problem(self):
        """Why the mapping is broken (its Halo record drifted), or ''."""
        return self.record.problem


class OrganisationMappingManager(models.Manager):
    def suggestions(self, tenant):
        field = BillingSyncSettings.for_tenant(tenant).client_match_field
        mapped = self.filter(tenant=tenant)
        subjects = tenant.organisations.filter(active=True).exclude(
            pk__in=mapped.values("organisation")
        )
        records = HaloClientRecord.objects.usable().filter(tenant=tenant)
        records = list(records.exclude(pk__in=mapped.values("halo_client")))
        return suggest(
            subjects,
            records,
            [
                (
                    lambda org: f"{field} = {org.external_ref}",
                    lambda org: org.external_ref.strip().casefold(),
                    lambda client: client.custom_field(field).casefold(),
                ),
                (
                    lambda org: "same name",
                    lambda org: normalise_name(org.name),
                    lambda client: normalise_name(client.name),
                ),
            ],
        )


class OrganisationMapping(Mapping):
    """This organisation's licences go to this Halo client."""

    SUBJECT_FIELD, RECORD_FIELD = "organisation", "halo_client"

    organisation = models.OneToOneField(
        Organisation, on_delete=models.CASCADE, related_name="halo_mapping"
    )
    halo_client = models.ForeignKey(
        HaloClientRecord,
        on_delete=models.PROTECT,
        related_name="mappings",
        help_text="Type to search Halo's clients; use “Refresh from Halo” if one is missing.",
    )

    objects = OrganisationMappingManager()

    class Meta:
        ordering = ["organisation__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["halo_client"],
                name="organisationmapping_one_org_per_client",
                violation_error_message="Another organisation is already mapped to this Halo "
                "client: two organisations would overwrite each other's licences.",
            )
        ]

    def __str__(self):
        return f"{self.organisation.name} → {self.halo_client.name}"


class ProductMappingManager(models.Manager):
    def suggestions(self, tenant):
        mapped = self.filter(tenant=tenant)
        subjects = tenant.products.filter(active=True).exclude(pk__in=mapped.values("product"))
        records = list(HaloItemRecord.objects.usable().filter(tenant=tenant))
        return suggest(
            subjects,
            records,
            [
                (
                    lambda product: f"SKU {product.sku}",
                    lambda product: product.sku.strip().casefold(),
                    lambda item: item.sku.strip().casefold(),
                ),
                (
                    lambda product: "same name",
                    lambda product: normalise_name(product.name),
                    lambda item: normalise_name(item.name),
                ),
            ],
        )


class ProductMapping(Mapping):
    """This product is billed in Halo as this item (the licence takes the item's name)."""

    SUBJECT_FIELD, RECORD_FIELD = "product", "halo_item"

    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="halo_mapping")
    halo_item = models.ForeignKey(
        HaloItemRecord,
        on_delete=models.PROTECT,
        related_name="mappings",
        help_text="Type to search Halo's items; use “Refresh from Halo” if one is missing.",
    )

    objects = ProductMappingManager()

    class Meta:
        ordering = ["product__name"]

    def __str__(self):
        return f"{self.product.sku} → {self.halo_item.name}"


# -- Usage --------------------------------------------------------------------------------


class UsageCountQuerySet(models.QuerySet):
    def with_latest_result(self):
        """Each count with what the latest real (not preview) run did to its pair:
        `latest_result_id`, `latest_outcome`, and `halo_licence_id` (the latest licence id
        any result of the pair found, since a failed row may not know it). Subqueries on the
        pair's index, so a page of 5,000 pairs, filtered or not, costs one query."""
        results = SyncResult.objects.of_pair(OuterRef("organisation_id"), OuterRef("product_id"))
        return self.annotate(
            latest_result_id=Subquery(results.values("pk")[:1]),
            latest_outcome=Subquery(results.values("outcome")[:1]),
            halo_licence_id=Subquery(results.exclude(licence_id=None).values("licence_id")[:1]),
        )


class UsageCount(models.Model):
    """How many of a product an organisation uses now; the sync pushes this number."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="usage_counts"
    )
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="usage_counts")
    quantity = models.PositiveIntegerField(default=0)
    updated = models.DateTimeField(default=timezone.now)

    objects = UsageCountQuerySet.as_manager()

    class Meta:
        ordering = ["organisation__name", "product__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "product"],
                name="usagecount_unique_pair",
                violation_error_message="This organisation already has a count for this "
                "product: change that one.",
            )
        ]

    def __str__(self):
        return f"{self.organisation.name} · {self.product.sku}: {self.quantity}"


class IdempotencyConflict(Exception):
    """The idempotency key was used before for different usage."""


@dataclass(frozen=True)
class NewOrganisation:
    """An organisation a usage row names that does not exist yet, created with the usage
    when the tenant allows it (`BillingSyncSettings.usage_creates_organisations`)."""

    external_ref: str
    name: str


class UsageSubmissionManager(models.Manager):
    def record(self, tenant, rows, *, source, key="", token=None, user=None):
        """Apply `rows` of (organisation, product, quantity) as one submission, all or none.

        Answers `(submission, replayed)`. A key seen before answers that submission
        unchanged (a retried request changes nothing twice); reusing a key for other usage
        raises `IdempotencyConflict`. An organisation given as a `NewOrganisation` is
        created first, in the same transaction (or found, when another request made it).
        """
        for attempt in range(3):
            try:
                with transaction.atomic():
                    applied, created = self._create_organisations(tenant, rows)
                    fingerprint = hashlib.sha256(
                        json.dumps(sorted((o.pk, p.pk, q) for o, p, q in applied)).encode()
                    ).hexdigest()
                    if key and (previous := self._previous(tenant, key, fingerprint)):
                        return previous, True
                    submission = self.create(
                        tenant=tenant,
                        source=source,
                        idempotency_key=key,
                        fingerprint=fingerprint,
                        token=token,
                        user=user,
                        rows=len(applied),
                        created_organisations=[o.external_ref for o in created],
                    )
                    submission.changed = submission._apply(applied)
                    submission.save(update_fields=["changed"])
                    return submission, False
            except IntegrityError:
                # A concurrent submission committed this key, or a pair's first count,
                # first: start again, now seeing it.
                if attempt == 2:
                    raise

    @staticmethod
    def _create_organisations(tenant, rows):
        """`rows` with each `NewOrganisation` made real, and the organisations created."""
        pending = {
            o.external_ref.casefold(): o for o, _, _ in rows if isinstance(o, NewOrganisation)
        }
        if not pending:
            return rows, []
        found = {
            org.external_ref.casefold(): org
            for org in tenant.organisations.all()
            if org.external_ref.casefold() in pending
        }
        created = [
            Organisation(tenant=tenant, external_ref=new.external_ref, name=new.name)
            for ref, new in pending.items()
            if ref not in found
        ]
        Organisation.objects.bulk_create(created, batch_size=500)
        found.update((org.external_ref.casefold(), org) for org in created)
        real = [
            (found[o.external_ref.casefold()] if isinstance(o, NewOrganisation) else o, p, q)
            for o, p, q in rows
        ]
        return real, created

    def _previous(self, tenant, key, fingerprint):
        previous = self.filter(tenant=tenant, idempotency_key=key).first()
        if previous is not None and previous.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"Idempotency key “{key}” was already used on "
                f"{previous.created:%Y-%m-%d %H:%M} UTC for different usage; send a new key."
            )
        return previous


class UsageSubmission(models.Model):
    """One API request, CSV import or admin edit: who sent which counts, when."""

    class Source(models.TextChoices):
        API = "api", "API"
        CSV = "csv", "CSV import"
        ADMIN = "admin", "Admin"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=10, choices=Source.choices)
    idempotency_key = models.CharField(max_length=100, blank=True)
    fingerprint = models.CharField(max_length=64, editable=False)
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created = models.DateTimeField(default=timezone.now)
    rows = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    created_organisations = models.JSONField(
        default=list,
        blank=True,
        editable=False,
        help_text="External references of the organisations this submission created.",
    )

    objects = UsageSubmissionManager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="usagesubmission_unique_key",
            )
        ]

    def __str__(self):
        return f"{self.get_source_display()} {self.created:%Y-%m-%d %H:%M} by {self.sender}"

    @property
    def sender(self):
        if self.token_id:
            return f"token {self.token}"
        return str(self.user) if self.user_id else "the portal"

    def _apply(self, rows):
        """Set each pair's count; records a change per count that moved. Returns how many."""
        counts = {
            (count.organisation_id, count.product_id): count
            for count in UsageCount.objects.select_for_update().filter(
                tenant=self.tenant,
                organisation__in={o.pk for o, _, _ in rows},
                product__in={p.pk for _, p, _ in rows},
            )
        }
        new, moved, changes = [], [], []
        for organisation, product, quantity in rows:
            count = counts.get((organisation.pk, product.pk))
            if count is not None and count.quantity == quantity:
                continue
            changes.append(
                UsageChange(
                    submission=self,
                    organisation=organisation,
                    product=product,
                    previous=None if count is None else count.quantity,
                    new=quantity,
                )
            )
            if count is None:
                count = UsageCount(tenant=self.tenant, organisation=organisation, product=product)
                new.append(count)
            else:
                moved.append(count)
            count.quantity, count.updated = quantity, self.created
        UsageCount.objects.bulk_create(new, batch_size=500)
        UsageCount.objects.bulk_update(moved, ["quantity", "updated"], batch_size=500)
        UsageChange.objects.bulk_create(changes, batch_size=500)
        return len(changes)


class UsageChangeQuerySet(models.QuerySet):
    def of_tenant(self, tenant):
        return self.filter(submission__tenant=tenant)

    def net_by_month(self, since, tz, *fields):
        """How far counts moved from `since`, by month (time zone `tz`) and `fields` (e.g.
        "product_id"), in one query: rows of `month`, the fields and `moved` (the sum of
        new - previous, a new pair counting from 0). With the counts now, this gives every
        month's counts without reading each change."""
        return (
            self.filter(submission__created__gte=since)
            .annotate(month=TruncMonth("submission__created", tzinfo=tz))
            .order_by()
            .values("month", *fields)
            .annotate(moved=Sum(F("new") - Coalesce(F("previous"), 0)))
        )


class UsageChange(models.Model):
    """Append-only history: a pair's count moved from `previous` to `new`."""

    TENANT_PATH = "submission__tenant"

    submission = models.ForeignKey(
        UsageSubmission, on_delete=models.CASCADE, related_name="changes"
    )
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    previous = models.PositiveIntegerField(null=True, blank=True)
    new = models.PositiveIntegerField()

    objects = UsageChangeQuerySet.as_manager()

    class Meta:
        ordering = ["-pk"]

    def __str__(self):
        previous = "–" if self.previous is None else self.previous
        return f"{self.organisation.name} · {self.product.sku}: {previous} → {self.new}"


# -- Onboarding: organisations and products in bulk --------------------------------------


class OnboardingRejected(Exception):
    """Rows of an onboarding request that cannot be applied: nothing was."""

    def __init__(self, detail, rows=()):
        super().__init__(detail)
        self.detail, self.rows = detail, list(rows)


class OnboardingSubmissionManager(models.Manager):
    def record(self, tenant, catalogue, rows, *, source, key="", token=None, user=None):
        """Upsert `rows` (as sent) into `catalogue` (`onboarding.ORGANISATIONS` or
        `PRODUCTS`) as one submission, all or nothing.

        Answers `(submission, replayed)`; raises `OnboardingRejected` listing every bad row,
        and `IdempotencyConflict` for a key used before with other rows. A key seen before
        answers that submission unchanged, before the rows are matched again (so a retry is
        answered the same even if the catalogue moved on meanwhile).
        """
        checked = catalogue.check(rows)
        if not checked.ok:
            raise OnboardingRejected(checked.summary(), checked.errors)
        for attempt in range(3):
            try:
                with transaction.atomic():
                    if key and (previous := self._previous(tenant, catalogue, key, checked)):
                        return previous, True
                    plan = catalogue.plan(tenant, checked, lock=True)
                    if not plan.ok:
                        raise OnboardingRejected(plan.summary(), plan.errors)
                    submission = self.create(
                        tenant=tenant,
                        kind=catalogue.kind,
                        source=source,
                        idempotency_key=key,
                        fingerprint=checked.fingerprint,
                        token=token,
                        user=user,
                        rows=len(plan.rows),
                        **plan.counts(),
                    )
                    submission.results = plan.apply()
                    submission.save(update_fields=["results"])
                    return submission, False
            except IntegrityError:
                # A concurrent request committed this key, or one of these references,
                # first: start again, now seeing it.
                if attempt == 2:
                    raise

    def _previous(self, tenant, catalogue, key, checked):
        previous = self.filter(tenant=tenant, kind=catalogue.kind, idempotency_key=key).first()
        if previous is not None and previous.fingerprint != checked.fingerprint:
            raise IdempotencyConflict(
                f"Idempotency key “{key}” was already used on "
                f"{previous.created:%Y-%m-%d %H:%M} UTC for different {catalogue.noun_plural}; "
                "send a new key."
            )
        return previous


class OnboardingSubmission(models.Model):
    """One API request or CSV import of organisations or products: who sent it, when, and
    what each row did (`results`, also the answer a retried request gets again)."""

    class Kind(models.TextChoices):
        ORGANISATIONS = "organisations", "Organisations"
        PRODUCTS = "products", "Products"

    Source = UsageSubmission.Source

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    source = models.CharField(max_length=10, choices=Source.choices)
    idempotency_key = models.CharField(max_length=100, blank=True)
    fingerprint = models.CharField(max_length=64, editable=False)
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created = models.DateTimeField(default=timezone.now)
    rows = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField("created", default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    mapped = models.PositiveIntegerField(
        "mapped to Halo", default=0, help_text="Rows that set or changed a Halo mapping."
    )
    results = models.JSONField(default=list, blank=True, editable=False)

    objects = OnboardingSubmissionManager()

    class Meta:
        ordering = ["-created"]
        verbose_name = "onboarding import"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "kind", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="onboardingsubmission_unique_key",
            )
        ]

    def __str__(self):
        return (
            f"{self.get_kind_display()} from {self.get_source_display()} "
            f"{self.created:%Y-%m-%d %H:%M} by {self.sender}"
        )

    sender = UsageSubmission.sender

    def summary(self):
        """'3 created · 1 updated · 996 unchanged · 2 mapped to Halo'."""
        parts = [
            (self.added, "created"),
            (self.updated, "updated"),
            (self.unchanged, "unchanged"),
            (self.mapped, "mapped to Halo"),
        ]
        return " · ".join(f"{n:,} {label}" for n, label in parts if n) or "nothing"


# -- Sync runs ----------------------------------------------------------------------------


class BillingSyncRun(TenantRun):
    """One billing sync (or preview) of a tenant: its progress, counts and Halo requests,
    with a `SyncResult` per pair. Claimed and kept alive as every run is (`portal.runs`)."""

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Sync now"
        PREVIEW = "preview", "Preview"
        SCHEDULE = "schedule", "Schedule"
        COMMAND = "command", "Command line"
        APPROVAL = "approval", "Approval"
        RETRY = "retry", "Retry failed pairs"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="billing_sync_runs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    dry_run = models.BooleanField(default=False, help_text="Computed the rows, wrote nothing.")
    approves = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="approval_runs",
        help_text="The run whose rows staff approved.",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created = models.DateTimeField(default=timezone.now)
    phase = models.CharField(max_length=200, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    halo_requests = models.PositiveIntegerField(default=0)
    halo_calls = models.JSONField("Halo requests by endpoint", default=dict, blank=True)

    class Meta:
        db_table = "billing_sync_syncrun"
        verbose_name = "billing sync run"
        ordering = ["-created"]
        get_latest_by = "created"
        constraints = [active_run_constraint("syncrun_one_active_per_tenant")]

    def __str__(self):
        kind = "Preview" if self.dry_run else "Sync"
        return f"{kind} #{self.pk} ({self.get_trigger_display()}, {self.created:%Y-%m-%d %H:%M})"

    @property
    def failed(self):
        return self.counts.get(SyncResult.Outcome.FAILED, 0)

    @property
    def held(self):
        return self.counts.get(SyncResult.Outcome.HELD, 0)

    @property
    def was_approved(self):
        """Held for approval, and staff approved it: the runs it started (`approval_runs`)
        write its rows, so it no longer awaits anything."""
        return self.status == self.Status.AWAITING_APPROVAL and bool(self.approval_runs.all())

    @property
    def status_label(self):
        """The status as staff read it: "Approved" once an approval run was started."""
        return "Approved" if self.was_approved else self.get_status_display()

    def summary(self):
        """'2 create · 4993 unchanged · 1 failed' (actions done or previewed, then problems)."""
        labels = {**dict(SyncResult.Action.choices), **dict(SyncResult.Outcome.choices)}
        order = [*SyncResult.Action.values, *SyncResult.Outcome.values]
        parts = [
            f"{self.counts[key]} {labels[key].lower()}" for key in order if self.counts.get(key)
        ]
        return " · ".join(parts) or ("nothing to do" if self.finished else "")

    def pause(self, phase):
        """Running → queued, still holding the tenant's claim, until its continuation
        (`runner`) starts it again when Halo's rate window frees."""
        now = timezone.now()
        fields = {"status": self.Status.QUEUED, "heartbeat": now, "phase": phase}
        if not type(self).objects.filter(pk=self.pk, status=self.Status.RUNNING).update(**fields):
            raise ClaimLost(f"run {self.pk} was taken over")
        for name, value in fields.items():
            setattr(self, name, value)

    def finish(self, status, *, error=""):
        super().finish(
            status,
            error=error,
            phase="",
            done=self.done,
            total=self.total,
            counts=self.counts,
            halo_requests=self.halo_requests,
            halo_calls=self.halo_calls,
        )

    def approvable(self):
        """Rows staff may approve: what a preview would write, and held rows."""
        return self.results.filter(
            outcome__in=[SyncResult.Outcome.PREVIEW, SyncResult.Outcome.HELD]
        )


class SyncResultQuerySet(models.QuerySet):
    def real(self):
        """Results of runs that wrote (or tried to write) to Halo, not of previews."""
        return self.filter(run__dry_run=False)

    def of_pair(self, organisation_id, product_id):
        """The pair's real results, newest first (`OuterRef`s work too)."""
        return (
            self.real()
            .filter(organisation_id=organisation_id, product_id=product_id)
            .order_by("-pk")
        )

    def latest_per_pair(self):
        """Each organisation/product pair's latest real result (what Halo was last told)."""
        newer = SyncResult.objects.real().filter(
            organisation_id=OuterRef("organisation_id"),
            product_id=OuterRef("product_id"),
            pk__gt=OuterRef("pk"),
        )
        return self.real().exclude(organisation=None).exclude(product=None).filter(~Exists(newer))

    def failed_pairs(self, tenant):
        """`{(organisation id, product id)}` of the tenant's pairs whose latest result
        failed: what "Retry failed pairs" writes."""
        latest = self.filter(run__tenant=tenant).latest_per_pair()
        failed = latest.filter(outcome=SyncResult.Outcome.FAILED)
        return set(failed.values_list("organisation_id", "product_id"))


class SyncResult(models.Model):
    """What one run did (or would do) for one organisation/product pair."""

    TENANT_PATH = "run__tenant"

    class Action(models.TextChoices):
        CREATE = "create", "Create"
        UPDATE = "update", "Update"
        ZERO = "zero", "Set to 0"
        DEACTIVATE = "deactivate", "Deactivate"
        UNCHANGED = "unchanged", "Unchanged"
        LEAVE = "leave", "Leave"
        SKIP = "skip", "Skip"

    class Outcome(models.TextChoices):
        DONE = "done", "Done"
        PREVIEW = "preview", "Would write"
        HELD = "held", "Held for approval"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Not mapped"

    run = models.ForeignKey(BillingSyncRun, on_delete=models.CASCADE, related_name="results")
    organisation = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    organisation_name = models.CharField("organisation", max_length=300)
    product_sku = models.CharField("product SKU", max_length=64)
    halo_client_id = models.PositiveBigIntegerField("Halo client id", null=True, blank=True)
    halo_client_name = models.CharField("Halo client", max_length=300, blank=True)
    licence_id = models.PositiveBigIntegerField("Halo licence id", null=True, blank=True)
    previous = models.PositiveIntegerField("previous count", null=True, blank=True)
    new = models.PositiveIntegerField("new count", null=True, blank=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    removal_policy = models.CharField(max_length=10, choices=RemovalPolicy.choices, blank=True)
    message = models.TextField(blank=True)
    approved = models.BooleanField(default=False)

    objects = SyncResultQuerySet.as_manager()

    class Meta:
        ordering = ["organisation_name", "product_sku"]
        indexes = [
            models.Index(fields=["licence_id"]),
            # A pair's latest result (the job page's state per pair, Retry failed pairs).
            models.Index(fields=["organisation", "product", "-id"], name="syncresult_pair_latest"),
        ]

    def __str__(self):
        return f"{self.organisation_name} · {self.product_sku}: {self.get_action_display()}"

    @property
    def pair_key(self):
        return (self.halo_client_id, self.product_sku.casefold())


class CsvUploadQuerySet(models.QuerySet):
    def usable(self, tenant, user):
        return self.filter(tenant=tenant, user=user, expires__gt=timezone.now())


class CsvUpload(models.Model):
    """A CSV file kept between its preview and the confirmation (the file is too big to
    travel back with the form), found by a random token stored only as a SHA-256 hash, and
    only for the tenant and user who uploaded it, until it expires or is saved."""

    #: Uploads one user keeps per tenant (the oldest go first).
    KEPT_PER_USER = 3

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    filename = models.CharField(max_length=255, blank=True)
    size = models.PositiveIntegerField(help_text="Bytes as uploaded.")
    content = models.TextField(help_text="The file as text.")
    created = models.DateTimeField(default=timezone.now, editable=False)
    expires = models.DateTimeField()

    class Kind(models.TextChoices):
        USAGE = "usage", "Usage counts"
        ORGANISATIONS = "organisations", "Organisations"
        PRODUCTS = "products", "Products"

    kind = models.CharField(
        max_length=20,
        choices=Kind.choices,
        default=Kind.USAGE,
        help_text="Which import it was uploaded to: only that one confirms it.",
    )

    objects = CsvUploadQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        verbose_name = "CSV upload"

    def __str__(self):
        return f"{self.filename or 'CSV file'} ({self.size} bytes)"

    @classmethod
    def keep(cls, tenant, user, content, filename="", size=0, kind=Kind.USAGE):
        """Store an upload; answers (upload, token). Expired uploads of anyone, and this
        user's oldest beyond `KEPT_PER_USER`, are deleted."""
        now = timezone.now()
        cls.objects.filter(expires__lte=now).delete()
        token = secrets.token_urlsafe(32)
        upload = cls.objects.create(
            tenant=tenant,
            user=user,
            kind=kind,
            digest=token_digest(token),
            filename=filename[:255],
            size=size,
            content=content,
            expires=now + timedelta(minutes=settings.CSV_IMPORT_KEEP_MINUTES),
        )
        older = cls.objects.filter(tenant=tenant, user=user).order_by("-created", "-pk")
        stale = list(older.values_list("pk", flat=True)[cls.KEPT_PER_USER :])
        if stale:
            cls.objects.filter(pk__in=stale).delete()
        return upload, token

    @classmethod
    def find(cls, tenant, user, token, kind=Kind.USAGE):
        """The user's unexpired upload to the `kind` import in `tenant` with this token, or
        None."""
        if not token:
            return None
        found = cls.objects.usable(tenant, user).filter(digest=token_digest(token), kind=kind)
        return found.first()
