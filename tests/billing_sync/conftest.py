"""Billing sync fixtures: the demo catalogue mapped to the Halo simulator's demo clients."""

from collections import Counter

import pytest
from django_q.brokers import get_broker
from django_q.signing import SignedPackage

from integrations.billing_sync import engine, runner
from integrations.billing_sync.models import (
    BillingSyncRun,
    BillingSyncSettings,
    OrganisationMapping,
    ProductMapping,
    UsageCount,
    UsageSubmission,
)
from portal import demo
from portal.models import Organisation, Product
from tests import factories
from tests.halo.conftest import make_connection


@pytest.fixture(autouse=True)
def _requests_commit(requests_commit):
    """Admin buttons queue runs and refreshes as in production (see `requests_commit`)."""


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    """Backoff in milliseconds so fault tests stay fast; timeouts short."""
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    settings.HALO_RETRY_BUDGET_SECONDS = 5
    settings.HALO_CONNECT_TIMEOUT = 2
    settings.HALO_READ_TIMEOUT = 2


class World:
    """A tenant with the demo organisations and products, connected to the simulator."""

    def __init__(self, tenant, sim, connection=None):
        self.tenant, self.sim, self.connection = tenant, sim, connection
        self.settings = BillingSyncSettings.for_tenant(tenant)

    @classmethod
    def build(cls, tenant, sim):
        for name, ref in demo.ORGANISATIONS:
            Organisation.objects.create(tenant=tenant, name=name, external_ref=ref)
        for name, sku, price in demo.PRODUCTS:
            Product.objects.create(tenant=tenant, name=name, sku=sku, unit_price=price)
        return cls(tenant, sim, make_connection(sim, tenant))

    def map_all(self):
        """Refresh from Halo and accept every suggestion (all demo orgs and products)."""
        runner.refresh_from_halo(self.tenant, runner.halo_client_for(self.tenant))
        for model in (OrganisationMapping, ProductMapping):
            suggestions = model.objects.suggestions(self.tenant)
            model.objects.bulk_create(
                model(
                    tenant=self.tenant,
                    matched_by=s.reason,
                    **{model.SUBJECT_FIELD: s.subject, model.RECORD_FIELD: s.record},
                )
                for s in suggestions
            )
        return self

    def org(self, ref):
        return Organisation.objects.get(tenant=self.tenant, external_ref=ref)

    def product(self, sku):
        return Product.objects.get(tenant=self.tenant, sku=sku)

    def set_counts(self, counts):
        """`{(ref, sku): quantity}` through a usage submission (as the API would)."""
        rows = [(self.org(ref), self.product(sku), q) for (ref, sku), q in counts.items()]
        return UsageSubmission.objects.record(
            self.tenant, rows, source=UsageSubmission.Source.ADMIN
        )[0]

    def every_pair(self, quantity_of=lambda i, j: 1 + (i * 7 + j * 3) % 30):
        return {
            (ref, sku): quantity_of(i, j)
            for i, (_, ref) in enumerate(demo.ORGANISATIONS)
            for j, (_, sku, _) in enumerate(demo.PRODUCTS)
        }

    def sync(self, trigger=BillingSyncRun.Trigger.COMMAND, dry_run=False):
        run, active = runner.start(self.tenant, trigger, dry_run=dry_run)
        assert run is not None, f"{active} holds the tenant"
        run.refresh_from_db()
        return run

    def licences(self):
        """Live licences in the simulator (tombstones left out)."""
        return [r for r in self.sim.control.state("SoftwareLicence") if not r.get("_deleted")]

    def portal_licences(self):
        """`{(halo client id, sku): [licences]}` of the licences the portal owns."""
        owned = {}
        for record in self.licences():
            if (sku := engine.owned_sku(record)) is not None:
                owned.setdefault((record["client_id"], sku), []).append(record)
        return owned

    def halo_counts(self):
        """`{(ref, sku): count}` of portal licences, asserting one licence per pair."""
        ref_of = {
            m.halo_client.halo_id: m.organisation.external_ref
            for m in OrganisationMapping.objects.filter(tenant=self.tenant).select_related(
                "halo_client", "organisation"
            )
        }
        counts = {}
        for (client_id, sku), found in self.portal_licences().items():
            assert len(found) == 1, f"duplicate licences for {client_id}/{sku}: {found}"
            counts[(ref_of.get(client_id, client_id), sku)] = found[0]["count"]
        return counts

    def wanted(self):
        return {
            (c.organisation.external_ref, c.product.sku): c.quantity
            for c in UsageCount.objects.filter(tenant=self.tenant).select_related(
                "organisation", "product"
            )
        }

    def licence_writes(self):
        return self.sim.control.requests()["by_endpoint"].get("POST /SoftwareLicence", 0)


def take_queued(func):
    """Remove the tasks queued on the broker; answers those calling `func` (packages)."""
    broker = get_broker()
    found = []
    while batch := broker.dequeue():
        for ack_id, payload in batch:
            broker.acknowledge(ack_id)
            found.append(SignedPackage.loads(payload))
    return [task for task in found if task["func"] == func]


def actions(run):
    return Counter(run.results.values_list("action", flat=True))


@pytest.fixture
def world(db, sim):
    return World.build(factories.tenant("alpha"), sim)


@pytest.fixture
def mapped(world):
    """Every demo organisation and product mapped, every pair counted."""
    world.map_all()
    world.set_counts(world.every_pair())
    return world
