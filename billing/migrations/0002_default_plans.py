"""Seed the four default plans of DESIGN section 7 (editable in the admin afterwards)."""

from django.db import migrations

from billing.plans import seed_default_plans


def seed(apps, schema_editor):
    seed_default_plans(apps.get_model("billing", "Plan"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
