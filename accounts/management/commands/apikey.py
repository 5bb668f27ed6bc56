"""manage.py apikey create --org <slug> [--plan <slug>] | apikey revoke --key <key>"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiKey
from accounts.services import get_or_create_organization
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
            plan = options["plan"]
            if plan and not Plan.objects.filter(slug=plan).exists():
                slugs = ", ".join(Plan.objects.values_list("slug", flat=True))
                raise CommandError(f"No plan {plan!r}; plans are: {slugs}")
            org = get_or_create_organization(options["org"], plan)
            _, raw = ApiKey.objects.issue(org, name=options["name"])
            self.stdout.write(raw)
        else:
            key = ApiKey.objects.for_raw_key(options["key"].strip())
            if key is None:
                raise CommandError("No live key matches.")
            key.revoke()
            self.stderr.write(f"Revoked key {key.prefix}… of {key.organization.slug}")
