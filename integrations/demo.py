"""Demo step: the demo tenant's active Halo connection, pointing at the simulator."""

from integrations.halo_sim.seed import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT
from integrations.models import HaloConnection
from portal.demo import register


@register
def halo_connection(context):
    url = context.halo_url.rstrip("/")
    wanted = {
        "name": "Halo simulator",
        "auth_url": f"{url}/auth",
        "resource_url": f"{url}/api",
        "halo_tenant": DEMO_TENANT,
        "client_id": DEMO_CLIENT_ID,
        "scopes": "all",
        "billing_sync": True,
        "invoice_sync": True,
        "payments": True,
        "webhooks": True,
    }
    connection = HaloConnection.objects.active(context.tenant)
    connection = connection or HaloConnection(tenant=context.tenant, active=True)
    changed = [name for name, value in wanted.items() if getattr(connection, name) != value]
    for name in changed:
        setattr(connection, name, wanted[name])
    before = connection.client_secret_encrypted
    connection.set_secret(DEMO_CLIENT_SECRET)  # keeps the ciphertext when the secret matches
    if changed or connection.client_secret_encrypted != before:
        connection.save()
    context.notes.append(f"Halo connection: {url} (tenant {DEMO_TENANT}); run Test connection")
