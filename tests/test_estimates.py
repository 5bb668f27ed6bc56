"""A queued job's ETA: the work of the jobs ahead of it (summed by the database), then its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from generation import estimates
from generation.models import Job

pytestmark = pytest.mark.django_db


def job(org, model, status=Job.Status.QUEUED, minutes_ago=0, priority=0, **fields):
    params = {"width": 512, "height": 512, "samples": 1, "steps": 20}
    params.update(fields.pop("params", {}))
    made = Job.objects.create(
        organization=org, model=model, params=params, status=status, priority=priority, **fields
    )
    Job.objects.filter(pk=made.pk).update(
        created_at=timezone.now() - timedelta(minutes=minutes_ago)
    )
    made.refresh_from_db()
    return made


def test_a_queued_jobs_eta_adds_up_the_work_ahead_of_it(tenant, outsider, demo_model, monkeypatch):
    monkeypatch.setattr(estimates, "seconds_per_unit", lambda: 0.5)
    # Ahead: a half-done 1024x1024 job of 2 images (4 x 2 x 20 x 1/2 = 80 units), an older
    # queued job of another tenant (20 units; a small image counts as 512x512) and a newer one
    # of a higher priority (3 x 10 = 30 units).
    job(
        outsider.org,
        demo_model,
        Job.Status.PROCESSING,
        params={"width": 1024, "height": 1024, "samples": 2},
        progress_step=10,
        progress_total=20,
    )
    job(outsider.org, demo_model, minutes_ago=5, params={"width": 64, "height": 64})
    job(tenant.org, demo_model, priority=5, params={"samples": 3, "steps": 10})
    # Not ahead: a newer job of the same priority, and finished ones.
    job(tenant.org, demo_model)
    job(tenant.org, demo_model, Job.Status.SUCCESS, minutes_ago=9)
    mine = job(tenant.org, demo_model, minutes_ago=1, params={"steps": 4})
    assert estimates.eta(mine) == pytest.approx(0.5 * (80 + 20 + 30 + 4))


def test_a_processing_job_counts_only_what_it_has_left(tenant, demo_model, monkeypatch):
    monkeypatch.setattr(estimates, "seconds_per_unit", lambda: 1.0)
    running = job(
        tenant.org, demo_model, Job.Status.PROCESSING, progress_step=15, progress_total=20
    )
    assert estimates.eta(running) == pytest.approx(5)
    done = job(tenant.org, demo_model, Job.Status.SUCCESS)
    assert estimates.eta(done) == 0


def test_jobs_submitted_in_the_same_moment_share_one_read_of_the_queue(
    tenant, demo_model, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    job(tenant.org, demo_model, minutes_ago=5, params={"steps": 10})
    first = job(tenant.org, demo_model)
    second = job(tenant.org, demo_model)
    # The rate has its own cache, out of the count: read afresh now, so that one an earlier
    # test read almost RATE_CACHE_SECONDS ago cannot run out between the two ETAs below.
    monkeypatch.setattr(estimates, "_rate", (0.0, estimates.DEFAULT_SECONDS_PER_STEP))
    estimates.seconds_per_unit()
    with CaptureQueriesContext(connection) as queries:
        first_eta = estimates.eta(first)
    assert len(queries.captured_queries) == 1
    with CaptureQueriesContext(connection) as queries:
        assert estimates.eta(second) == first_eta  # the same queue ahead, read once
    assert queries.captured_queries == []
    # An older job's place is its own: it is summed for it.
    older = Job.objects.order_by("created_at").first()
    with CaptureQueriesContext(connection) as queries:
        estimates.eta(older)
    assert len(queries.captured_queries) == 1


def test_a_polled_job_keeps_its_estimate_for_the_rest_of_the_request(
    tenant, demo_model, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from generation.api.polling import retry_after

    monkeypatch.setattr(estimates, "seconds_per_unit", lambda: 1.0)
    job(tenant.org, demo_model, minutes_ago=5, params={"steps": 10})
    mine = job(tenant.org, demo_model, minutes_ago=1, params={"steps": 4})
    # The answer's eta, then its Retry-After: the queue ahead is summed once.
    with CaptureQueriesContext(connection) as queries:
        assert estimates.eta(mine) == pytest.approx(14)
        assert retry_after(mine) == 10
    assert len(queries.captured_queries) == 1
    # A change of state, or a second later, is estimated afresh.
    mine.progress_step = 1
    mine.status = Job.Status.PROCESSING
    mine.progress_total = 4
    assert estimates.eta(mine) == pytest.approx(3)
    mine.status = Job.Status.QUEUED
    with CaptureQueriesContext(connection) as queries:
        assert estimates.eta(mine) == pytest.approx(14)
        now = estimates.time.monotonic()
        monkeypatch.setattr(estimates.time, "monotonic", lambda: now + 1.5)
        assert estimates.eta(mine) == pytest.approx(14)
    assert len(queries.captured_queries) == 2
