"""Plans and their limits."""

from __future__ import annotations

from django.db import models


def default_steps_list() -> list[int]:
    return [21]


class Plan(models.Model):
    """A price tier and every limit that comes with it; edited in the admin."""

    DEFAULT_SLUG = "free"

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    requests_per_minute = models.PositiveIntegerField()
    concurrent_jobs = models.PositiveIntegerField()
    images_per_day = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no cap")
    max_samples = models.PositiveSmallIntegerField()
    max_side = models.PositiveIntegerField()
    steps_list = models.JSONField(default=default_steps_list)
    priority = models.SmallIntegerField(default=0)
    retention_days = models.PositiveIntegerField()
    monthly_credits = models.PositiveIntegerField()

    class Meta:
        ordering = ["priority"]

    def __str__(self) -> str:
        return self.name

    @property
    def max_steps(self) -> int:
        """The largest step count this plan allows (binds formats without a steps list)."""
        return max(self.steps_list)
