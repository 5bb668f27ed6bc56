"""Two owners changing each other's role at the same moment on PostgreSQL: one owner stays.

Another transaction holds the organization's memberships while it demotes one owner, as the
other owner's own request would; the team page's change waits for it, reads the roles again,
and is refused, instead of demoting the owner who remains.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import migrated_database
from tests.processes import python_json

pytestmark = pytest.mark.integration

RUN = """
import json, os, threading, time
import django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
from django.utils import timezone
import psycopg
from accounts.models import Membership, User
from accounts.services import get_or_create_organization

setup_test_environment()
org = get_or_create_organization("duo", "free")
people = {}
for name in ("alice", "bob"):
    user = User.objects.create_user(f"{name}@duo.example", "pw", email_verified_at=timezone.now())
    people[name] = Membership.objects.create(user=user, organization=org, role="owner")
answer = {}

def bob_demotes_alice():
    client = Client()
    client.force_login(people["bob"].user)
    path = f"/app/team/{people['alice'].pk}/"
    answer["status"] = client.post(path, {"action": "role", "role": "member"}).status_code

with psycopg.connect(os.environ["DATABASE_URL"]) as other:
    other.execute(
        "SELECT id FROM accounts_membership WHERE organization_id = %s FOR UPDATE", (org.pk,)
    )
    bob = threading.Thread(target=bob_demotes_alice)
    bob.start()
    time.sleep(1.5)  # bob's request is now waiting on the rows this transaction holds
    demote = "UPDATE accounts_membership SET role = 'member' WHERE id = %s"
    other.execute(demote, (people["bob"].pk,))
    other.commit()
    bob.join(60)
roles = dict(Membership.objects.filter(organization=org).values_list("user__email", "role"))
print(json.dumps({"status": answer.get("status"), "roles": roles}))
"""


def test_two_owners_demoting_each_other_at_once_leave_one_owner(tmp_path):
    with migrated_database(tmp_path) as env:
        result = python_json(RUN, env)
    assert result["roles"] == {"alice@duo.example": "owner", "bob@duo.example": "member"}, result
    # Bob was no longer an owner once his turn came: only an owner may change an owner.
    assert result["status"] == 403, result
