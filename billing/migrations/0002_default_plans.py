"""Seed the four default plans (docs/architecture.md; editable in the admin afterwards)."""

from django.db import migrations

from billing.plans import seed_default_plans


def seed(apps, schema_editor):
    seed_default_plans(apps.get_model("billing", "Plan"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
