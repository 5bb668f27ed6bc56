"""The queue sweep (lost broker tasks) and a stopping worker (no new claims, hand back)."""

from __future__ import annotations

import pytest
from django_q.models import OrmQ

from billing.ledger import refund_key
from billing.models import CreditEntry, Plan
from generation import batching, service, stopping
from generation.engine.request import GenerationRequest
from generation.models import Job
from generation.tasks import claim_next_job, execute, execute_batch, run_next_job, sweep
from tests.helpers import make_tenant

pytestmark = pytest.mark.django_db(transaction=True)


def queue_job(tenant, demo_model, steps=2, seed=0):
    req = GenerationRequest(
        prompt="a", model_id="demo-sd15", width=64, height=64, steps=steps, seed=seed
    )
    return service.submit(req, tenant.org, demo_model)


@pytest.fixture
def stop_requested(monkeypatch):
    """This process is a worker of a host asked to stop (as after SIGTERM to `worker`)."""
    monkeypatch.setattr(stopping, "_requested_at", None)
    stopping.install()
    stopping.request()


def test_the_sweep_gives_queued_jobs_that_lost_their_broker_task_a_new_one(tenant, demo_model):
    jobs = [queue_job(tenant, demo_model) for _ in range(3)]
    assert OrmQ.objects.count() == 3
    assert sweep() == 0  # each job still has its task

    OrmQ.objects.all().delete()  # the broker lost them (a Redis restart, a killed worker)
    assert sweep() == 3
    assert OrmQ.objects.count() == 3
    assert sweep() == 0

    for _ in jobs:
        run_next_job()
    assert set(Job.objects.values_list("status", flat=True)) == {Job.Status.SUCCESS}
    assert sweep() == 0


def test_the_sweep_wakes_only_as_many_jobs_as_fair_share_lets_run(demo_model):
    Plan.objects.filter(slug="free").update(concurrent_jobs=1)
    free = make_tenant("f", "free")
    for _ in range(3):
        queue_job(free, demo_model)
    OrmQ.objects.all().delete()
    assert sweep() == 1  # the tenant may run one job at a time
    OrmQ.objects.all().delete()
    claim_next_job()
    assert sweep() == 0  # its slot is taken: nothing could run now


def test_a_stopping_worker_claims_nothing_and_puts_the_task_back(
    tenant, demo_model, stop_requested
):
    job = queue_job(tenant, demo_model)
    OrmQ.objects.all().delete()  # as a worker does when it takes the task
    assert run_next_job(job.pk) is None
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.QUEUED, 0)
    assert OrmQ.objects.count() == 1  # another worker gets it


def test_a_stopping_worker_hands_its_running_job_back_after_the_grace(
    tenant, demo_model, settings, monkeypatch
):
    settings.PICTOR_WORKER_STOP_GRACE = 0
    job = queue_job(tenant, demo_model, steps=4)
    OrmQ.objects.all().delete()
    claimed = claim_next_job()
    monkeypatch.setattr(stopping, "_requested_at", None)
    stopping.install()
    stopping.request()
    execute(claimed)

    job.refresh_from_db()
    assert (job.status, job.worker, job.lease_expires_at) == (Job.Status.QUEUED, "", None)
    assert job.outputs.count() == 0
    assert OrmQ.objects.count() == 1  # handed back at once, not after the lease
    assert not CreditEntry.objects.filter(key=refund_key(job.pk)).exists()

    monkeypatch.setattr(stopping, "_requested_at", None)  # another worker, not stopping
    assert run_next_job() == job.pk
    job.refresh_from_db()
    assert (job.status, job.attempts, job.outputs.count()) == (Job.Status.SUCCESS, 2, 1)


def test_a_stopping_worker_hands_back_every_job_of_its_batch(
    tenant, demo_model, settings, monkeypatch
):
    settings.PICTOR_WORKER_STOP_GRACE = 0
    settings.PICTOR_MAX_BATCH_IMAGES = 4
    queued = [queue_job(tenant, demo_model, steps=4, seed=seed) for seed in (1, 2, 3)]
    OrmQ.objects.all().delete()
    leader = claim_next_job()
    batch = [leader, *batching.claim_companions(leader)]
    assert sorted(job.pk for job in batch) == sorted(job.pk for job in queued)
    monkeypatch.setattr(stopping, "_requested_at", None)
    stopping.install()
    stopping.request()
    execute_batch(batch)

    for job in queued:
        job.refresh_from_db()
        assert (job.status, job.worker, job.lease_expires_at) == (Job.Status.QUEUED, "", None)
        assert job.outputs.count() == 0
        assert not CreditEntry.objects.filter(key=refund_key(job.pk)).exists()
    assert OrmQ.objects.count() == 3  # each handed back at once, not after its lease

    monkeypatch.setattr(stopping, "_requested_at", None)  # another worker, not stopping
    run_next_job()
    for job in queued:
        job.refresh_from_db()
        assert (job.status, job.attempts, job.outputs.count()) == (Job.Status.SUCCESS, 2, 1)


def test_a_stopping_worker_finishes_its_job_within_the_grace(
    tenant, demo_model, settings, stop_requested
):
    settings.PICTOR_WORKER_STOP_GRACE = 60
    job = queue_job(tenant, demo_model)
    claimed = claim_next_job()
    execute(claimed)
    job.refresh_from_db()
    assert (job.status, job.outputs.count()) == (Job.Status.SUCCESS, 1)


@pytest.mark.django_db(transaction=False)
def test_a_stop_never_waits_on_a_sentinel_killed_in_its_sleep():
    # django-q2's sentinel sleeps in the stop event's wait() and dies at once on its own
    # SIGTERM. Event.set() then waits for ever for it to wake; the worker command must not.
    import multiprocessing
    import os
    import signal
    import threading
    import time

    from generation.management.commands.worker import set_in_background

    event = multiprocessing.get_context("fork").Event()
    sleeper = multiprocessing.get_context("fork").Process(target=event.wait, args=(60,))
    sleeper.start()
    time.sleep(0.5)  # asleep in wait() by now
    os.kill(sleeper.pid, signal.SIGKILL)
    sleeper.join()

    plain = threading.Thread(target=event.set, daemon=True)
    plain.start()
    plain.join(1)
    assert plain.is_alive(), "Event.set() no longer blocks here: set_in_background may go"

    started = time.monotonic()
    set_in_background(event)
    assert time.monotonic() - started < 0.5
