"""The same end-to-end path against the real services, and a worker killed mid-job."""

from __future__ import annotations

import io
import os
import signal
import time

import pytest
import requests
from PIL import Image

from tests.integration.conftest import dump_logs

pytestmark = pytest.mark.integration


def poll(stack, job_id: int, until: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = stack.post(f"/api/v3/fetch/{job_id}", {}).json()
        if data["status"] in until:
            return data
        time.sleep(0.3)
    pytest.fail(f"job {job_id} never reached {until}; last: {data}\n{dump_logs(stack)}")


def test_it_generates_through_postgres_redis_a_worker_and_s3(make_stack):
    stack = make_stack()
    response = stack.post(
        "/api/v3/text2img",
        {"prompt": "a lighthouse", "width": 128, "height": 96, "samples": 2, "seed": 5},
    )
    assert response.status_code == 200, response.text
    data = response.json()
    if data["status"] == "processing":
        data = poll(stack, data["id"], {"success", "failed"})
    assert data["status"] == "success", dump_logs(stack)
    assert len(data["output"]) == 2
    for index, url in enumerate(data["output"]):
        assert url.startswith(f"{stack.s3_endpoint}/{stack.bucket}/generations/")
        assert f"/{data['id']}/{index}.png" in url
        assert "Signature=" in url or "X-Amz-Signature=" in url
        image = Image.open(io.BytesIO(requests.get(url, timeout=10).content))
        assert image.size == (128, 96)
        assert f"Seed: {5 + index}" in image.info["parameters"]
    keys = sorted(
        o["Key"]
        for o in stack.s3().list_objects_v2(Bucket=stack.bucket)["Contents"]
        if o["Key"].startswith("generations/")
    )
    assert keys == [
        f"generations/{k.split('/')[1]}/{data['id']}/{i}.png" for i, k in enumerate(keys)
    ]
    assert len(keys) == 2

    fetched = stack.post(f"/api/v3/fetch/{data['id']}", {}).json()
    assert fetched["status"] == "success"
    assert [u.split("?")[0] for u in fetched["output"]] == [u.split("?")[0] for u in data["output"]]

    load = stack.post("/api/v3/system_load", {}).json()
    assert load["status"] == "ok"
    assert load["queue_num"] == 0
    ready = requests.get(stack.base_url + "/readyz", timeout=5).json()
    assert ready == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "cache": "ok",
        "storage": "ok",
    }


def test_text_postgresql_cannot_store_is_a_400_not_a_500(make_stack):
    """NUL characters and lone surrogates: SQLite stores them, PostgreSQL answers an error."""
    stack = make_stack()
    url = stack.base_url + "/api/v3/text2img"
    bodies = [
        {"key": stack.key, "prompt": "a lighthouse\u0000"},
        {"key": stack.key, "prompt": "a lighthouse", "lora_model": "demo-lora-a\u0000"},
        {"key": stack.key, "prompt": "a lighthouse", "embeddings_model": "demo-embedding\ud800"},
        {"key": stack.key[:6] + "\u0000" + stack.key[7:], "prompt": "a lighthouse"},
    ]
    for body in bodies:
        # json.dumps escapes both as \u0000 and \ud800, as a client's JSON library would.
        response = requests.post(url, json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["status"] == "error"
    a1111 = requests.post(
        stack.base_url + "/sdapi/v1/txt2img",
        json={"prompt": "a", "override_settings": {"sd_vae": "demo-vae\x00"}},
        auth=("", stack.key),
        timeout=30,
    )
    assert a1111.status_code in (400, 422), a1111.text
    assert stack.sql("SELECT count(*) FROM generation_job") == (0,)


def test_a_worker_killed_mid_job_finishes_the_job_exactly_once(make_stack):
    stack = make_stack(PICTOR_SYNC_WAIT="0", PICTOR_JOB_LEASE="2")
    body = {"prompt": "a long job", "width": 512, "height": 512, "samples": 2, "steps": 41}
    submitted = stack.post("/api/v3/text2img", body).json()
    job_id = submitted["id"]
    assert submitted["status"] == "processing"

    # Wait until a worker is inside the diffusion loop, then kill that very process.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, worker, step = stack.sql(
            "SELECT status, worker, progress_step FROM generation_job WHERE id = %s", job_id
        )
        if status == "processing" and step > 0:
            break
        assert status in ("queued", "processing"), status
        time.sleep(0.05)
    else:
        pytest.fail("the job never started:\n" + dump_logs(stack))
    worker_pid = int(worker.rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)

    done = poll(stack, job_id, {"success", "failed"}, timeout=180)
    assert done["status"] == "success", dump_logs(stack)
    assert len(done["output"]) == 2
    attempts, last_worker = stack.sql(
        "SELECT attempts, worker FROM generation_job WHERE id = %s", job_id
    )
    (outputs,) = stack.sql("SELECT count(*) FROM generation_outputimage WHERE job_id = %s", job_id)
    assert attempts == 2
    assert outputs == 2
    assert int(last_worker.rsplit(":", 1)[1]) != worker_pid
    objects = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix="generations/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 2)[1:] for o in objects) == [
        [str(job_id), "0.png"],
        [str(job_id), "1.png"],
    ]


def test_two_workers_never_run_the_same_job(make_stack):
    stack = make_stack(PICTOR_SYNC_WAIT="0", PICTOR_WORKERS="2", PICTOR_TORCH_THREADS="1")
    # Both workers must be past their warm-up, or the first one ready could take every job.
    deadline = time.monotonic() + 60
    while (stack.logs / "worker.log").read_text().count("preloaded demo-sd15") < 2:
        assert time.monotonic() < deadline, dump_logs(stack)
        time.sleep(0.1)
    ids = [
        stack.post(
            "/api/v3/text2img", {"prompt": f"job {i}", "width": 64, "height": 64, "seed": i}
        ).json()["id"]
        for i in range(8)
    ]
    for job_id in ids:
        assert poll(stack, job_id, {"success", "failed"})["status"] == "success"
    (runs,) = stack.sql("SELECT sum(attempts) FROM generation_job")
    (outputs,) = stack.sql("SELECT count(*) FROM generation_outputimage")
    (workers,) = stack.sql("SELECT count(DISTINCT worker) FROM generation_job")
    assert (runs, outputs) == (8, 8)
    assert workers == 2, "both worker processes should have claimed jobs (SKIP LOCKED)"


def test_the_web_server_answers_fifty_clients_at_once(make_stack):
    """`make run`'s gunicorn (Django's development server reset these connections)."""
    from concurrent.futures import ThreadPoolExecutor

    stack = make_stack()

    def ask(_: int) -> int:
        return requests.get(stack.base_url + "/healthz", timeout=30).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(ask, range(50)))
    assert statuses == [200] * 50
