"""GET /metrics: who may scrape it, and what the web and the jobs count into it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from accounts.models import User
from billing import ledger
from generation import jobs
from generation.models import Job, WorkerHeartbeat
from sdplatform import metrics
from tests.scrape import sample

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scrape-me-7f3a9c"
SMALL = {"width": 64, "height": 64}


@pytest.fixture
def token(settings):
    settings.PICTOR_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, token: str = TOKEN) -> str:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    return response.content.decode()


def refused(response, status: int = 401) -> bool:
    return response.status_code == status and b"pictor_" not in response.content


def test_it_refuses_a_scrape_without_the_token(client, token):
    response = client.get("/metrics")
    assert refused(response)
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_it_refuses_a_wrong_token(client, token):
    for authorization in (f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN):
        assert refused(client.get("/metrics", headers={"Authorization": authorization}))


def test_it_refuses_every_token_while_none_is_set(client, settings):
    settings.PICTOR_METRICS_TOKEN = ""
    for authorization in ("Bearer ", "Bearer", "Bearer x"):
        assert refused(client.get("/metrics", headers={"Authorization": authorization}))


def test_the_token_gets_prometheus_text(client, token):
    client.get("/healthz")
    response = client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in ("pictor_http_requests_total", "pictor_queue_depth", "pictor_live_workers"):
        assert f"# TYPE {name} " in text


def test_staff_may_scrape_with_their_session(client):
    staff = User.objects.create_user("ops@example.com", "pw-123456789", is_staff=True)
    client.force_login(staff)
    assert client.get("/metrics").status_code == 200


def test_a_member_who_is_not_staff_may_not(client, token):
    member = User.objects.create_user("member@example.com", "pw-123456789")
    client.force_login(member)
    assert refused(client.get("/metrics"), status=403)


def test_it_counts_requests_by_route_never_by_path(client, token, tenant):
    def count(text: str, route: str, status: str) -> float:
        return sample(text, "pictor_http_requests_total", route=route, status=status)

    before = scrape(client)
    client.get("/healthz")
    client.get("/healthz")
    client.post("/api/v3/fetch/987654", {"key": tenant.key}, content_type="application/json")
    client.get("/no-such-page-314159")
    after = scrape(client)

    assert count(after, "/healthz", "200") - count(before, "/healthz", "200") == 2
    fetch = "/api/v3/fetch/<int:job_id>"
    assert count(after, fetch, "200") + count(after, fetch, "404") == (
        count(before, fetch, "200") + count(before, fetch, "404") + 1
    )
    assert count(after, "(unmatched)", "404") - count(before, "(unmatched)", "404") == 1
    assert "987654" not in after and "314159" not in after


def test_queue_depth_and_live_workers_come_from_the_database(client, token, tenant, demo_model):
    def queued(priority: int) -> None:
        Job.objects.create(organization=tenant.org, model=demo_model, params={}, priority=priority)

    queued(2)
    queued(2)
    queued(9)
    Job.objects.create(
        organization=tenant.org, model=demo_model, params={}, status=Job.Status.PROCESSING
    )
    now = timezone.now()
    WorkerHeartbeat.objects.create(name="gpu-1:100", last_seen=now)
    WorkerHeartbeat.objects.create(name="gpu-1:101", last_seen=now - timedelta(seconds=5))
    WorkerHeartbeat.objects.create(name="gpu-2:200", last_seen=now - timedelta(hours=1))

    text = scrape(client)
    assert sample(text, "pictor_queue_depth", priority="2") == 2
    assert sample(text, "pictor_queue_depth", priority="9") == 1
    # The plans' priorities are there when nothing waits at them.
    assert 'pictor_queue_depth{priority="0"} 0.0' in text
    assert sample(text, "pictor_live_workers") == 2


def test_a_job_counts_its_submit_run_and_debit(api, client, token, tenant, demo_model, sync_queue):
    labels = {"kind": "text2img", "model": "demo-sd15"}
    before = scrape(client)
    status, data = api.post("/api/v3/text2img", {"key": tenant.key, "prompt": "a fox", **SMALL})
    assert status == 200 and data["status"] == "success", data
    after = scrape(client)

    def moved(name: str, **extra: str) -> float:
        return sample(after, name, **extra) - sample(before, name, **extra)

    cost = Job.objects.get(pk=data["id"]).cost
    assert cost > 0
    assert moved("pictor_jobs_submitted_total", **labels) == 1
    assert moved("pictor_jobs_finished_total", status="success", **labels) == 1
    assert moved("pictor_generation_seconds_count", **labels) == 1
    assert moved("pictor_queue_wait_seconds_count", priority=str(tenant.org.plan.priority)) == 1
    assert moved("pictor_credits_debited_total", plan="premium") == cost
    assert moved("pictor_credits_refunded_total", plan="premium") == 0


def test_a_refused_submit_counts_nothing(api, client, token, tenant, demo_model, sync_queue):
    ledger.set_balance(tenant.org, 0)
    before = scrape(client)
    status, data = api.post("/api/v3/text2img", {"key": tenant.key, "prompt": "a fox", **SMALL})
    assert status == 402, data
    after = scrape(client)
    for name, labels in (
        ("pictor_jobs_submitted_total", {"kind": "text2img", "model": "demo-sd15"}),
        ("pictor_credits_debited_total", {"plan": "premium"}),
    ):
        assert sample(after, name, **labels) == sample(before, name, **labels)


def test_a_canceled_job_counts_its_refund(api, client, token, tenant, demo_model, no_wait):
    status, data = api.post("/api/v3/text2img", {"key": tenant.key, "prompt": "a fox", **SMALL})
    assert status == 200 and data["status"] == "processing", data
    job = Job.objects.get(pk=data["id"])
    before = scrape(client)
    assert jobs.cancel(job)
    after = scrape(client)
    labels = {"status": "canceled", "kind": "text2img", "model": "demo-sd15"}
    assert sample(after, "pictor_jobs_finished_total", **labels) == (
        sample(before, "pictor_jobs_finished_total", **labels) + 1
    )
    refunded = sample(after, "pictor_credits_refunded_total", plan="premium")
    assert refunded - sample(before, "pictor_credits_refunded_total", plan="premium") == job.cost


def test_this_runs_metrics_stay_in_its_own_folder(client, token):
    client.get("/healthz")
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert folder != django_settings.BASE_DIR / "var" / "metrics"
    assert (folder / f"counter_{os.getpid()}.db").exists()


def test_a_starting_service_removes_only_the_files_of_dead_processes(tmp_path, monkeypatch):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead, alive = int(gone.stdout), os.getpid()
    names = [f"counter_{dead}.db", f"histogram_{dead}.db", f"counter_{alive}.db", "notes.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    assert metrics.remove_files_of_dead_processes() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{alive}.db", "notes.txt"]
