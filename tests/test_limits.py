"""Plan limits at submit and in the worker's claim: images per day, the queue cap, fair share,
priority and the spam filter, through the HTTP API."""

from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from billing import counters, limits
from billing.models import Plan
from generation import jobs, tasks
from generation.models import DailyImages, Job
from generation.tasks import claim_next_job, run_next_job
from tests.helpers import make_tenant

# No worker runs here: answer `processing` at once instead of waiting for one.
pytestmark = pytest.mark.usefixtures("no_wait")
TEXT2IMG = "/api/v3/text2img"
prompts = itertools.count()


def body(tenant, **fields):
    """A small text2img body; each call a different prompt, so the spam filter stays out."""
    prompt = f"a cat {next(prompts)}"
    return {"key": tenant.key, "prompt": prompt, "width": 64, "height": 64, **fields}


def plan(slug: str, **limits_: object) -> None:
    Plan.objects.filter(slug=slug).update(requests_per_minute=1000, **limits_)


def statuses(job_ids) -> list[str]:
    return [Job.objects.get(pk=pk).status for pk in job_ids]


# Images per day


@pytest.mark.django_db
def test_it_counts_images_not_requests_against_the_daily_limit(api, free_tenant, demo_model):
    plan("free", images_per_day=5, max_samples=4)
    assert api.post(TEXT2IMG, body(free_tenant, samples=4))[0] == 200
    balance = Job.objects.get().organization.credit_balance

    response = api.raw(TEXT2IMG, json.dumps(body(free_tenant, samples=2)), "application/json")
    assert response.status_code == 429
    data = response.json()
    assert data["status"] == "error"
    assert data["message"] == "Daily image limit reached"
    assert "5 images per day" in data["tips"] and "4 used today" in data["tips"]
    midnight = (timezone.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    assert abs(int(response["Retry-After"]) - (midnight - timezone.now()).total_seconds()) < 5
    assert Job.objects.count() == 1
    free_tenant.org.refresh_from_db()
    assert free_tenant.org.credit_balance == balance

    assert api.post(TEXT2IMG, body(free_tenant, samples=1))[0] == 200
    assert api.post(TEXT2IMG, body(free_tenant, samples=1))[0] == 429


@pytest.mark.django_db
def test_failed_canceled_and_yesterdays_jobs_do_not_count(api, free_tenant, demo_model):
    plan("free", images_per_day=2)
    first = api.post(TEXT2IMG, body(free_tenant))[1]["id"]
    second = api.post(TEXT2IMG, body(free_tenant))[1]["id"]
    assert api.post(TEXT2IMG, body(free_tenant))[0] == 429

    # The worker gives up on one (tasks.py fails a job through finish()), a client cancels one.
    jobs.finish(Job.objects.filter(pk=first), first, status=Job.Status.FAILED, error="broken")
    third = api.post(TEXT2IMG, body(free_tenant))[1]["id"]
    assert api.post(TEXT2IMG, body(free_tenant))[0] == 429
    jobs.cancel(Job.objects.get(pk=third))
    assert api.post(TEXT2IMG, body(free_tenant))[0] == 200
    assert api.post(TEXT2IMG, body(free_tenant))[0] == 429

    # Midnight passes: the day's jobs, and its count, are yesterday's.
    a_day_passes(free_tenant.org)
    assert [api.post(TEXT2IMG, body(free_tenant))[0] for _ in range(3)] == [200, 200, 429]
    assert statuses([second]) == [Job.Status.QUEUED]


def a_day_passes(org) -> None:
    """Move the organization's jobs and its daily counts a day back, as the clock would."""
    for job in Job.objects.for_org(org):
        Job.objects.filter(pk=job.pk).update(created_at=job.created_at - timedelta(days=1))
    for row in DailyImages.objects.filter(organization=org).order_by("day"):
        DailyImages.objects.filter(pk=row.pk).update(day=row.day - timedelta(days=1))


@pytest.mark.django_db
def test_the_pages_show_the_days_running_totals_without_reading_the_jobs(
    api, free_tenant, demo_model
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from generation import quotas

    plan("free", concurrent_jobs=10)
    assert [api.post(TEXT2IMG, body(free_tenant))[0] for _ in range(2)] == [200, 200]
    a_day_passes(free_tenant.org)
    assert api.post(TEXT2IMG, body(free_tenant))[0] == 200
    today = quotas.usage_day(timezone.now())
    yesterday = today - timedelta(days=1)
    with CaptureQueriesContext(connection) as queries:
        shown = quotas.images_today(free_tenant.org)
        per_day = quotas.images_per_day(free_tenant.org, yesterday)
    assert (shown, per_day) == (1, {yesterday: 2, today: 1})
    # A busy tenant's month is thousands of jobs: the pages read one row per day instead.
    assert len(queries) == 2
    assert not any(Job._meta.db_table in query["sql"] for query in queries), (
        queries.captured_queries
    )


@pytest.mark.django_db
def test_a_plan_without_a_daily_cap_is_not_counted(api, free_tenant, demo_model):
    plan("free", images_per_day=None)
    Plan.objects.filter(slug="free").update(concurrent_jobs=10)
    assert all(api.post(TEXT2IMG, body(free_tenant))[0] == 200 for _ in range(60))


# The queue cap


@pytest.mark.django_db
def test_more_than_ten_times_the_concurrent_jobs_waiting_is_429(api, free_tenant, demo_model):
    plan("free", concurrent_jobs=1, images_per_day=None)
    assert [api.post(TEXT2IMG, body(free_tenant))[0] for _ in range(10)] == [200] * 10

    response = api.raw(TEXT2IMG, json.dumps(body(free_tenant)), "application/json")
    assert response.status_code == 429
    assert response.json()["message"] == "Too many queued jobs"
    assert "10 jobs waiting" in response.json()["tips"]
    assert response["Retry-After"]
    assert Job.objects.count() == 10

    # A running job is no longer waiting: there is room for one more.
    assert claim_next_job() is not None
    assert api.post(TEXT2IMG, body(free_tenant))[0] == 200
    assert api.post(TEXT2IMG, body(free_tenant))[0] == 429


@pytest.mark.django_db
def test_the_queue_cap_is_per_tenant(api, free_tenant, tenant, demo_model):
    plan("free", concurrent_jobs=1, images_per_day=None)
    for _ in range(10):
        api.post(TEXT2IMG, body(free_tenant))
    assert api.post(TEXT2IMG, body(free_tenant))[0] == 429
    assert api.post(TEXT2IMG, body(tenant))[0] == 200


# Fair share and priority (the worker's claim)


@pytest.mark.django_db
def test_a_premium_job_queued_after_a_free_one_runs_first(api, free_tenant, tenant, demo_model):
    plan("free")
    free_job = api.post(TEXT2IMG, body(free_tenant))[1]["id"]
    premium_job = api.post(TEXT2IMG, body(tenant))[1]["id"]
    assert [claim_next_job().pk, claim_next_job().pk] == [premium_job, free_job]


@pytest.mark.django_db
def test_a_tenant_runs_at_most_its_concurrent_jobs_and_its_backlog_starves_nobody(api, demo_model):
    plan("free", concurrent_jobs=2, images_per_day=None)
    busy = make_tenant("busy", "free")
    quiet = make_tenant("quiet", "free")
    backlog = [api.post(TEXT2IMG, body(busy))[1]["id"] for _ in range(6)]
    late = api.post(TEXT2IMG, body(quiet))[1]["id"]

    # Three workers ask: the busy tenant's two oldest, then the quiet tenant's job, though
    # four of the busy tenant's jobs are older and of the same priority.
    claimed = [claim_next_job().pk for _ in range(3)]
    assert claimed == [backlog[0], backlog[1], late]
    assert claim_next_job() is None
    assert statuses(backlog[2:]) == ["queued"] * 4

    # One of its jobs ends: the next one of the same tenant may run, and only one.
    Job.objects.filter(pk=backlog[0]).update(status=Job.Status.SUCCESS)
    assert claim_next_job().pk == backlog[2]
    assert claim_next_job() is None


@pytest.mark.django_db
def test_the_claim_reads_the_limit_from_the_plan_row(api, free_tenant, demo_model):
    plan("free", concurrent_jobs=1, images_per_day=None)
    jobs = [api.post(TEXT2IMG, body(free_tenant))[1]["id"] for _ in range(3)]
    assert claim_next_job().pk == jobs[0]
    assert claim_next_job() is None
    Plan.objects.filter(slug="free").update(concurrent_jobs=3)
    assert [claim_next_job().pk, claim_next_job().pk] == jobs[1:]


@pytest.mark.django_db(transaction=True)
def test_a_job_held_back_by_fair_share_runs_when_the_tenants_job_ends(
    demo_model, free_tenant, monkeypatch
):
    """No task is lost: the worker that ends a job enqueues a run for the ones that wait."""
    from django.test import Client
    from django_q.conf import Conf

    plan("free", concurrent_jobs=1)
    client = Client()
    ids = []
    for _ in range(2):
        response = client.post(TEXT2IMG, body(free_tenant), content_type="application/json")
        ids.append(response.json()["id"])
    # From here on, enqueued tasks run at once, as a free worker would pick them up.
    monkeypatch.setattr(Conf, "SYNC", True)

    real_execute = tasks.execute
    while_first_runs = []

    def execute(job):
        if job.pk == ids[0]:
            # A second worker takes a task while the first job runs: the tenant is at its
            # limit, so it runs nothing and the second job keeps waiting.
            while_first_runs.append((run_next_job(), statuses(ids)))
        real_execute(job)

    monkeypatch.setattr(tasks, "execute", execute)
    assert run_next_job() == ids[0]
    assert while_first_runs == [(None, ["processing", "queued"])]
    assert statuses(ids) == ["success", "success"]


# The spam filter


@pytest.mark.django_db
def test_the_same_body_within_30_seconds_is_refused_and_not_charged(
    api, tenant, outsider, demo_model, monkeypatch
):
    request = body(tenant, model_id="demo-sd15")
    assert api.post(TEXT2IMG, request)[0] == 200
    tenant.org.refresh_from_db()
    balance = tenant.org.credit_balance

    response = api.raw(TEXT2IMG, json.dumps(request), "application/json")
    assert response.status_code == 429
    data = response.json()
    assert (data["status"], data["message"]) == ("error", "Rate limit exceeded")
    assert "same request" in data["tips"]
    assert 1 <= int(response["Retry-After"]) <= 31
    # The key is not part of the request: in a header, it is the same request.
    headers = {"key": tenant.key}
    without_key = {k: v for k, v in request.items() if k != "key"}
    assert api.post(TEXT2IMG, without_key, **headers)[0] == 429
    assert Job.objects.count() == 1
    tenant.org.refresh_from_db()
    assert tenant.org.credit_balance == balance

    # Another body, or the same body from another tenant or to another endpoint, is new.
    assert api.post(TEXT2IMG, {**request, "seed": 7})[0] == 200
    assert api.post(TEXT2IMG, {**request, "key": outsider.key})[0] == 200
    assert api.post("/api/v4/dreambooth", request)[0] == 200

    # Thirty seconds later it is a new request.
    later = time.time() + 31
    monkeypatch.setattr(counters, "time", SimpleNamespace(time=lambda: later))
    assert api.post(TEXT2IMG, request)[0] == 200


@pytest.mark.django_db
def test_a_refused_request_does_not_block_its_corrected_retry(api, free_tenant, demo_model):
    plan("free", images_per_day=0)
    request = body(free_tenant)
    # A bad body is a 400 each time, never a duplicate.
    bad = {**request, "width": 65}
    assert [api.post(TEXT2IMG, bad)[0] for _ in range(2)] == [400, 400]
    # Refused by a limit after the spam filter let it through: the claim is given back.
    assert api.post(TEXT2IMG, request)[1]["message"] == "Daily image limit reached"
    plan("free", images_per_day=10)
    assert api.post(TEXT2IMG, request)[0] == 200
    assert api.post(TEXT2IMG, request)[1]["message"] == "Rate limit exceeded"


def test_the_fingerprint_ignores_the_key_and_the_order_of_fields():
    a = limits.body_fingerprint({"key": "k1", "prompt": "x", "seed": 1}, "/api/v3/text2img")
    b = limits.body_fingerprint({"seed": 1, "prompt": "x", "key": "k2"}, "/api/v3/text2img")
    assert a == b
    assert a != limits.body_fingerprint({"prompt": "x", "seed": 2}, "/api/v3/text2img")
    assert a != limits.body_fingerprint({"prompt": "x", "seed": 1}, "/api/v3/img2img")
    assert limits.body_fingerprint(["not", "an", "object"]) is None
