"""The admin home's "Halo connection" row: is the tenant's active connection working?"""

from django.urls import reverse
from django.utils.text import Truncator
from django.utils.timesince import timesince

from portal.health import HealthRow, provider


@provider
def halo_connection(tenant):
    connection = tenant.halo_connections.filter(active=True).first()
    if connection is None:
        url = reverse("admin:integrations_haloconnection_changelist")
        return [HealthRow("Halo connection", "idle", "Not set up: add your Halo API app", url)]
    url = reverse("admin:integrations_haloconnection_change", args=[connection.pk])
    if not connection.tested_at:
        return [HealthRow("Halo connection", "idle", "Not tested yet: run Test connection", url)]
    ago = f"tested {timesince(connection.tested_at)} ago"
    if connection.test_status == connection.TestStatus.OK:
        return [HealthRow("Halo connection", "ok", f"{connection.name}: working, {ago}", url)]
    summary = Truncator(connection.test_summary).chars(160)
    return [HealthRow("Halo connection", "error", f"{summary} ({ago})", url)]
