"""The usage page (/app/usage/): images and credits per day for 30 days, and the whole ledger.

It lives in generation, not billing: it shows jobs next to ledger entries, and only generation
may import both (docs/architecture.md). Its template stays billing/usage.html.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.core.paginator import Paginator
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from accounts.requests import MemberRequest
from accounts.tenancy import member_required
from billing.models import CreditEntry
from generation.quotas import images_per_day

USAGE_DAYS = 30
LEDGER_PAGE_SIZE = 50
CHART_WIDTH = 600
CHART_HEIGHT = 150
# Room around the bars for the axes' labels: values on the left, dates below.
CHART_LEFT = 44
CHART_BOTTOM = 34


def days_back(today: date, n: int = USAGE_DAYS) -> list[date]:
    return [today - timedelta(days=i) for i in range(n - 1, -1, -1)]


def credits_per_day(org: Any, since: date) -> dict[date, int]:
    """Credits spent per UTC day: job debits less their refunds."""
    rows = (
        CreditEntry.objects.filter(
            organization=org,
            created_at__date__gte=since,
            kind__in=[CreditEntry.Kind.DEBIT, CreditEntry.Kind.REFUND],
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(amount=Sum("amount"))
    )
    return {row["day"]: -(row["amount"] or 0) for row in rows}


def bar_chart(days: list[date], values: dict[date, int]) -> dict[str, Any]:
    """Bars for an inline SVG chart (no JavaScript, no library), with labelled axes.

    The y axis runs from 0 to the highest day; the x axis names the first, middle and last day.
    """
    top = max([values.get(day, 0) for day in days] + [1])
    slot = CHART_WIDTH / len(days)
    bars = []
    for i, day in enumerate(days):
        value = values.get(day, 0)
        height = round(value / top * (CHART_HEIGHT - 20), 1)
        bars.append(
            {
                "x": round(i * slot + 1, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "width": round(slot - 2, 1),
                "height": height,
                "day": day,
                "value": value,
            }
        )
    ends = [(0, "start"), (len(days) // 2, "middle"), (len(days) - 1, "end")]
    ticks = {i: anchor for i, anchor in ends if 0 <= i < len(days)}
    x_labels = [
        {
            "x": round(i * slot + (slot / 2 if anchor == "middle" else 0 if i == 0 else slot), 1),
            "day": days[i],
            "anchor": anchor,
        }
        for i, anchor in ticks.items()
    ]
    return {
        "bars": bars,
        "top": top,
        "top_y": 20,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "view_width": CHART_LEFT + CHART_WIDTH,
        "view_height": CHART_HEIGHT + CHART_BOTTOM,
        "x_labels": x_labels,
        "date_y": CHART_HEIGHT + 14,
        "title_y": CHART_HEIGHT + CHART_BOTTOM - 3,
        "title_x": CHART_LEFT + CHART_WIDTH / 2,
        "middle_y": CHART_HEIGHT / 2,
    }


@member_required
@require_safe
def usage(request: MemberRequest) -> HttpResponse:
    org = request.org
    days = days_back(timezone.now().date())
    images = images_per_day(org, days[0])
    credits = credits_per_day(org, days[0])
    ledger = Paginator(
        CreditEntry.objects.filter(organization=org)
        .select_related("job")
        .order_by("-created_at", "-pk"),
        LEDGER_PAGE_SIZE,
    ).get_page(request.GET.get("page"))
    return render(
        request,
        "billing/usage.html",
        {
            "org": org,
            "images_chart": bar_chart(days, images),
            "credits_chart": bar_chart(days, credits),
            "images_total": sum(images.values()),
            "credits_total": sum(credits.values()),
            "rows": [
                {"day": day, "images": images.get(day, 0), "credits": credits.get(day, 0)}
                for day in reversed(days)
            ],
            "ledger": ledger,
        },
    )
