from django.contrib import admin

from billing.models import Plan


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "requests_per_minute",
        "concurrent_jobs",
        "images_per_day",
        "max_samples",
        "max_side",
        "steps_list",
        "priority",
        "retention_days",
        "monthly_credits",
    ]
