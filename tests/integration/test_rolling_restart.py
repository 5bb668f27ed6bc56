"""A rolling restart under traffic: every host stopped with SIGTERM and started again, in turn.

Two web and two worker hosts (tests/integration/cluster.py) serve a steady stream of
submissions while each worker host, then each web host, is stopped as systemd or Ctrl-C would
(SIGTERM to every process group) and started again. As a load balancer would, the client stops
sending new requests to a web host before it is stopped; a blocking AUTOMATIC1111 request that
host is still answering must get its images. No client sees an error, each host exits promptly,
and every job ends `success` once: images in S3 once, one debit, one webhook.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
from PIL import Image

from tests.integration.cluster import assert_exactly_once, audit, job_cost, running_cluster

pytestmark = pytest.mark.integration

SIZE, STEPS = 128, 21
# A blocking request long enough (several seconds here) to be caught in flight by the stop.
BLOCKING_SIZE, BLOCKING_STEPS = 512, 51
# A worker's stop waits for its running job (about a second here), not for the whole grace.
WORKER_STOP_BOUND = 45
# A web host's stop waits for its blocking request, which waits at most PICTOR_BLOCKING_WAIT
# (60 s in the cluster) for its job.
WEB_STOP_BOUND = 90


class Traffic(threading.Thread):
    """A client submitting a job every `interval` seconds to the web hosts in rotation."""

    # One job a second: below what two worker hosts finish (a second each, under load), so the
    # queue stays short and a blocking request is answered well within its wait.
    def __init__(self, cluster, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.drained: set[str] = set()
        self.jobs: dict[int, str] = {}
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        index = 0
        while not self.done.is_set():
            webs = [w for w in self.cluster.webs if w.name not in self.drained]
            web = webs[index % len(webs)]
            track_id = f"job-{index:03d}"
            try:
                response = self.cluster.text2img(
                    web, track_id, width=SIZE, height=SIZE, steps=STEPS
                )
                if response.status_code == 200 and response.json().get("id"):
                    self.jobs[response.json()["id"]] = track_id
                else:
                    self.errors.append(f"{web.name} {response.status_code}: {response.text[:200]}")
            except Exception as exc:
                self.errors.append(f"{web.name}: {exc!r}")
            index += 1
            self.done.wait(self.interval)


class Blocking(threading.Thread):
    """One AUTOMATIC1111 txt2img request; keeps the response or the error."""

    def __init__(self, cluster, web, prompt: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.web, self.prompt = cluster, web, prompt
        self.response = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.response = self.cluster.a1111_txt2img(
                self.web,
                self.prompt,
                width=BLOCKING_SIZE,
                height=BLOCKING_SIZE,
                steps=BLOCKING_STEPS,
            )
        except Exception as exc:
            self.error = exc


def job_of(cluster, request: Blocking, bound: float = 30) -> tuple[int, str]:
    """The id and status of the job a blocking request made, once it exists."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        rows = cluster.sql(
            "SELECT id, status FROM generation_job WHERE params->>'prompt' = %s", request.prompt
        )
        if rows:
            return rows[0]
        if not request.is_alive():
            pytest.fail(f"the request made no job: {request.error or request.response.text[:500]}")
        time.sleep(0.05)
    pytest.fail(f"no job for {request.prompt!r} after {bound}s:\n{cluster.dump_logs()}")


@pytest.fixture
def cluster(models_dir):
    with running_cluster(models_dir, webs=2, workers=2) as cluster:
        yield cluster


def test_rolling_restart_under_traffic_loses_nothing(cluster):
    started = time.monotonic()
    traffic = Traffic(cluster)
    traffic.start()
    stops: dict[str, float] = {}
    blocking_jobs: list[int] = []
    try:
        time.sleep(2)
        for host in cluster.workers:
            stops[host.name] = round(cluster.stop(host, bound=WORKER_STOP_BOUND), 1)
            assert "worker host stopped" in cluster.log(host, "worker")
            cluster.start_worker(host)
            cluster.wait_worker(host)

        for host in cluster.webs:
            traffic.drained.add(host.name)
            prompt = f"a harbour in fog, kept waiting by {host.name}'s restart"
            request = Blocking(cluster, host, prompt)
            request.start()
            job_id, status = job_of(cluster, request)
            assert status in ("queued", "processing"), "the request should still be in flight"
            stops[host.name] = round(cluster.stop(host, bound=WEB_STOP_BOUND), 1)
            request.join(timeout=10)
            assert request.error is None, repr(request.error)
            assert request.response.status_code == 200, request.response.text[:500]
            (image,) = request.response.json()["images"]
            assert Image.open(io.BytesIO(base64.b64decode(image))).size == (
                BLOCKING_SIZE,
                BLOCKING_SIZE,
            )
            blocking_jobs.append(job_id)
            cluster.start_web(host)
            cluster.wait_web(host)
            traffic.drained.discard(host.name)
        time.sleep(2)
    finally:
        traffic.done.set()
        traffic.join(timeout=60)

    jobs = dict(traffic.jobs)
    job_ids = sorted([*jobs, *blocking_jobs])
    cluster.wait_jobs(job_ids, bound=120)
    cluster.wait_webhooks(set(jobs.values()), bound=60)
    result = audit(cluster, job_ids)
    print(
        json.dumps(
            {
                "test": "rolling_restart",
                "jobs_submitted": len(jobs),
                "blocking_requests": len(blocking_jobs),
                "client_errors": len(traffic.errors),
                **result.counts(),
                "stop_seconds": stops,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    assert traffic.errors == []
    assert len(jobs) >= 20, "too little traffic to mean anything"
    costs = dict.fromkeys(jobs, job_cost(SIZE, SIZE, STEPS))
    costs.update(
        dict.fromkeys(blocking_jobs, job_cost(BLOCKING_SIZE, BLOCKING_SIZE, BLOCKING_STEPS))
    )
    assert_exactly_once(cluster, result, job_ids, costs, jobs)
