"""Data migrations: what they fill in from the rows already there."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("generation", "0012_aimodel_sample")]
AFTER = [("generation", "0013_dailyimages")]


def migrate(targets):
    """The apps as of `targets`, once the database is migrated there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_daily_images_start_from_the_jobs_already_there():
    apps = migrate(BEFORE)
    try:
        Plan = apps.get_model("billing", "Plan")
        Organization = apps.get_model("accounts", "Organization")
        AIModel = apps.get_model("generation", "AIModel")
        Job = apps.get_model("generation", "Job")
        plan = Plan.objects.get(slug="basic")
        acme, other = (Organization.objects.create(name=n, slug=n, plan=plan) for n in "ab")
        model = AIModel.objects.create(model_id="m", name="M", path="m")
        late = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
        early = datetime(2026, 3, 2, 0, 1, tzinfo=UTC)
        for org, created_at, samples, status in [
            (acme, late, 2, "success"),
            (acme, late, 1, "queued"),
            (acme, early, 4, "processing"),
            (acme, early, 3, "failed"),
            (acme, early, 3, "canceled"),
            (other, early, 1, "success"),
        ]:
            Job.objects.create(
                organization=org,
                model=model,
                params={"samples": samples},
                created_at=created_at,
                status=status,
            )

        apps = migrate(AFTER)
        DailyImages = apps.get_model("generation", "DailyImages")
        rows = DailyImages.objects.values_list("organization__slug", "day", "images")
        assert sorted(rows) == [
            ("a", late.date(), 3),
            ("a", early.date(), 4),
            ("b", early.date(), 1),
        ]
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
