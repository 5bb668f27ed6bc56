"""Every job API route, called by another organization, answers as if the job did not exist.

Three callers, as in tests/test_ownership.py: the owner and a member of one organization (each
with a key of their own) and an outsider.
"""

from __future__ import annotations

import pytest

from accounts.models import ApiKey
from generation.models import Job
from tests.helpers import Tenant, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)

ROUTES = [
    ("GET", "/api/v1/jobs/{}"),
    ("POST", "/api/v1/jobs/{}/cancel"),
    ("DELETE", "/api/v1/jobs/{}/outputs"),
]


@pytest.fixture
def callers(db: None) -> dict[str, str]:
    acme = make_tenant("acme")
    globex = make_tenant("globex")
    _, member = ApiKey.objects.issue(acme.org, name="member")
    return {"owner": acme.key, "member": member, "outsider": globex.key}


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_another_organizations_job_is_a_404_like_a_missing_one(
    jobs_api, callers, submit, no_wait, method, route
):
    job_id = submit(Tenant(None, callers["owner"]))

    theirs = jobs_api.call(method, route.format(job_id), callers["outsider"])
    missing = jobs_api.call(method, route.format(job_id + 999), callers["outsider"])

    assert theirs == missing
    assert theirs[0] == 404
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.QUEUED and job.expired_at is None
    # The member sees (and may act on) the organization's job.
    assert jobs_api.call(method, route.format(job_id), callers["member"])[0] in (200, 409)


def test_the_list_and_account_show_only_the_callers_organization(
    jobs_api, callers, submit, no_wait
):
    job_id = submit(Tenant(None, callers["owner"]))

    for name in ("owner", "member"):
        _, page = jobs_api.get("/api/v1/jobs", callers[name])
        assert [job["id"] for job in page["results"]] == [job_id]
    _, page = jobs_api.get("/api/v1/jobs", callers["outsider"])
    assert page == {"next": None, "previous": None, "results": []}
    _, account = jobs_api.get("/api/v1/account", callers["outsider"])
    assert account["organization"]["slug"] == "globex"
    assert account["today"]["jobs"] == 0 and account["jobs"]["queued"] == 0
