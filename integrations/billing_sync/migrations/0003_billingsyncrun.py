"""SyncRun is renamed BillingSyncRun (issue 13); its table keeps its name, so nothing moves."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing_sync", "0002_csv_upload"),
        ("portal", "0005_invitation"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelTable(name="syncrun", table="billing_sync_syncrun"),
        migrations.RenameModel(old_name="SyncRun", new_name="BillingSyncRun"),
        migrations.AlterModelOptions(
            name="billingsyncrun",
            options={
                "get_latest_by": "created",
                "ordering": ["-created"],
                "verbose_name": "billing sync run",
            },
        ),
        migrations.AlterField(
            model_name="billingsyncrun",
            name="tenant",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="billing_sync_runs",
                to="portal.tenant",
            ),
        ),
        migrations.AlterField(
            model_name="billingsyncrun",
            name="status",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("previewed", "Preview ready"),
                    ("awaiting", "Awaiting approval"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Some items failed"),
                    ("error", "Could not run"),
                    ("interrupted", "Interrupted"),
                    ("skipped", "Skipped"),
                ],
                default="queued",
                max_length=12,
            ),
        ),
    ]
