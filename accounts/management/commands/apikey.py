"""manage.py apikey create --org <slug> [--plan <slug>] | apikey revoke --key <key>"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import KEY_NAME_LENGTH, ApiKey
from accounts.services import check_slug, get_or_create_organization, has_control_characters
from billing import ledger
from billing.models import Plan


class Command(BaseCommand):
    help = "Create or revoke API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Print a new key alone on stdout.")
        create.add_argument("--org", required=True, help="Organization slug (created if new)")
        create.add_argument("--plan", help="Put the organization on this plan")
        create.add_argument("--name", default="", help="A label for the key")
        revoke = sub.add_parser("revoke", help="Revoke a key.")
        revoke.add_argument("--key", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "create":
            self.create(options["org"], options["plan"], options["name"])
        else:
            key = ApiKey.objects.for_raw_key(options["key"].strip())
            if key is None:
                raise CommandError("No live key matches.")
            key.revoke()
            self.stderr.write(f"Revoked key {key.prefix}… of {key.organization.slug}")

    def create(self, slug: str, plan: str | None, name: str) -> None:
        """Check every input, then create the organization (if new) and its key, or neither."""
        plans = list(Plan.objects.values_list("slug", flat=True))
        if plan and plan not in plans:
            raise CommandError(f"No plan {plan!r}; plans are: {', '.join(plans)}")
        try:
            check_slug(slug)
        except ValueError as exc:
            raise CommandError(f"--org {exc}") from None
        if len(name) > KEY_NAME_LENGTH:
            raise CommandError(f"--name has at most {KEY_NAME_LENGTH} characters, not {len(name)}")
        if has_control_characters(name):
            raise CommandError("--name cannot hold line breaks, tabs or other control characters")
        try:
            with transaction.atomic():
                org = get_or_create_organization(slug, plan)
                _, raw = ApiKey.objects.issue(org, name=name)
        except ledger.BalanceLimitExceeded as exc:
            raise CommandError(f"{slug} stays on its plan, and no key was made: {exc}") from exc
        self.stdout.write(raw)
