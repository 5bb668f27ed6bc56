"""GET /api/v1/jobs: the caller's jobs only, newest first, in cursor pages, with filters."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.utils import timezone

from generation.models import Job
from tests.api.jobs.conftest import clone, local_path

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_lists_the_callers_jobs_newest_first_with_their_details(
    jobs_api, tenant, outsider, submit, sync_queue
):
    older = submit(tenant)
    newer = submit(tenant, samples=2, seed=7)
    submit(outsider)

    status, page = jobs_api.get("/api/v1/jobs", tenant.key)

    assert status == 200, page
    assert [job["id"] for job in page["results"]] == [newer, older]
    assert page["next"] is None and page["previous"] is None
    job = page["results"][0]
    assert job["status"] == "success"
    assert job["kind"] == "text2img"
    assert job["model_id"] == "demo-sd15"
    assert job["progress"] == 1.0 and job["eta"] is None
    assert job["cost"] > 0 and job["refunded"] is False and job["error"] is None
    assert job["meta"]["seed"] == 7 and job["meta"]["n_samples"] == 2
    assert job["outputs_deleted_at"] is None
    assert [o["seed"] for o in job["outputs"]] == [7, 8]
    for output in job["outputs"]:
        assert output["url"].startswith("http://testserver/files/generations/")
        assert (output["width"], output["height"]) == (64, 64)


def test_the_links_are_absolute_from_the_configured_base_url(
    jobs_api, tenant, submit, sync_queue, settings, client
):
    settings.PICTOR_BASE_URL = "https://pictor.example.com"
    submit(tenant)
    status, page = jobs_api.get("/api/v1/jobs", tenant.key)
    url = page["results"][0]["outputs"][0]["url"]
    assert url.startswith("https://pictor.example.com/files/generations/")
    image = client.get(local_path(url))
    assert image.status_code == 200
    assert b"".join(image.streaming_content).startswith(b"\x89PNG")


def test_a_queued_job_shows_its_eta_and_no_outputs(jobs_api, tenant, submit, no_wait):
    job_id = submit(tenant)
    status, page = jobs_api.get("/api/v1/jobs", tenant.key)
    job = page["results"][0]
    assert (job["id"], job["status"]) == (job_id, "queued")
    assert job["eta"] is not None and job["eta"] > 0
    assert job["outputs"] == [] and job["finished_at"] is None


def test_it_pages_with_opaque_cursors_over_more_than_a_page(jobs_api, tenant, submit, no_wait):
    first = submit(tenant)
    start = timezone.now() - timedelta(hours=1)
    # Some share a creation time: the cursor still gives each job exactly once.
    ids = [first] + [
        clone(first, created_at=start + timedelta(seconds=i // 3)).pk for i in range(44)
    ]
    expected = sorted(Job.objects.filter(pk__in=ids).values_list("created_at", "pk"), reverse=True)

    seen, pages, url = [], 0, "/api/v1/jobs"
    while url:
        status, page = jobs_api.get(url, tenant.key)
        assert status == 200, page
        assert len(page["results"]) <= 20
        seen += [job["id"] for job in page["results"]]
        pages += 1
        url = page["next"] and local_path(page["next"])
    assert pages == 3
    assert seen == [pk for _created, pk in expected]

    # And back: the second page's `previous` is the first page.
    _, one = jobs_api.get("/api/v1/jobs", tenant.key)
    _, two = jobs_api.get(local_path(one["next"]), tenant.key)
    assert two["next"].startswith("http://testserver/api/v1/jobs?cursor=")
    _, back = jobs_api.get(local_path(two["previous"]), tenant.key)
    assert [j["id"] for j in back["results"]] == [j["id"] for j in one["results"]]


def test_page_size_is_bounded(jobs_api, tenant, submit, no_wait):
    first = submit(tenant)
    for _ in range(4):
        clone(first)
    status, page = jobs_api.get("/api/v1/jobs?page_size=2", tenant.key)
    assert status == 200 and len(page["results"]) == 2
    assert parse_qs(urlsplit(page["next"]).query)["page_size"] == ["2"]
    for bad in ("0", "101", "ten", "-1"):
        status, body = jobs_api.get(f"/api/v1/jobs?page_size={bad}", tenant.key)
        assert status == 400, bad
        assert body["error"]["code"] == "invalid_request"
        assert body["error"]["field"] == "page_size"


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        base64.b64encode(b"p=not-a-date").decode(),
        base64.b64encode(b"p=2026-01-01 00:00:00").decode(),  # no time zone
        base64.b64encode(b"o=abc&r=1").decode(),
        base64.b64encode("p=\ud800".encode("utf-8", "surrogatepass")).decode(),
    ],
)
def test_a_cursor_the_client_made_up_is_a_400(jobs_api, tenant, cursor):
    status, body = jobs_api.get(f"/api/v1/jobs?{urlencode({'cursor': cursor})}", tenant.key)
    assert status == 400, body
    assert body["error"]["field"] == "cursor"
    assert "cursor is not valid" in body["error"]["message"]


def test_it_filters_by_status_kind_model_and_creation_time(
    jobs_api, tenant, submit, no_wait, demo_models
):
    queued = submit(tenant)
    now = timezone.now()
    failed = clone(queued, status=Job.Status.FAILED, created_at=now - timedelta(days=2))
    other_model = clone(queued, model=demo_models["demo-sd15-inpaint"], kind="inpaint")

    def ids(query: str) -> list[int]:
        status, page = jobs_api.get(f"/api/v1/jobs?{query}", tenant.key)
        assert status == 200, page
        return [job["id"] for job in page["results"]]

    assert ids("status=failed") == [failed.pk]
    assert ids("status=queued") == [other_model.pk, queued]
    assert ids("status=success") == []
    assert ids("kind=inpaint") == [other_model.pk]
    assert ids("model=demo-sd15-inpaint") == [other_model.pk]
    assert ids("model=no-such-model") == []
    day_ago = urlencode({"created_after": (now - timedelta(days=1)).isoformat()})
    assert failed.pk not in ids(day_ago)
    before = urlencode({"created_before": (now - timedelta(days=1)).isoformat()})
    assert ids(before) == [failed.pk]
    assert ids("created_after=2000-01-01T00:00:00Z&status=failed") == [failed.pk]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("kind=video", "kind"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-45T00:00:00Z", "created_before"),
        (
            "created_after=2026-02-01T00:00:00Z&created_before=2026-01-01T00:00:00Z",
            "created_before",
        ),
        ("model=" + "x" * 101, "model"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(jobs_api, tenant, query, field):
    status, body = jobs_api.get(f"/api/v1/jobs?{query}", tenant.key)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["field"] == field
    assert body["error"]["message"].startswith(f"{field}: ")


def test_without_a_key_it_is_a_401_in_the_job_apis_shape(jobs_api, tenant):
    assert jobs_api.get("/api/v1/jobs", None) == (
        401,
        {"error": {"code": "invalid_api_key", "message": "Invalid Api Key", "field": None}},
    )
    status, body = jobs_api.get("/api/v1/jobs", "pct_" + "x" * 40)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_an_unknown_route_or_id_is_a_404_in_the_job_apis_shape(jobs_api, tenant):
    for path in ("/api/v1/nothing", "/api/v1/jobs/abc"):
        status, body = jobs_api.get(path, tenant.key)
        assert status == 404, path
        assert body["error"]["code"] == "not_found"
    status, body = jobs_api.post("/api/v1/jobs", tenant.key)
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
