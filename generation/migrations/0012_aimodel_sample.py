from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0011_workerheartbeat_engine"),
    ]

    operations = [
        migrations.AddField(
            model_name="aimodel",
            name="sample_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the sample was last queued, made or given up",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="aimodel",
            name="sample_attempts",
            field=models.PositiveSmallIntegerField(
                default=0,
                help_text="Times a sample was queued (a lost task is queued again, capped)",
            ),
        ),
        migrations.AddField(
            model_name="aimodel",
            name="sample_error",
            field=models.TextField(blank=True, help_text="Why the sample could not be made"),
        ),
        migrations.AddField(
            model_name="aimodel",
            name="sample_path",
            field=models.CharField(
                blank=True, help_text="Storage name of the sample image (private)", max_length=300
            ),
        ),
        migrations.AddField(
            model_name="aimodel",
            name="sample_state",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "None yet"),
                    ("pending", "Pending (a worker makes it)"),
                    ("ready", "Ready"),
                    ("failed", "Failed"),
                ],
                default="",
                max_length=8,
            ),
        ),
    ]
