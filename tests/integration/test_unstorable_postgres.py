"""Page inputs PostgreSQL cannot store, on PostgreSQL: a message, a 404 or a 400, never a 500.

SQLite stores a NUL character, so the unit tests show what a person sees but cannot show the
500 PostgreSQL's refusal made. A subprocess points Django at a fresh PostgreSQL database and
sends each page a NUL where it used to reach the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import migrated_database
from tests.processes import python_json

pytestmark = pytest.mark.integration


def send_nul_everywhere() -> None:
    """The subprocess: each request's status, and what was stored."""
    import django

    django.setup()
    from django.test import Client
    from django.utils import timezone

    from accounts.models import ApiKey, Membership, Organization, User
    from accounts.services import get_or_create_organization
    from generation.models import WebhookDelivery

    org = get_or_create_organization("acme", "basic")
    owner = User.objects.create_user(
        "owner@example.com", "pw-123456789", email_verified_at=timezone.now()
    )
    Membership.objects.create(user=owner, organization=org, role=Membership.Role.OWNER)
    client = Client(raise_request_exception=False)
    client.force_login(owner)
    statuses = {
        "key name": client.post("/app/keys/", {"name": "lap\x00top"}).status_code,
        "rename": client.post("/app/settings/", {"action": "rename", "name": "Ac\x00me"}),
        "ping": client.post(
            "/app/settings/", {"action": "ping", "url": "https://hooks.example.com/a\x00b"}
        ),
        "checkout": client.post("/billing/checkout/plan/basic/", {"org": "acme\x00"}),
        "portal": client.post("/billing/portal/", {"org": "acme\x00"}),
        "last day": client.get("/app/history/?date_to=9999-12-31"),
    }
    anonymous = Client(raise_request_exception=False)
    anonymous.cookies["sessionid"] = "abc\x00def"
    statuses["cookie"] = anonymous.get("/accounts/login/")
    print(
        json.dumps(
            {
                "statuses": {
                    name: getattr(answer, "status_code", answer)
                    for name, answer in statuses.items()
                },
                "keys": ApiKey.objects.count(),
                "name": Organization.objects.get(pk=org.pk).name,
                "deliveries": WebhookDelivery.objects.count(),
            }
        )
    )


@pytest.fixture
def database(tmp_path: Path) -> Iterator[dict[str, str]]:
    with migrated_database(tmp_path) as env:
        yield env


def test_page_inputs_holding_nul_never_reach_postgresql(database):
    outcome = python_json(
        "from tests.integration.test_unstorable_postgres import send_nul_everywhere as run; run()",
        database,
    )
    statuses = outcome["statuses"]
    # The pages say what is wrong and go back to the form.
    assert statuses["key name"] == statuses["rename"] == statuses["ping"] == 302, outcome
    assert statuses["checkout"] == statuses["portal"] == 404, outcome
    assert statuses["last day"] == 200, outcome
    assert statuses["cookie"] == 400, outcome
    assert (outcome["keys"], outcome["deliveries"]) == (0, 0), outcome
    assert "\x00" not in outcome["name"], outcome
