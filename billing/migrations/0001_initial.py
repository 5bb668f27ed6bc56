from django.db import migrations, models

import billing.models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Plan",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("slug", models.SlugField(max_length=50, unique=True)),
                ("name", models.CharField(max_length=100)),
                ("requests_per_minute", models.PositiveIntegerField()),
                ("concurrent_jobs", models.PositiveIntegerField()),
                ("images_per_day", models.PositiveIntegerField(blank=True, help_text="Empty: no cap", null=True)),
                ("max_samples", models.PositiveSmallIntegerField()),
                ("max_side", models.PositiveIntegerField()),
                ("steps_list", models.JSONField(default=billing.models.default_steps_list)),
                ("priority", models.SmallIntegerField(default=0)),
                ("retention_days", models.PositiveIntegerField()),
                ("monthly_credits", models.PositiveIntegerField()),
            ],
            options={"ordering": ["priority"]},
        ),
    ]
