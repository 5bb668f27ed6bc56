"""GET /api/v1/jobs/<id>, POST …/cancel and DELETE …/outputs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from django.core.files.storage import default_storage
from django.utils import timezone

from accounts.models import ApiKey, Membership, User
from billing.models import CreditEntry
from generation.models import Job, OutputImage
from tests.api.jobs.conftest import clone, local_path
from tests.helpers import Tenant
from tests.test_private_media import s3_storage  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def balance(tenant) -> int:
    tenant.org.refresh_from_db()
    return tenant.org.credit_balance


def test_it_answers_one_job(jobs_api, tenant, submit, sync_queue, client):
    job_id = submit(tenant, track_id="order-17")
    status, job = jobs_api.get(f"/api/v1/jobs/{job_id}", tenant.key)
    assert status == 200, job
    assert (job["id"], job["status"], job["track_id"]) == (job_id, "success", "order-17")
    assert job["started_at"] and job["finished_at"] and job["generation_time"] > 0
    image = client.get(local_path(job["outputs"][0]["url"]))
    assert image.status_code == 200


def test_a_missing_job_is_a_404(jobs_api, tenant):
    assert jobs_api.get("/api/v1/jobs/999999", tenant.key) == (
        404,
        {"error": {"code": "not_found", "message": "No such job.", "field": None}},
    )


def test_a_failed_job_says_why_without_the_workers_exception(jobs_api, tenant, submit, no_wait):
    job_id = submit(tenant)
    Job.objects.filter(pk=job_id).update(
        status=Job.Status.FAILED, error="OSError: /srv/models/secret/unet missing"
    )
    _, job = jobs_api.get(f"/api/v1/jobs/{job_id}", tenant.key)
    assert job["status"] == "failed"
    assert job["error"] == "The generation failed; its credits were refunded."


# --- cancel


def test_cancel_cancels_a_queued_job_and_refunds_it(jobs_api, tenant, submit, no_wait):
    before = balance(tenant)
    job_id = submit(tenant)
    cost = Job.objects.get(pk=job_id).cost
    assert balance(tenant) == before - cost

    status, job = jobs_api.post(f"/api/v1/jobs/{job_id}/cancel", tenant.key)

    assert status == 200, job
    assert (job["id"], job["status"], job["refunded"]) == (job_id, "canceled", True)
    assert job["error"] == "Canceled by the client" and job["eta"] is None
    assert balance(tenant) == before
    entries = CreditEntry.objects.filter(job_id=job_id).order_by("pk")
    assert [(e.kind, e.amount) for e in entries] == [("debit", -cost), ("refund", cost)]


def test_cancel_takes_the_key_in_the_body_like_modelslab(api, tenant, submit, no_wait):
    job_id = submit(tenant)
    status, job = api.post(f"/api/v1/jobs/{job_id}/cancel", {"key": tenant.key})
    assert (status, job["status"]) == (200, "canceled")


def test_cancel_stops_a_processing_job(jobs_api, tenant, submit, no_wait):
    job_id = submit(tenant)
    lease = timezone.now() + timedelta(minutes=5)
    Job.objects.filter(pk=job_id).update(status=Job.Status.PROCESSING, lease_expires_at=lease)
    status, job = jobs_api.post(f"/api/v1/jobs/{job_id}/cancel", tenant.key)
    assert (status, job["status"], job["refunded"]) == (200, "canceled", True)


def test_cancel_of_a_finished_job_is_a_409_and_refunds_nothing(
    jobs_api, tenant, submit, sync_queue
):
    job_id = submit(tenant)
    before = balance(tenant)
    status, body = jobs_api.post(f"/api/v1/jobs/{job_id}/cancel", tenant.key)
    assert status == 409, body
    assert body["error"] == {
        "code": "conflict",
        "message": f"Job {job_id} has already finished (success); it cannot be canceled.",
        "field": None,
    }
    assert balance(tenant) == before
    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCESS
    # Twice is the same: the second cancel finds the job canceled.
    queued = clone(job_id, status=Job.Status.QUEUED)
    assert jobs_api.post(f"/api/v1/jobs/{queued.pk}/cancel", tenant.key)[0] == 200
    status, body = jobs_api.post(f"/api/v1/jobs/{queued.pk}/cancel", tenant.key)
    assert status == 409 and "(canceled)" in body["error"]["message"]


def test_cancel_with_a_body_that_is_not_json_is_a_400(client, tenant, submit, no_wait):
    job_id = submit(tenant)
    response = client.post(
        f"/api/v1/jobs/{job_id}/cancel",
        data=b'{"key": ',
        content_type="application/json",
        headers={"Authorization": f"Bearer {tenant.key}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert Job.objects.get(pk=job_id).status == Job.Status.QUEUED


# --- delete outputs


def stored(name: str) -> bool:
    return default_storage.exists(name)


def test_delete_outputs_removes_the_stored_images_and_their_links(
    jobs_api, tenant, submit, sync_queue, client, media_dir
):
    job_id = submit(tenant, samples=2)
    _, job = jobs_api.get(f"/api/v1/jobs/{job_id}", tenant.key)
    links = [output["url"] for output in job["outputs"]]
    names = list(OutputImage.objects.filter(job_id=job_id).values_list("path", flat=True))
    assert len(names) == 2 and all(stored(name) for name in names)
    folder = Path(media_dir) / "generations" / str(tenant.org.pk) / str(job_id)
    assert folder.is_dir()

    status, job = jobs_api.delete(f"/api/v1/jobs/{job_id}/outputs", tenant.key)

    assert status == 200, job
    assert job["outputs"] == [] and job["outputs_deleted_at"] is not None
    assert job["status"] == "success"
    assert not any(stored(name) for name in names)
    assert not folder.exists()
    for link in links:
        assert client.get(local_path(link)).status_code == 404
    # What every other route shows afterwards.
    _, again = jobs_api.get(f"/api/v1/jobs/{job_id}", tenant.key)
    assert again["outputs"] == []
    fetch = client.post(
        f"/api/v3/fetch/{job_id}", data={"key": tenant.key}, content_type="application/json"
    ).json()
    assert fetch["output"] == [] and fetch["message"] == "Outputs expired"
    # Deleting again changes nothing and is no error.
    status, same = jobs_api.delete(f"/api/v1/jobs/{job_id}/outputs", tenant.key)
    assert status == 200 and same["outputs_deleted_at"] == job["outputs_deleted_at"]


@pytest.mark.parametrize("state", [Job.Status.QUEUED, Job.Status.PROCESSING])
def test_delete_outputs_of_an_unfinished_job_is_a_409(jobs_api, tenant, submit, no_wait, state):
    job_id = submit(tenant)
    lease = timezone.now() + timedelta(minutes=5)
    Job.objects.filter(pk=job_id).update(status=state, lease_expires_at=lease)
    status, body = jobs_api.delete(f"/api/v1/jobs/{job_id}/outputs", tenant.key)
    assert status == 409, body
    assert body["error"]["code"] == "conflict"
    assert f"is {state}" in body["error"]["message"]
    assert Job.objects.get(pk=job_id).expired_at is None


@pytest.mark.usefixtures("s3_storage")
def test_delete_outputs_on_s3_removes_the_objects(
    jobs_api, tenant, submit, sync_queue, s3_endpoint, settings
):
    job_id = submit(tenant)
    _, job = jobs_api.get(f"/api/v1/jobs/{job_id}", tenant.key)
    url = job["outputs"][0]["url"]
    assert requests.get(url, timeout=10).status_code == 200
    key = f"generations/{tenant.org.pk}/{job_id}/0.png"

    status, job = jobs_api.delete(f"/api/v1/jobs/{job_id}/outputs", tenant.key)

    assert status == 200 and job["outputs"] == []
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=settings.S3_BUCKET, Key=key)
    assert missing.value.response["Error"]["Code"] == "404"
    assert requests.get(url, timeout=10).status_code == 404


# --- a plain member's key


def member_key(tenant: Tenant, email: str, role: str = Membership.Role.MEMBER) -> Tenant:
    """A key made by a member of `tenant`'s organization with `role`."""
    user = User.objects.create_user(email, "pw-123456789")
    Membership.objects.create(user=user, organization=tenant.org, role=role)
    _, raw = ApiKey.objects.issue(tenant.org, "theirs", created_by=user)
    return Tenant(tenant.org, raw)


def test_a_plain_members_key_cancels_and_clears_only_the_jobs_of_their_own_keys(
    jobs_api, tenant, submit, no_wait
):
    member = member_key(tenant, "member@example.com")
    others = submit(tenant)  # a key made on the command line
    mine = submit(member)
    status, body = jobs_api.post(f"/api/v1/jobs/{others}/cancel", member.key)
    assert (status, body["error"]["code"]) == (403, "permission_denied"), body
    assert "whose key submitted the job" in body["error"]["message"]
    assert Job.objects.get(pk=others).status == "queued"
    assert jobs_api.post(f"/api/v1/jobs/{mine}/cancel", member.key)[0] == 200
    assert jobs_api.delete(f"/api/v1/jobs/{others}/outputs", member.key)[0] == 403
    assert jobs_api.delete(f"/api/v1/jobs/{mine}/outputs", member.key)[0] == 200

    # An admin's key, like a key made on the command line, acts for the whole organization.
    admin = member_key(tenant, "admin@example.com", Membership.Role.ADMIN)
    assert jobs_api.post(f"/api/v1/jobs/{others}/cancel", admin.key)[0] == 200
    assert jobs_api.delete(f"/api/v1/jobs/{others}/outputs", admin.key)[0] == 200
