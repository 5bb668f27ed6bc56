"""Pictor across hosts: two web hosts, two worker hosts and a services host, one killed mid-job.

Each host is a network namespace with its own directory and model copy (tests/integration/
cluster.py); they share nothing but the network. A worker host loses power (every process
SIGKILLed) while it runs a job: the job's lease runs out, another host runs it, and every job
still ends `success` once, with its images in S3 once, one debit and one webhook.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.cluster import (
    assert_exactly_once,
    audit,
    job_cost,
    netns_pids,
    running_cluster,
)

pytestmark = pytest.mark.integration

BEFORE_KILL = 14
AFTER_KILL = 6
SIZE = 256
# 31 steps at 256×256 take about a second here: long enough to catch a job mid-diffusion.
STEPS = 31


@pytest.fixture
def cluster(models_dir):
    with running_cluster(models_dir, webs=2, workers=2) as cluster:
        yield cluster


def submit(cluster, index: int, jobs: dict[int, str]) -> None:
    """Job `index`, to the web hosts in turn, as a load balancer would."""
    web = cluster.webs[index % len(cluster.webs)]
    track_id = f"job-{index:02d}"
    response = cluster.text2img(web, track_id, width=SIZE, height=SIZE, steps=STEPS)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["status"] in ("processing", "success"), data
    jobs[data["id"]] = track_id


def catch_running_job(cluster, host: str, bound: float = 60) -> int:
    """A job `host` is inside the diffusion loop of, once it has finished one before."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        rows = cluster.sql(
            "SELECT id, status, progress_step FROM generation_job WHERE worker LIKE %s",
            f"{host}:%",
        )
        done = [r for r in rows if r[1] == "success"]
        running = [r[0] for r in rows if r[1] == "processing" and 0 < r[2] < STEPS - 4]
        if done and running:
            return running[0]
        time.sleep(0.03)
    pytest.fail(f"{host} was never caught mid-job:\n{cluster.dump_logs()}")


def test_jobs_spread_over_hosts_finish_once_when_a_worker_host_dies(cluster):
    started = time.monotonic()
    jobs: dict[int, str] = {}
    for index in range(BEFORE_KILL):
        submit(cluster, index, jobs)

    victim = cluster.hosts["worker-2"]
    killed_job = catch_running_job(cluster, victim.name)
    victim_pids = netns_pids(victim.netns)
    cluster.kill(victim)
    assert netns_pids(victim.netns) == set()
    (status,) = cluster.sql("SELECT status FROM generation_job WHERE id = %s", killed_job)[0]
    assert status == "processing", "the killed job should still hold its (now dead) lease"
    # The jobs batched with it into one diffusers call died with it too.
    held = {
        row[0]
        for row in cluster.sql(
            "SELECT id FROM generation_job WHERE status = 'processing' AND worker LIKE %s",
            f"{victim.name}:%",
        )
    }
    assert killed_job in held

    for index in range(BEFORE_KILL, BEFORE_KILL + AFTER_KILL):
        submit(cluster, index, jobs)
    job_ids = sorted(jobs)
    rows = cluster.wait_jobs(job_ids, bound=120)
    # A webhook task the dead host had prefetched comes back only when the delivery is
    # overdue (generation/webhooks.py STALLED_AFTER), hence the long bound.
    cluster.wait_webhooks(set(jobs.values()), bound=180)
    seconds = round(time.monotonic() - started, 1)

    result = audit(cluster, job_ids)
    hosts = {worker.split(":")[0] for _, _, worker in rows.values()}
    summary = {
        "test": "many_hosts",
        "jobs_submitted": len(job_ids),
        **result.counts(),
        "killed_job": killed_job,
        "killed_batch": sorted(held),
        "killed_processes": len(victim_pids),
        "jobs_by_host": {
            h: sum(1 for _, _, w in rows.values() if w.startswith(f"{h}:")) for h in sorted(hosts)
        },
        "seconds": seconds,
    }
    print(json.dumps(summary))

    assert hosts == {"worker-1", "worker-2"}, "both worker hosts should have run jobs"
    assert all(rows[j][2].startswith("worker-1:") for j in held), "the survivor reruns them"
    assert {i: n for i, n in result.attempts.items() if n != 1} == dict.fromkeys(held, 2)
    # Each web host took its half (a job keeps the base URL of the host that accepted it).
    accepted = cluster.sql(
        "SELECT base_url, count(*) FROM generation_job WHERE id = ANY(%s) GROUP BY base_url",
        job_ids,
    )
    assert sorted(accepted) == [(web.url, len(job_ids) // 2) for web in cluster.webs]
    costs = dict.fromkeys(job_ids, job_cost(SIZE, SIZE, STEPS))
    assert_exactly_once(cluster, result, job_ids, costs, {i: jobs[i] for i in job_ids})
