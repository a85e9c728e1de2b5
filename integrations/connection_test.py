"""Test connection: can the portal get a token, and does it hold every permission the
tenant's enabled features need?

Read permissions are probed with a one-row read; edit permissions cannot be probed without
writing, so they are judged from the `scope` Halo returns with the token (when it does).
Nothing here writes to Halo. Staff wait on the page, so the whole test (every connection
of one action together) gets the web budget (`HALO_WEB_BUDGET_SECONDS`).
"""

from dataclasses import dataclass, field

from django.utils import timezone

from integrations.halo import RESOURCES, HaloClient, HaloError, HaloPermissionError, web_budget
from integrations.halo.errors import AGENT_PERMISSIONS, APP_PERMISSIONS

#: Permissions each feature flag of a connection needs, in checklist order.
FEATURE_PERMISSIONS = {
    "billing_sync": (
        "read:customers",
        "edit:customers",
        "read:items",
        "read:softwarelicensing",
        "edit:softwarelicensing",
        "read:contracts",
    ),
    "invoice_sync": ("read:customers", "read:invoices", "edit:invoices", "read:contracts"),
    "payments": ("read:invoices", "edit:invoices"),
    "webhooks": ("admin:webhooks",),
}
#: The resource whose one-row read proves each probe-able permission.
PROBES = {
    "read:customers": "Client",
    "read:items": "Item",
    "read:softwarelicensing": "SoftwareLicence",
    "read:invoices": "Invoice",
    "read:contracts": "ClientContract",
    "admin:webhooks": "Webhook",
}
#: Umbrella scopes Halo may report instead of the concrete ones they imply.
UMBRELLAS = {"all": ("read:", "edit:", "admin"), "all:standard": ("read:", "edit:")}


@dataclass
class Check:
    permission: str
    status: str  # "ok", "missing", "unknown" (not verifiable read-only) or "error"
    detail: str = ""


@dataclass
class Result:
    connection: object
    ok: bool
    summary: str
    checks: list = field(default_factory=list)
    granted_scope: str | None = None

    @property
    def missing(self):
        return [c.permission for c in self.checks if c.status == "missing"]


def needed_permissions(connection):
    needed = []
    for feature, permissions in FEATURE_PERMISSIONS.items():
        if getattr(connection, feature):
            needed += [p for p in permissions if p not in needed]
    return needed


def how_to_grant(permission):
    """Exactly what to tick in Halo for a missing permission."""
    app = APP_PERMISSIONS.format(app="<application>")
    agent = AGENT_PERMISSIONS.format(agent="<agent>")
    return (
        f"{app}: tick '{permission}'; and make sure the application's login agent has the "
        f"matching permission ({agent})."
    )


def _granted(scope, permission):
    names = scope.split()
    if permission in names:
        return True
    return any(
        permission.startswith(prefixes) for name, prefixes in UMBRELLAS.items() if name in names
    ) or (permission.startswith("admin") and "admin" in names)


def run(connection, save=True, budget=None):
    """Probe `connection`; stores the outcome on it (unless `save=False`) and answers it.
    `budget`: the `Deadline` of the page (several tests may share one); default, a new one."""
    client = HaloClient(connection, budget=budget if budget is not None else web_budget())
    try:
        # Checked again by the client when it fetches a token; here a refusal stops the
        # test before anything is sent.
        connection.check_secret_destination()
        scope = client.get_token_info().get("scope")
    except HaloError as error:
        result = Result(connection, False, str(error))
    else:
        checks = [_check(client, p, scope) for p in needed_permissions(connection)]
        result = Result(connection, True, "", checks, scope)
        result.ok = not any(c.status in ("missing", "error") for c in checks)
        result.summary = _summary(checks)
    if save:
        connection.test_status = (
            connection.TestStatus.OK if result.ok else connection.TestStatus.FAILED
        )
        connection.test_summary = result.summary
        connection.tested_at = timezone.now()
        connection.save(update_fields=["test_status", "test_summary", "tested_at"])
    return result


def _check(client, permission, scope):
    if permission not in PROBES:
        if scope is None:
            return Check(
                permission,
                "unknown",
                "Not verifiable read-only: Halo did not report "
                "the granted scopes. " + how_to_grant(permission),
            )
        if _granted(scope, permission):
            return Check(permission, "ok", "Granted (reported with the token).")
        return Check(permission, "missing", how_to_grant(permission))
    resource = PROBES[permission]
    try:
        next(client.list(resource, **({"page_size": 1} if RESOURCES[resource].paged else {})), None)
    except HaloPermissionError:
        return Check(permission, "missing", how_to_grant(permission))
    except HaloError as error:
        return Check(permission, "error", str(error))
    return Check(permission, "ok", "Read succeeded.")


def _summary(checks):
    if not checks:
        return "Credentials accepted. No features are enabled, so no permissions were probed."
    missing = [c.permission for c in checks if c.status == "missing"]
    errors = [c.permission for c in checks if c.status == "error"]
    unknown = [c.permission for c in checks if c.status == "unknown"]
    parts = []
    if missing:
        parts.append(f"Missing permissions: {', '.join(missing)}.")
    if errors:
        parts.append(f"Could not check: {', '.join(errors)}.")
    if not parts:
        parts.append(f"Credentials accepted; {len(checks) - len(unknown)} permissions verified.")
    if unknown:
        parts.append(f"Not verifiable read-only: {', '.join(unknown)}.")
    return " ".join(parts)
