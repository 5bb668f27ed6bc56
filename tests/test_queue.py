"""Claiming by priority then age, leases, the reaper and fencing of a lost worker's result."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from billing.models import Plan
from generation import queue, service
from generation.engine.request import GenerationRequest
from generation.jobs import reap_expired_jobs
from generation.models import Job
from generation.tasks import claim_next_job, execute, run_next_job
from tests.helpers import make_tenant

pytestmark = pytest.mark.django_db(transaction=True)
REDIS = os.environ.get("PICTOR_TEST_REDIS", "redis://127.0.0.1:6379") + "/0"


def queue_job(tenant, demo_model, seed=1):
    req = GenerationRequest(prompt="a", model_id="demo-sd15", width=64, height=64, seed=seed)
    return service.submit(req, tenant.org, demo_model)


def test_it_claims_by_priority_then_age(demo_model, settings):
    # Room for both free jobs at once: fair share is tested in tests/test_limits.py.
    Plan.objects.filter(slug="free").update(concurrent_jobs=2)
    free = make_tenant("f", "free")
    premium = make_tenant("p", "premium")
    first_free = queue_job(free, demo_model)
    second_free = queue_job(free, demo_model)
    premium_job = queue_job(premium, demo_model)
    assert [claim_next_job().pk for _ in range(3)] == [
        premium_job.pk,
        first_free.pk,
        second_free.pk,
    ]
    assert claim_next_job() is None


def test_a_claim_sets_a_lease_and_counts_the_attempt(tenant, demo_model, settings):
    settings.PICTOR_JOB_LEASE = 30
    job = queue_job(tenant, demo_model)
    claimed = claim_next_job()
    assert claimed.pk == job.pk
    assert claimed.status == Job.Status.PROCESSING
    assert claimed.attempts == 1
    remaining = (claimed.lease_expires_at - timezone.now()).total_seconds()
    assert 25 < remaining <= 30


def test_the_reaper_requeues_then_fails_after_the_last_attempt(tenant, demo_model, settings):
    settings.PICTOR_JOB_MAX_ATTEMPTS = 2
    job = queue_job(tenant, demo_model)
    past = timezone.now() - timedelta(seconds=1)
    claim_next_job()
    assert reap_expired_jobs() == 0
    Job.objects.filter(pk=job.pk).update(lease_expires_at=past)
    assert reap_expired_jobs() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.QUEUED, 1)
    claim_next_job()
    Job.objects.filter(pk=job.pk).update(lease_expires_at=past)
    assert reap_expired_jobs() == 1
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "stopped answering" in job.error


def test_a_worker_that_lost_its_lease_does_not_finish_the_job(tenant, demo_model):
    job = queue_job(tenant, demo_model)
    stale = claim_next_job()
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    reap_expired_jobs()
    assert run_next_job() == job.pk
    execute(stale)  # the first worker wakes up late
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESS
    assert job.attempts == 2
    assert job.outputs.count() == 1


def test_a_task_reaps_expired_leases_after_its_own_job(tenant, demo_model):
    # A worker died holding `lost`. The next task claims the waiting job first, so no pickup
    # waits on the reaper, then queues `lost` again, which the task after it runs.
    lost = queue_job(tenant, demo_model)
    claim_next_job()
    Job.objects.filter(pk=lost.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    waiting = queue_job(tenant, demo_model, seed=2)
    assert run_next_job() == waiting.pk
    lost.refresh_from_db()
    assert (lost.status, lost.lease_expires_at, lost.worker) == (Job.Status.QUEUED, None, "")
    assert run_next_job() == lost.pk
    lost.refresh_from_db()
    assert (lost.status, lost.attempts) == (Job.Status.SUCCESS, 2)


def test_progress_is_saved_while_a_job_runs(tenant, demo_model, monkeypatch):
    import generation.tasks as tasks
    from generation.engine import runner

    seen = []
    monkeypatch.setattr(tasks, "PROGRESS_WRITE_INTERVAL", 0)
    job = queue_job(tenant, demo_model)
    claimed = claim_next_job()
    real_generate = runner.generate

    def recording_generate(req, path, *, progress=None, **kw):
        def progress_and_look(step, total):
            progress(step, total)
            row = Job.objects.get(pk=job.pk)
            seen.append((row.progress_step, row.progress_total))

        return real_generate(req, path, progress=progress_and_look, **kw)

    monkeypatch.setattr(runner, "generate", recording_generate)
    execute(claimed)
    assert seen[0] == (1, 21)
    assert seen[-1] == (21, 21)
    assert len(seen) == 21


def test_migrate_registers_the_sweep_schedule():
    schedule = Schedule.objects.get(func="generation.tasks.sweep")
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.repeats == -1


def test_submits_share_one_broker_per_process_and_their_tasks_reach_redis(
    tenant, demo_model, monkeypatch
):
    import redis
    from django_q.conf import Conf

    pool = redis.ConnectionPool.from_url(REDIS, socket_timeout=2)
    # The broker as sdplatform/settings.py makes it with REDIS_URL set, on a list of its own.
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", {"connection_pool": pool})
    monkeypatch.setattr(Conf, "CLUSTER_NAME", f"test-{uuid.uuid4().hex}")
    made = []
    real = queue.get_broker
    monkeypatch.setattr(queue, "get_broker", lambda: made.append(1) or real())
    tasks = redis.Redis(connection_pool=pool)
    list_key = f"django_q:{Conf.CLUSTER_NAME}:q"
    try:
        jobs = [queue_job(tenant, demo_model, seed) for seed in (1, 2, 3)]
        # One broker for the check and the enqueue of all three: django-q2 made one per call.
        assert made == [1]
        assert tasks.llen(list_key) == len(jobs)
    finally:
        tasks.delete(list_key)
