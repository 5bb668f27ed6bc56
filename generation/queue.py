"""Handing jobs to django-q2: the web tier's only contact with the task queue."""

from __future__ import annotations

import logging

from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.tasks import async_task
from rest_framework import status
from rest_framework.exceptions import APIException

log = logging.getLogger(__name__)

RUN_TASK = "generation.tasks.run_next_job"
# Seconds a client is told to wait when the broker is down: a restart of Redis takes a few.
BROKER_RETRY_AFTER = 30


class QueueUnavailable(APIException):
    """The broker does not answer: 503 with Retry-After, in the caller's wire format."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"
    default_detail = "The job queue is unavailable; nothing was queued or charged."
    tips = "Retry after the number of seconds in Retry-After."
    wait = BROKER_RETRY_AFTER


# This process's broker and the configuration it was made from (see broker()).
_broker: tuple[tuple[object, ...], Broker] | None = None


def broker() -> Broker:
    """This process's django-q2 broker, made once and shared by its threads.

    django-q2's get_broker() builds a new one (a Redis client) on every call, which a submit made
    twice (the check and the enqueue). A Redis client is safe to share: each command borrows a
    connection from the pool. Made again if the configuration changes (tests point it elsewhere).
    """
    global _broker
    config = (Conf.CLUSTER_NAME, Conf.ORM, Conf.REDIS)
    if _broker is None or _broker[0] != config:
        _broker = (config, get_broker())
    return _broker[1]


def check_broker() -> None:
    """Raise QueueUnavailable unless the broker answers, before a job is created or charged.

    A job accepted while the broker is down could not start until it is back, and a format that
    blocks for its image would wait out its whole window; refusing up front charges nothing.
    """
    if Conf.SYNC:
        return  # tasks run inline: there is no broker to reach
    if isinstance(broker(), ORM):
        return  # the database is the broker, and it has just answered this request
    error: Exception | None = None
    try:
        if broker().ping():  # True, or raises (Redis); a False is as bad as an error
            return
    except Exception as exc:  # any client error: the task cannot be handed over
        error = exc
    log.warning("refusing a submit: the broker does not answer: %s", error)
    raise QueueUnavailable() from error


def enqueue_job(job_id: int | None) -> None:
    """Ask a worker to run the best queued job; `job_id` is a hint for the logs, if any."""
    name = f"job-{job_id}" if job_id is not None else "wake-up"
    async_task(RUN_TASK, job_id, task_name=name, group="generation", broker=broker())
