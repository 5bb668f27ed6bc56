"""manage.py plan set --org <slug> --plan <slug>"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import ledger
from billing.management.commands.credits import organization
from billing.models import Plan


class Command(BaseCommand):
    help = "Put an organization on a plan (its monthly credits are granted at once)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        set_ = sub.add_parser("set", help="Change the organization's plan.")
        set_.add_argument("--org", required=True, help="Organization slug")
        set_.add_argument("--plan", required=True, help="Plan slug")

    def handle(self, *args: Any, **options: Any) -> None:
        org = organization(options["org"])
        plan = Plan.objects.filter(slug=options["plan"]).first()
        if plan is None:
            slugs = ", ".join(Plan.objects.values_list("slug", flat=True))
            raise CommandError(f"No plan {options['plan']!r}; plans are: {slugs}")
        current = org.plan.slug
        try:
            entry = ledger.change_plan(org, plan)
        except ledger.BalanceLimitExceeded as exc:
            # change_plan moves the plan and grants in one transaction: neither happened.
            raise CommandError(f"{org.slug} stays on the {current} plan: {exc}") from exc
        granted = f", granted {entry.amount} credits" if entry else ""
        self.stdout.write(f"{org.slug} is on the {plan.slug} plan{granted}")
