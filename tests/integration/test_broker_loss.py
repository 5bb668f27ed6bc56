"""The broker forgets its tasks: queued jobs still run, with no new traffic to wake them.

Redis runs without persistence on the services host (tests/integration/cluster.py). Jobs are
accepted while the worker hosts are down (a deploy, a power cut), then Redis is killed and
started empty, so their broker tasks are gone and no running job is left to pass the turn on;
the workers come back and nothing more is submitted. The Job table is the queue of record, and
the workers' sweep gives each runnable queued job a new task within seconds: every job ends
`success` once, charged once, with its images in S3 once and one webhook.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.cluster import assert_exactly_once, audit, job_cost, running_cluster

pytestmark = pytest.mark.integration

JOBS = 16
SIZE = 256
STEPS = 31
# Ample for 16 small jobs on two workers woken by the sweep (PICTOR_SWEEP_INTERVAL is 2 s in
# the cluster); without it they would wait for traffic that never comes.
BOUND = 60


@pytest.fixture
def cluster(models_dir):
    with running_cluster(models_dir, webs=1, workers=2, start_workers=False) as cluster:
        yield cluster


def test_queued_jobs_run_after_the_broker_restarts_empty(cluster):
    web = cluster.webs[0]
    jobs: dict[int, str] = {}
    for index in range(JOBS):
        track_id = f"job-{index:02d}"
        response = cluster.text2img(web, track_id, width=SIZE, height=SIZE, steps=STEPS)
        assert response.status_code == 200, response.text
        jobs[response.json()["id"]] = track_id
    job_ids = sorted(jobs)

    assert cluster.redis().llen(cluster.broker_key) == JOBS
    cluster.restart_redis()
    assert cluster.redis().llen(cluster.broker_key) == 0, "the new broker should start empty"
    (queued,) = cluster.sql(
        "SELECT count(*) FROM generation_job WHERE id = ANY(%s) AND status = 'queued'", job_ids
    )[0]
    assert queued == JOBS

    for host in cluster.workers:
        cluster.start_worker(host)
    for host in cluster.workers:
        cluster.wait_worker(host)
    ready = time.monotonic()
    rows = cluster.wait_jobs(job_ids, bound=BOUND)
    drained = round(time.monotonic() - ready, 1)
    cluster.wait_webhooks(set(jobs.values()), bound=60)

    result = audit(cluster, job_ids)
    print(
        json.dumps(
            {
                "test": "broker_loss",
                "jobs_submitted": len(job_ids),
                **result.counts(),
                "seconds_to_drain_once_workers_ready": drained,
                "workers": sorted({w.split(":")[0] for _, _, w in rows.values()}),
            }
        )
    )
    costs = dict.fromkeys(job_ids, job_cost(SIZE, SIZE, STEPS))
    assert_exactly_once(cluster, result, job_ids, costs, jobs)
