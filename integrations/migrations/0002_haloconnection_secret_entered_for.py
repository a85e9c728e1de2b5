"""Bind each stored Halo client secret to the hosts its connection names now (pentest #12,
finding 2): from here on the secret is only sent there, and changing them needs it again."""

from urllib.parse import urlsplit

from django.db import migrations, models


def origin(url):
    # A copy of integrations.models.origin as it was when this migration was written.
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = parts.hostname
    if default is None or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}"


def bind_stored_secrets(apps, schema_editor):
    HaloConnection = apps.get_model("integrations", "HaloConnection")
    for connection in HaloConnection.objects.exclude(client_secret_encrypted=""):
        connection.secret_entered_for = {
            "auth": origin(connection.auth_url),
            "resource": origin(connection.resource_url),
        }
        connection.save(update_fields=["secret_entered_for"])


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="haloconnection",
            name="secret_entered_for",
            field=models.JSONField(default=dict, editable=False),
        ),
        migrations.RunPython(bind_stored_secrets, migrations.RunPython.noop),
    ]
