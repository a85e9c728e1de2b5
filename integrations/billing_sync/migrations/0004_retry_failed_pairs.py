from django.db import migrations, models


class Migration(migrations.Migration):
    """'Retry failed pairs' runs (a trigger), and the index that finds a pair's latest result
    (the billing sync job page's state per pair)."""

    dependencies = [
        ("billing_sync", "0003_billingsyncrun"),
    ]

    operations = [
        migrations.AlterField(
            model_name="billingsyncrun",
            name="trigger",
            field=models.CharField(
                choices=[
                    ("manual", "Sync now"),
                    ("preview", "Preview"),
                    ("schedule", "Schedule"),
                    ("command", "Command line"),
                    ("approval", "Approval"),
                    ("retry", "Retry failed pairs"),
                ],
                max_length=10,
            ),
        ),
        migrations.AddIndex(
            model_name="syncresult",
            index=models.Index(
                fields=["organisation", "product", "-id"], name="syncresult_pair_latest"
            ),
        ),
    ]
