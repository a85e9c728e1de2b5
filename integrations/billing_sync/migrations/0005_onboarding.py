# Organisations and products in bulk (issue 15): onboarding submissions, the usage API's auto-create option, CSV uploads per import.

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing_sync', '0004_retry_failed_pairs'),
        ('portal', '0005_invitation'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='billingsyncsettings',
            name='usage_creates_organisations',
            field=models.BooleanField(default=False, help_text="A row of POST /api/v1/usage naming an external reference the portal does not know creates that organisation (named by the row's organisation_name, else its reference) instead of refusing the request; the answer lists the organisations it created. Off: such rows are errors and nothing is saved. The CSV import never creates organisations from usage.", verbose_name='usage API creates unknown organisations'),
        ),
        migrations.AddField(
            model_name='csvupload',
            name='kind',
            field=models.CharField(choices=[('usage', 'Usage counts'), ('organisations', 'Organisations'), ('products', 'Products')], default='usage', help_text='Which import it was uploaded to: only that one confirms it.', max_length=20),
        ),
        migrations.AddField(
            model_name='usagesubmission',
            name='created_organisations',
            field=models.JSONField(blank=True, default=list, editable=False, help_text='External references of the organisations this submission created.'),
        ),
        migrations.CreateModel(
            name='OnboardingSubmission',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('organisations', 'Organisations'), ('products', 'Products')], max_length=20)),
                ('source', models.CharField(choices=[('api', 'API'), ('csv', 'CSV import'), ('admin', 'Admin')], max_length=10)),
                ('idempotency_key', models.CharField(blank=True, max_length=100)),
                ('fingerprint', models.CharField(editable=False, max_length=64)),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
                ('rows', models.PositiveIntegerField(default=0)),
                ('added', models.PositiveIntegerField(default=0, verbose_name='created')),
                ('updated', models.PositiveIntegerField(default=0)),
                ('unchanged', models.PositiveIntegerField(default=0)),
                ('mapped', models.PositiveIntegerField(default=0, help_text='Rows that set or changed a Halo mapping.', verbose_name='mapped to Halo')),
                ('results', models.JSONField(blank=True, default=list, editable=False)),
                ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='portal.tenant')),
                ('token', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to='portal.apitoken')),
                ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'onboarding import',
                'ordering': ['-created'],
                'constraints': [models.UniqueConstraint(condition=models.Q(('idempotency_key', ''), _negated=True), fields=('tenant', 'kind', 'idempotency_key'), name='onboardingsubmission_unique_key')],
            },
        ),
    ]
