"""Fetch, system_load and model_list; tenants never see each other's jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from generation.models import AIModel, Job
from generation.tasks import claim_next_job, run_next_job

pytestmark = pytest.mark.django_db(transaction=True)


def submit(api, tenant, **fields):
    status, data = api.post(
        "/api/v3/text2img",
        {"key": tenant.key, "prompt": "a boat", "width": 64, "height": 64, **fields},
    )
    assert status == 200, data
    return data


@pytest.mark.parametrize("path", ["/api/v3/fetch/{}", "/api/v4/dreambooth/fetch/{}"])
def test_another_tenants_job_looks_missing(api, tenant, outsider, demo_model, no_wait, path):
    job_id = submit(api, tenant)["id"]
    status, theirs = api.post(path.format(job_id), {"key": outsider.key})
    status_missing, missing = api.post(path.format(job_id + 1000), {"key": outsider.key})
    assert status == status_missing == 404
    assert theirs == missing == {"status": "error", "message": "Request not found"}
    status, mine = api.post(path.format(job_id), {"key": tenant.key})
    assert status == 200
    assert mine["id"] == job_id


def test_fetch_reports_progress_while_running(api, tenant, demo_model, no_wait):
    job_id = submit(api, tenant)["id"]
    job = claim_next_job()
    assert job.pk == job_id
    Job.objects.filter(pk=job_id).update(progress_step=7, progress_total=21)
    status, data = api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})
    assert status == 200
    assert data["status"] == "processing"
    assert data["progress"] == pytest.approx(1 / 3, abs=0.01)
    assert data["eta"] > 0


def test_fetch_by_get_with_a_header_key(api, tenant, demo_model, no_wait):
    job_id = submit(api, tenant)["id"]
    status, data = api.get(f"/api/v3/fetch/{job_id}", key=tenant.key)
    assert status == 200
    assert data["status"] == "processing"


def test_fetch_of_a_failed_job(api, tenant, demo_model, no_wait):
    job_id = submit(api, tenant)["id"]
    AIModel.objects.filter(pk=demo_model.pk).update(path="missing-folder")
    assert run_next_job() == job_id
    status, data = api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})
    assert status == 200
    assert data == {"status": "failed", "id": job_id, "message": "Failed, Try Again", "output": []}
    assert Job.objects.get(pk=job_id).error


def test_fetch_requeues_a_job_whose_lease_expired(api, tenant, demo_model, no_wait):
    job_id = submit(api, tenant)["id"]
    claim_next_job()
    Job.objects.filter(pk=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    status, data = api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})
    assert data["status"] == "processing"
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.QUEUED
    assert job.attempts == 1


def test_system_load_counts_waiting_jobs(api, tenant, demo_model, no_wait):
    status, data = api.post("/api/v3/system_load", {"key": tenant.key})
    assert (status, data) == (200, {"status": "ok", "queue_num": 0, "queue_time": 0})
    submit(api, tenant)
    submit(api, tenant, seed=2)
    status, data = api.post("/api/v3/system_load", {"key": tenant.key})
    assert data["status"] == "ok"
    assert data["queue_num"] == 2
    assert data["queue_time"] > 0


def test_model_list_shows_public_and_own_models_only(api, tenant, outsider, demo_model):
    AIModel.objects.create(model_id="acme-private", name="Acme", path="x", organization=tenant.org)
    AIModel.objects.create(model_id="disabled", name="Off", path="x", enabled=False)
    for path in ("/api/v4/dreambooth/model_list", "/api/v3/dreambooth/model_list"):
        status, mine = api.post(path, {"key": tenant.key})
        assert status == 200
        assert [m["model_id"] for m in mine] == ["acme-private", "demo-sd15"]
        assert mine[1]["status"] == "model_ready"
        assert mine[1]["is_default"] is True
        _, theirs = api.post(path, {"key": outsider.key})
        assert [m["model_id"] for m in theirs] == ["demo-sd15"]


def test_another_tenants_private_model_looks_missing(api, tenant, outsider, demo_model, no_wait):
    AIModel.objects.create(model_id="acme-private", name="Acme", path="x", organization=tenant.org)
    status, data = api.post(
        "/api/v4/dreambooth", {"key": outsider.key, "prompt": "a", "model_id": "acme-private"}
    )
    assert (status, data) == (404, {"status": "error", "message": "Model id not found"})


def test_fetch_of_a_running_job_shows_progress_rising_and_eta_shrinking(
    api, tenant, demo_model, no_wait, monkeypatch
):
    import generation.tasks as tasks
    from generation.engine import runner

    monkeypatch.setattr(tasks, "PROGRESS_WRITE_INTERVAL", 0)
    job_id = submit(api, tenant, width=128, height=128)["id"]
    real_generate = runner.generate
    answers = []

    def generate_and_poll(req, model, *, progress=None, **kw):
        def progress_then_fetch(step, total):
            progress(step, total)
            # The client polls while the worker is between two denoising steps.
            answers.append(api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})[1])

        return real_generate(req, model, progress=progress_then_fetch, **kw)

    monkeypatch.setattr(runner, "generate", generate_and_poll)
    run_next_job()

    assert [a["status"] for a in answers] == ["processing"] * 21
    progress = [a["progress"] for a in answers]
    etas = [a["eta"] for a in answers]
    assert progress == sorted(progress) and 0 < progress[0] < 0.1 and progress[-1] == 1
    assert all(later < earlier for earlier, later in zip(etas, etas[1:], strict=False))
    assert etas[-1] == 0
    status, done = api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})
    assert done["status"] == "success"
