"""Retention (generation/retention.py): images and test pings deleted past the plan's retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from django_q.models import Schedule

from billing.models import Plan
from generation.apps import RETENTION_SCHEDULE
from generation.models import PING_EVENT, Job, OutputImage, WebhookAttempt, WebhookDelivery
from generation.retention import expire_outputs
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)


def generate(api, tenant, path="/api/v3/text2img", **fields):
    status, data = api.post(
        path, {"key": tenant.key, "prompt": "a harbour", "width": 64, "height": 64, **fields}
    )
    assert status == 200 and data["status"] == "success", data
    return Job.objects.get(pk=data["id"])


def files_of(job: Job) -> list[str]:
    names = [o.path for o in job.outputs.all()]
    return names + [job.params[f] for f in ("init_image", "mask_image") if job.params.get(f)]


def age(job: Job, days: float) -> None:
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(days=days))


def test_it_deletes_outputs_and_inputs_past_the_plans_retention(
    api, free_tenant, tenant, demo_models, sync_queue
):
    old_free = generate(
        api, free_tenant, "/api/v3/img2img", init_image=png_base64(noise_image(64, 64))
    )
    new_free = generate(api, free_tenant, prompt="a boat")
    old_premium = generate(api, tenant, samples=2)
    free_files = files_of(old_free)
    assert len(free_files) == 2 and all(default_storage.exists(f) for f in free_files)
    assert free_files[1].startswith(f"inputs/{free_tenant.org.pk}/")
    # free keeps 1 day, premium 30
    age(old_free, 1.1)
    age(old_premium, 29)

    assert expire_outputs() == 1

    assert not any(default_storage.exists(f) for f in free_files)
    assert not OutputImage.objects.filter(job=old_free).exists()
    for kept in (new_free, old_premium):
        assert all(default_storage.exists(f) for f in files_of(kept))
        assert Job.objects.get(pk=kept.pk).expired_at is None

    status, data = api.post(f"/api/v3/fetch/{old_free.pk}", {"key": free_tenant.key})
    assert status == 200
    assert (data["status"], data["message"], data["output"]) == ("success", "Outputs expired", [])
    assert data["meta"]["prompt"] == "a harbour"
    status, data = api.post(f"/api/v3/fetch/{old_premium.pk}", {"key": tenant.key})
    assert len(data["output"]) == 2

    # The next run has nothing left to do; a plan edit in the admin applies to the next run.
    assert expire_outputs() == 0
    Plan.objects.filter(slug="premium").update(retention_days=7)
    assert expire_outputs() == 1
    assert not any(default_storage.exists(f) for f in files_of(old_premium))


def test_failed_jobs_lose_their_inputs_and_running_jobs_keep_everything(
    api, free_tenant, demo_models, sync_queue
):
    failed = generate(
        api, free_tenant, "/api/v3/img2img", init_image=png_base64(noise_image(64, 64))
    )
    running = generate(
        api, free_tenant, "/api/v3/img2img", init_image=png_base64(noise_image(64, 64, seed=1))
    )
    Job.objects.filter(pk=failed.pk).update(status=Job.Status.FAILED)
    Job.objects.filter(pk=running.pk).update(status=Job.Status.PROCESSING)
    for job in (failed, running):
        age(job, 3)

    assert expire_outputs() == 1
    assert not default_storage.exists(failed.params["init_image"])
    assert default_storage.exists(running.params["init_image"])


def test_it_never_deletes_files_outside_the_tenants_input_folder(
    api, free_tenant, tenant, demo_models, sync_queue
):
    other = generate(api, tenant, "/api/v3/img2img", init_image=png_base64(noise_image(64, 64)))
    job = generate(api, free_tenant)
    # A job whose params name another tenant's file (they never should) must not reach it.
    Job.objects.filter(pk=job.pk).update(
        params={**job.params, "init_image": other.params["init_image"]}
    )
    age(job, 2)
    assert expire_outputs() == 1
    assert default_storage.exists(other.params["init_image"])


def test_migrate_registers_the_hourly_retention_schedule():
    schedule = Schedule.objects.get(name=RETENTION_SCHEDULE)
    assert schedule.func == "generation.retention.expire_outputs"
    assert (schedule.schedule_type, schedule.repeats) == (Schedule.HOURLY, -1)


def test_it_deletes_finished_test_pings_past_the_plans_retention(free_tenant, tenant, demo_model):
    def delivery(tenant, days, status=WebhookDelivery.Status.DELIVERED, event=PING_EVENT, job=None):
        made = WebhookDelivery.objects.create(
            organization=tenant.org,
            job=job,
            url="https://hooks.example.com/pictor",
            event=event,
            webhook_id=f"msg_{WebhookDelivery.objects.count()}",
            payload={"event": event},
            status=status,
            created_at=timezone.now() - timedelta(days=days),
        )
        WebhookAttempt.objects.create(delivery=made, number=1, status_code=200)
        return made

    old_free = delivery(free_tenant, 1.1)
    old_failed = delivery(free_tenant, 2, WebhookDelivery.Status.FAILED)
    kept = [
        delivery(free_tenant, 0.5),
        # Still retrying: it goes on a later run, once it has finished.
        delivery(free_tenant, 2, WebhookDelivery.Status.PENDING),
        # premium keeps 30 days
        delivery(tenant, 29),
    ]
    job = Job.objects.create(
        organization=free_tenant.org, model=demo_model, params={}, status=Job.Status.SUCCESS
    )
    # A job's own deliveries are the job's history: retention keeps them.
    kept.append(delivery(free_tenant, 2, event="completed", job=job))

    expire_outputs()

    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {d.pk for d in kept}
    assert not WebhookAttempt.objects.filter(delivery__in=[old_free.pk, old_failed.pk]).exists()
    assert WebhookAttempt.objects.count() == len(kept)
