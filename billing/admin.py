from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from billing.models import CreditEntry, Plan


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


@admin.register(CreditEntry)
class CreditEntryAdmin(admin.ModelAdmin):
    """The ledger, read-only: it is append-only, so balances change through billing/ledger.py."""

    list_display = ["created_at", "organization", "kind", "amount", "balance_after", "key", "job"]
    list_filter = ["kind"]
    search_fields = ["organization__slug", "key"]
    list_select_related = ["organization", "job"]
    raw_id_fields = ["organization", "job"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CreditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: CreditEntry | None = None) -> bool:
        return False
