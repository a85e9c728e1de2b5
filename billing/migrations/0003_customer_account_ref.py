from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_invoice_source_portal"),
    ]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="account_ref",
            field=models.CharField(
                blank=True,
                help_text="Halo's accounts ID of the client (else its ref), printed on invoices.",
                max_length=100,
                verbose_name="account reference",
            ),
        ),
    ]
