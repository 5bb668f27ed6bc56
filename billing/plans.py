"""The default plans (docs/architecture.md), seeded by a migration and editable in the admin."""

from __future__ import annotations

from typing import Any

DEFAULT_PLANS = [
    # slug, name, req/min, concurrent, images/day, samples, max side, steps, priority,
    # retention days, credits/month
    ("free", "Free", 10, 1, 50, 1, 512, [21], 0, 1, 100),
    ("basic", "Basic", 60, 2, 1000, 4, 768, [21, 31], 1, 7, 3000),
    ("premium", "Premium", 300, 4, 10000, 4, 1024, [21, 31, 41], 2, 30, 20000),
    ("enterprise", "Enterprise", 1200, 16, None, 4, 1024, [21, 31, 41, 51], 3, 90, 100000),
]


MiB = 1024**2
GiB = 1024**3
# Own models: slug -> (largest file, storage quota); a plan not listed keeps no own models.
MODEL_STORAGE = {
    "free": (0, 0),
    "basic": (256 * MiB, 1 * GiB),
    "premium": (2 * GiB, 10 * GiB),
    "enterprise": (8 * GiB, 100 * GiB),
}


def seed_default_plans(plan_model: Any) -> None:
    """Create the default plans that are missing; plans edited since are left alone."""
    # Older migrations run this with the Plan of their time, before the own-model fields.
    has_models = any(f.name == "model_max_bytes" for f in plan_model._meta.get_fields())
    for slug, name, rpm, conc, per_day, samples, side, steps, prio, keep, credits in DEFAULT_PLANS:
        storage = {}
        if has_models:
            largest, quota = MODEL_STORAGE[slug]
            storage = {"model_max_bytes": largest, "model_storage_bytes": quota}
        plan_model.objects.get_or_create(
            slug=slug,
            defaults=dict(
                name=name,
                requests_per_minute=rpm,
                concurrent_jobs=conc,
                images_per_day=per_day,
                max_samples=samples,
                max_side=side,
                steps_list=steps,
                priority=prio,
                retention_days=keep,
                monthly_credits=credits,
                **storage,
            ),
        )
