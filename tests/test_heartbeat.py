"""Workers report to the ops dashboard: which models they hold and how many jobs they ran."""

from __future__ import annotations

import threading

import pytest

from generation import heartbeat
from generation.models import WorkerHeartbeat
from generation.tasks import worker_name

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_updates_its_workers_row(api, tenant, demo_model, sync_queue):
    status, data = api.post(
        "/api/v3/text2img", {"key": tenant.key, "prompt": "a kite", "width": 64, "height": 64}
    )
    assert status == 200 and data["status"] == "success", data
    row = WorkerHeartbeat.objects.get(name=worker_name())
    assert row.jobs_done == 1
    assert "demo-sd15" in row.models_loaded
    assert row.current_job is None
    # Run inline (sync mode), a job starts no heartbeat thread in the caller's process.
    assert "pictor-heartbeat" not in {t.name for t in threading.enumerate()}


def test_beat_counts_jobs_and_keeps_the_start(db):
    heartbeat.beat("host:1", current_job=7)
    first = WorkerHeartbeat.objects.get(name="host:1")
    assert first.current_job == 7
    heartbeat.beat("host:1", job_done=True)
    heartbeat.beat("host:1", job_done=True)
    row = WorkerHeartbeat.objects.get(name="host:1")
    assert row.jobs_done == 2
    assert row.current_job is None
    assert row.started_at == first.started_at
    assert row.last_seen >= first.last_seen
