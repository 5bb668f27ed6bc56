"""manage.py org suspend --org <slug> [--reason <text>] | org lift --org <slug>"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import abuse
from accounts.models import Organization
from accounts.services import has_control_characters


class Command(BaseCommand):
    help = "Suspend an organization or lift its suspension."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        suspend = sub.add_parser("suspend", help="Every key of the organization answers 403.")
        suspend.add_argument("--org", required=True, help="Organization slug")
        suspend.add_argument("--reason", default="Suspended by staff", help="Kept for staff")
        lift = sub.add_parser("lift", help="Lift the suspension and reset the strikes.")
        lift.add_argument("--org", required=True, help="Organization slug")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "suspend" and has_control_characters(options["reason"]):
            raise CommandError("--reason cannot hold line breaks, tabs or other control characters")
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"No organization {options['org']!r}.")
        if options["action"] == "suspend":
            abuse.suspend(org, options["reason"])
            self.stderr.write(f"Suspended {org.slug}: {org.suspension_reason}")
        else:
            abuse.lift_suspension(org)
            self.stderr.write(f"Lifted the suspension of {org.slug}; strikes reset to 0")
