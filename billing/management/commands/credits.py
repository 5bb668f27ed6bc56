"""manage.py credits grant --org <slug> --amount <n> | set --org <slug> --balance <n> | balance"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Organization
from billing import ledger


def organization(slug: str) -> Organization:
    """The organization with this slug, or a CommandError naming it."""
    org = Organization.objects.filter(slug=slug).first()
    if org is None:
        raise CommandError(f"No organization {slug!r}")
    return org


class Command(BaseCommand):
    help = "Grant credits, set or show an organization's credit balance."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        grant = sub.add_parser("grant", help="Add credits (one grant entry).")
        grant.add_argument("--org", required=True, help="Organization slug")
        grant.add_argument(
            "--amount", required=True, type=int, help=f"Credits to add (1 to {ledger.MAX_BALANCE})"
        )
        grant.add_argument("--note", default="", help="Why, for the ledger")
        set_ = sub.add_parser("set", help="Make the balance exactly this (one adjustment entry).")
        set_.add_argument("--org", required=True, help="Organization slug")
        set_.add_argument(
            "--balance",
            required=True,
            type=int,
            help=f"The new balance (0 to {ledger.MAX_BALANCE})",
        )
        set_.add_argument("--note", default="", help="Why, for the ledger")
        show = sub.add_parser("balance", help="Print the balance (alone on the last line).")
        show.add_argument("--org", required=True, help="Organization slug")

    def handle(self, *args: Any, **options: Any) -> None:
        org = organization(options["org"])
        action = options["action"]
        if action == "grant":
            amount = options["amount"]
            if not 0 < amount <= ledger.MAX_BALANCE:
                raise CommandError(
                    f"--amount must be 1 to {ledger.MAX_BALANCE} credits, not {amount}"
                )
            note = options["note"] or "Granted by staff"
            try:
                ledger.grant(org, amount, f"manual:{org.pk}:{uuid.uuid4().hex}", note=note)
            except ledger.BalanceLimitExceeded as exc:
                raise CommandError(f"Nothing granted to {org.slug}: {exc}") from exc
            self.stdout.write(f"Granted {amount} credits to {org.slug}")
        elif action == "set":
            new_balance = options["balance"]
            if not 0 <= new_balance <= ledger.MAX_BALANCE:
                raise CommandError(
                    f"--balance must be 0 to {ledger.MAX_BALANCE} credits, not {new_balance}"
                )
            note = options["note"] or "Set by staff"
            entry = ledger.set_balance(org, new_balance, note=note)
            if entry is None:
                self.stdout.write(f"{org.slug} already has {new_balance} credits")
            else:
                self.stdout.write(f"Adjusted {org.slug} by {entry.amount:+d} credits")
        self.stdout.write(str(ledger.balance(org)))
