"""SyncRun is renamed InvoiceSyncRun and claimed as every run is (issue 13).

The table keeps its name. The run's status words become the shared ones ('ok' →
'succeeded', 'failed' → 'error': the run could not complete), `started` becomes when the
run really started and `created` when it was asked for; the lock that lived on SyncState
(`running_since`) is replaced by the one-active-run constraint.
"""

import django.utils.timezone
from django.db import migrations, models

STATUS_WORDS = {"ok": "succeeded", "failed": "error"}


def to_shared_words(apps, schema_editor):
    runs = apps.get_model("invoice_sync", "InvoiceSyncRun")
    runs.objects.update(created=models.F("started"))
    for old, new in STATUS_WORDS.items():
        runs.objects.filter(status=old).update(status=new)
    # A run left "running" by the old lock is over: the new constraint allows one at most.
    runs.objects.filter(status="running").update(
        status="interrupted", finished=django.utils.timezone.now()
    )


def to_old_words(apps, schema_editor):
    runs = apps.get_model("invoice_sync", "InvoiceSyncRun")
    for old, new in STATUS_WORDS.items():
        runs.objects.filter(status=new).update(status=old)
    runs.objects.filter(status="interrupted").update(status="failed")
    runs.objects.filter(started__isnull=True).update(started=models.F("created"))


class Migration(migrations.Migration):
    dependencies = [
        ("invoice_sync", "0002_sync_state_cursors_only"),
        ("portal", "0005_invitation"),
    ]

    operations = [
        migrations.AlterModelTable(name="syncrun", table="invoice_sync_syncrun"),
        migrations.RenameModel(old_name="SyncRun", new_name="InvoiceSyncRun"),
        migrations.AddField(
            model_name="invoicesyncrun",
            name="created",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name="invoicesyncrun",
            name="heartbeat",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name="invoicesyncrun",
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
        migrations.RunPython(to_shared_words, to_old_words),
        migrations.AlterField(
            model_name="invoicesyncrun",
            name="started",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RemoveIndex(model_name="invoicesyncrun", name="invoice_syn_tenant__204b60_idx"),
        migrations.AlterModelOptions(
            name="invoicesyncrun",
            options={"ordering": ["-created"], "verbose_name": "invoice sync run"},
        ),
        migrations.AddIndex(
            model_name="invoicesyncrun",
            index=models.Index(
                fields=["tenant", "-created"], name="invoice_syn_tenant__6df364_idx"
            ),
        ),
        migrations.AddConstraint(
            model_name="invoicesyncrun",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status__in", ["queued", "running"])),
                fields=("tenant",),
                name="invoicesyncrun_one_active_per_tenant",
            ),
        ),
        migrations.RemoveField(model_name="syncstate", name="running_since"),
    ]
