"""Handing jobs to django-q2: the web tier's only contact with the task queue."""

from __future__ import annotations

from django_q.tasks import async_task

RUN_TASK = "generation.tasks.run_next_job"


def enqueue_job(job_id: int | None) -> None:
    """Ask a worker to run the best queued job; `job_id` is a hint for the logs, if any."""
    name = f"job-{job_id}" if job_id is not None else "wake-up"
    async_task(RUN_TASK, job_id, task_name=name, group="generation")
