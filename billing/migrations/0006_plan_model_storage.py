"""Own models: each plan's largest model file and storage quota (billing/plans.py)."""

from django.db import migrations, models

from billing.plans import MODEL_STORAGE


def set_limits(apps, schema_editor):
    plan_model = apps.get_model("billing", "Plan")
    for slug, (largest, quota) in MODEL_STORAGE.items():
        plan_model.objects.filter(slug=slug).update(
            model_max_bytes=largest, model_storage_bytes=quota
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_rate_counter")]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="model_max_bytes",
            field=models.BigIntegerField(
                default=0, help_text="The largest model file a tenant may add; 0: no own models"
            ),
        ),
        migrations.AddField(
            model_name="plan",
            name="model_storage_bytes",
            field=models.BigIntegerField(
                default=0, help_text="Bytes of own models a tenant may keep, all of them together"
            ),
        ),
        migrations.RunPython(set_limits, migrations.RunPython.noop),
    ]
