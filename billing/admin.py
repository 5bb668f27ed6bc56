from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from billing.models import CreditEntry, Plan, RateCounter, StripeEvent, Subscription
from sdplatform.admin_actions import ReadOnlyAdmin


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
        "stripe_price_id",
    ]


@admin.register(CreditEntry)
class CreditEntryAdmin(ReadOnlyAdmin):
    """The ledger, read-only: it is append-only, so balances change through billing/ledger.py."""

    list_display = ["created_at", "organization", "kind", "amount", "balance_after", "key", "job"]
    list_filter = ["kind"]
    search_fields = ["organization__slug", "key"]
    list_select_related = ["organization", "job"]
    raw_id_fields = ["organization", "job"]
    date_hierarchy = "created_at"


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    """What Stripe's webhooks last said of each organization's subscription."""

    list_display = ["organization", "plan", "status", "current_period_end", "updated_at"]
    list_filter = ["status", "plan"]
    search_fields = ["organization__slug", "stripe_customer_id", "stripe_subscription_id"]
    list_select_related = ["organization", "plan"]
    raw_id_fields = ["organization"]


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    """Every Stripe event received, once each; read-only."""

    list_display = ["received_at", "type", "event_id"]
    list_filter = ["type"]
    search_fields = ["event_id"]
    date_hierarchy = "received_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StripeEvent | None = None) -> bool:
        return False


@admin.register(RateCounter)
class RateCounterAdmin(admin.ModelAdmin):
    """Request counters of the current windows (rate limits, login attempts); pruned hourly."""

    list_display = ["key", "hits", "expires"]
    search_fields = ["key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
