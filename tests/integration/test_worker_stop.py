"""A worker host stops cleanly: SIGTERM to its parent, its process group, or every process.

It claims nothing more, finishes its running job (or hands it back at once after the grace),
and every one of its processes exits; nothing is left for a lease to recover.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.conftest import dump_logs
from tests.integration.test_stack import poll

pytestmark = pytest.mark.integration

LONG_JOB = {"prompt": "a long job", "width": 512, "height": 512, "steps": 41}


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until_running(stack, job_id: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, step = stack.sql(
            "SELECT status, progress_step FROM generation_job WHERE id = %s", job_id
        )
        if status == "processing" and step > 0:
            return
        time.sleep(0.05)
    pytest.fail("the job never started:\n" + dump_logs(stack))


def wait_for_exit(stack, pids: set[int], bound: float) -> float:
    started = time.monotonic()
    while any(alive(pid) for pid in pids):
        assert time.monotonic() - started < bound, (
            f"still running after {bound}s: {[p for p in pids if alive(p)]}\n{dump_logs(stack)}"
        )
        time.sleep(0.1)
    return time.monotonic() - started


def job_row(stack, job_id: int) -> tuple:
    return stack.sql("SELECT status, attempts FROM generation_job WHERE id = %s", job_id)


def test_sigterm_lets_the_running_job_finish_and_claims_nothing_more(make_stack):
    stack = make_stack(PICTOR_SYNC_WAIT="0", PICTOR_WORKER_STOP_GRACE="120")
    worker = stack.processes["worker"]
    running = stack.post("/api/v3/text2img", LONG_JOB).json()["id"]
    wait_until_running(stack, running)
    processes = {worker.pid} | descendants(worker.pid)
    assert len(processes) >= 4, "the parent, django-q2's sentinel, a worker, pusher and monitor"

    os.kill(worker.pid, signal.SIGTERM)
    waiting = stack.post("/api/v3/text2img", {"prompt": "after the stop"}).json()["id"]
    wait_for_exit(stack, processes, bound=90)

    assert job_row(stack, running) == ("success", 1), dump_logs(stack)
    assert job_row(stack, waiting) == ("queued", 0), "a stopping worker took a new job"

    stack.start_worker()
    assert poll(stack, waiting, {"success", "failed"})["status"] == "success"


def test_sigterm_to_the_process_group_hands_the_job_back_at_once(make_stack):
    # A long lease: were the job recovered by lease expiry, the test would time out.
    stack = make_stack(PICTOR_SYNC_WAIT="0", PICTOR_WORKER_STOP_GRACE="0", PICTOR_JOB_LEASE="300")
    worker = stack.processes["worker"]
    job_id = stack.post("/api/v3/text2img", {**LONG_JOB, "samples": 2}).json()["id"]
    wait_until_running(stack, job_id)
    processes = {worker.pid} | descendants(worker.pid)

    os.killpg(worker.pid, signal.SIGTERM)  # what Ctrl-C in a terminal and systemd send
    seconds = wait_for_exit(stack, processes, bound=30)
    assert job_row(stack, job_id) == ("queued", 1), dump_logs(stack)
    assert seconds < 15

    stack.start_worker()
    done = poll(stack, job_id, {"success", "failed"}, timeout=120)
    assert done["status"] == "success", dump_logs(stack)
    assert job_row(stack, job_id) == ("success", 2)
    (outputs,) = stack.sql("SELECT count(*) FROM generation_outputimage WHERE job_id = %s", job_id)
    (refunds,) = stack.sql(
        "SELECT count(*) FROM billing_creditentry WHERE key = %s", f"job:{job_id}:refund"
    )
    assert (outputs, refunds) == (2, 0)
    assert "reaped job" not in (stack.logs / "worker.log").read_text()


def test_sigterm_to_every_process_at_once_never_leaves_the_parent_hanging(make_stack):
    # `pkill -f "manage.py worker"` or systemd's KillMode=control-group: django-q2's sentinel
    # and worker processes die at once, the sentinel while it sleeps on the stop event that the
    # parent then sets. The running job is lost with its process; the lease brings it back.
    stack = make_stack(PICTOR_SYNC_WAIT="0", PICTOR_WORKER_STOP_GRACE="0", PICTOR_JOB_LEASE="5")
    worker = stack.processes["worker"]
    job_id = stack.post("/api/v3/text2img", LONG_JOB).json()["id"]
    wait_until_running(stack, job_id)
    processes = {worker.pid} | descendants(worker.pid)

    for pid in processes:
        os.kill(pid, signal.SIGTERM)
    assert wait_for_exit(stack, processes, bound=30) < 15

    stack.start_worker()
    done = poll(stack, job_id, {"success", "failed"}, timeout=120)
    assert done["status"] == "success", dump_logs(stack)
