"""Job webhooks, signed with the Standard Webhooks scheme and retried with backoff.

A job with a webhook URL gets one WebhookDelivery per event its client chose (`webhook_events`:
start, progress at 25/50/75 %, completed; completed alone by default), whose payload is frozen
at that moment: the ModelsLab body of the job plus `event`. Each attempt is a django-q2 task,
`deliver`; a retry is a one-off django-q2 Schedule, since django-q2 has no delayed async_task.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import datetime, timedelta
from enum import Enum

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from accounts.models import WEBHOOK_SECRET_PREFIX, Organization
from generation import safe_http
from generation.answers import job_answer
from generation.engine.prompts import UNSTORABLE
from generation.models import PING_EVENT, Job, WebhookAttempt, WebhookDelivery, WebhookEvent
from sdplatform import metrics

log = logging.getLogger(__name__)

DELIVER_TASK = "generation.webhooks.deliver"
USER_AGENT = "Pictor-Webhooks/1"
EXCERPT_CHARS = 500
# An attempt's error text is kept to this much; a receiver's words never grow a row unbounded.
ERROR_CHARS = 2000
# A running attempt holds the delivery this long past its network timeout; a worker that dies
# mid-attempt leaves it to django-q2's redelivery, which then finds the attempt due again.
ATTEMPT_LEASE_MARGIN = timedelta(seconds=60)
# Clocks of the scheduler and the worker hosts may differ a little; an attempt that arrives
# this much early still runs rather than being dropped (which would strand the delivery).
DUE_SLACK = timedelta(seconds=5)
# A due attempt not started by then was lost (the scheduler looks every 30 s): send it again.
STALLED_AFTER = timedelta(minutes=2)
# Statuses that say "later" rather than "never", though they are 4xx.
RETRYABLE_4XX = frozenset({408, 429})
# A progress event is sent when a job passes each of these fractions of its steps, at most.
PROGRESS_QUARTERS = 4
# The longest `webhook_events` text a client may send (the three names fit four times over).
MAX_EVENTS_TEXT = 100


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give up"


# The `outcome` label of pictor_webhook_attempts.
OUTCOME_LABELS = {Outcome.DELIVERED: "delivered", Outcome.RETRY: "retry", Outcome.GIVE_UP: "failed"}


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: "v1," + base64 HMAC-SHA256 of "id.timestamp.body"."""
    key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def new_webhook_id() -> str:
    return "msg_" + uuid.uuid4().hex


def parse_events(value: object) -> list[str]:
    """A client's `webhook_events` (a list, or comma-separated text) as event names, in order.

    Raises ValueError with the message for the client. Empty means the default (completed).
    """
    if isinstance(value, str):
        if len(value) > MAX_EVENTS_TEXT:
            raise ValueError(f"Send at most {MAX_EVENTS_TEXT} characters.")
        items: list[object] = list(value.split(","))
    elif isinstance(value, list):
        items = list(value)
    else:
        raise ValueError("Send a list of event names, or them separated by commas.")
    if len(items) > len(WebhookEvent.values) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"Choose among: {', '.join(WebhookEvent.values)}.")
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    unknown = [name for name in names if name not in WebhookEvent.values]
    if unknown:
        raise ValueError(
            f"Unknown event {unknown[0][:20]!r}; choose among: {', '.join(WebhookEvent.values)}."
        )
    return list(dict.fromkeys(names)) or [WebhookEvent.COMPLETED.value]


def job_finished(job_id: int) -> None:
    """Create the job's `completed` delivery, if its client asked for it, and start it."""
    record(job_id, WebhookEvent.COMPLETED)


def job_started(job_id: int) -> None:
    """Create the job's `start` delivery (a worker began it), if its client asked for it."""
    record(job_id, WebhookEvent.START)


def quarter(step: int, total: int) -> int:
    """How many quarters of its steps a job has passed (0..4)."""
    return step * PROGRESS_QUARTERS // total if total > 0 else 0


def job_progressed(job_id: int, passed: int) -> None:
    """Create the job's `progress` delivery for a quarter passed (1..3), if asked for.

    At most three a job (25, 50, 75 %; 100 % is `completed`), whatever its number of steps.
    """
    if 0 < passed < PROGRESS_QUARTERS:
        record(job_id, WebhookEvent.PROGRESS, progress=passed * 100 // PROGRESS_QUARTERS)


def record(job_id: int, event: WebhookEvent, progress: int = 0) -> None:
    """Create one event's delivery, if the job has a webhook for it, and start its attempts."""
    job = Job.objects.select_related("model").filter(pk=job_id).first()
    if job is None or not job.webhook or event.value not in job.webhook_events:
        return
    payload = {"event": event.value, **job_answer(job, job.base_url or settings.PICTOR_BASE_URL)}
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                job=job,
                organization_id=job.organization_id,
                url=job.webhook,
                event=event,
                progress=progress,
                webhook_id=new_webhook_id(),
                payload=payload,
                next_attempt_at=timezone.now(),
            )
    except IntegrityError:
        # finish() ran again for this job, or a requeued job started (or passed this quarter)
        # again: that event's webhook is already on its way.
        return
    transaction.on_commit(lambda: enqueue_attempt(delivery.pk))


def send_ping(organization: Organization, url: str) -> WebhookDelivery:
    """A test delivery to `url`, signed and sent (and retried) like a job's webhook."""
    webhook_id = new_webhook_id()
    payload = {
        "event": PING_EVENT,
        "webhook_id": webhook_id,
        "organization": organization.slug,
        "message": "A test ping from Pictor; a job's webhook is signed the same way.",
    }
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            organization=organization,
            url=url,
            event=PING_EVENT,
            webhook_id=webhook_id,
            payload=payload,
            next_attempt_at=timezone.now(),
        )
        transaction.on_commit(lambda: enqueue_attempt(delivery.pk))
    return delivery


def redeliver(delivery_id: int) -> bool:
    """Send a finished delivery again, with the same id and body and a new round of retries.

    False if it is still pending: its next attempt is on its way already.
    """
    with transaction.atomic():
        moved = (
            WebhookDelivery.objects.filter(pk=delivery_id)
            .exclude(status=WebhookDelivery.Status.PENDING)
            .update(
                status=WebhookDelivery.Status.PENDING,
                earlier_attempts=F("attempts"),
                next_attempt_at=timezone.now(),
                finished_at=None,
            )
        )
        if moved:
            transaction.on_commit(lambda: enqueue_attempt(delivery_id))
    return bool(moved)


def enqueue_attempt(delivery_id: int) -> None:
    """Hand an attempt that is due now to a worker."""
    async_task(DELIVER_TASK, delivery_id, task_name=f"webhook-{delivery_id}", group="webhooks")


def schedule_attempt(delivery_id: int, number: int, when: datetime) -> None:
    """Have django-q2's scheduler hand attempt `number` to a worker at `when`."""
    # repeats=-1 on a ONCE schedule makes the scheduler delete the row once it has fired.
    schedule(
        DELIVER_TASK,
        delivery_id,
        name=f"webhook-{delivery_id}-{number}",
        schedule_type=Schedule.ONCE,
        next_run=when,
        repeats=-1,
        q_options={"group": "webhooks", "task_name": f"webhook-{delivery_id}"},
    )


def resume_stalled_deliveries() -> int:
    """Re-enqueue pending deliveries long past due: their task or schedule was lost.

    An enqueue can fail after commit, and a worker can die mid-attempt; without this such a
    delivery would stay pending forever. A duplicate task is harmless: `_claim` lets one send.
    """
    overdue = timezone.now() - STALLED_AFTER
    stalled = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=overdue
        ).values_list("pk", flat=True)[:100]
    )
    for delivery_id in stalled:
        log.warning("webhook delivery %s stalled; enqueuing its attempt again", delivery_id)
        enqueue_attempt(delivery_id)
    return len(stalled)


def deliver(delivery_id: int) -> None:
    """The django-q2 task: make one attempt at a due delivery, then record and plan the next."""
    policy = safe_http.policy_from_settings()
    number = _claim(delivery_id, lease=timedelta(seconds=policy.timeout) + ATTEMPT_LEASE_MARGIN)
    if number is None:
        return
    delivery = WebhookDelivery.objects.select_related("organization", "job__organization").get(
        pk=delivery_id
    )
    # Deliveries from before the organization was recorded on them have a job that says it.
    organization = delivery.organization or delivery.job.organization  # type: ignore[union-attr]  # only a ping has no job, and it has the organization
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        # Capitalised so it replaces safe_http's own User-Agent instead of adding a second one.
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(
            organization.webhook_secret, delivery.webhook_id, timestamp, body
        ),
    }
    attempt = WebhookAttempt(delivery=delivery, number=number, started_at=timezone.now())
    started = time.monotonic()
    try:
        # A receiver's answer matters by its status; of its body only the excerpt is kept.
        response = safe_http.request(
            "POST",
            delivery.url,
            policy=policy,
            body=body,
            headers=headers,
            excerpt=EXCERPT_CHARS * 4,
        )
    except safe_http.UnsafeURL as exc:
        outcome = Outcome.GIVE_UP
        attempt.error = f"Refused before connecting: {exc}"
    except safe_http.FetchFailed as exc:
        outcome = Outcome.RETRY
        attempt.error = f"Timed out: {exc}" if exc.timed_out else f"Network error: {exc}"
    except Exception as exc:
        # A bug here must not strand the delivery in its lease; count it as a failed attempt.
        log.exception("webhook %s attempt %s crashed", delivery.webhook_id, number)
        outcome = Outcome.RETRY
        attempt.error = f"{type(exc).__name__}: {exc}"
    else:
        attempt.status_code = response.status
        attempt.response_excerpt = _excerpt(response.body)
        outcome = classify(response.status)
    attempt.error = storable(attempt.error)[:ERROR_CHARS]
    attempt.duration_ms = round((time.monotonic() - started) * 1000)
    _record(delivery, attempt, outcome)


def classify(status: int) -> Outcome:
    """What a receiver's HTTP status means for the delivery."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status >= 500 or status in RETRYABLE_4XX:
        return Outcome.RETRY
    # 410 Gone says "stop"; any other 4xx (or a redirect, which a POST never follows) would get
    # the same answer again.
    return Outcome.GIVE_UP


def storable(text: str) -> str:
    """`text` without NUL characters and lone surrogates, which a row cannot hold.

    A receiver's reply may hold either, and a row that cannot be saved must not stall the
    delivery.
    """
    return UNSTORABLE.sub("", text)


def _excerpt(body: bytes) -> str:
    # Four bytes per character at most, so these bytes always hold EXCERPT_CHARS characters.
    return storable(body.decode("utf-8", "replace"))[:EXCERPT_CHARS]


def max_attempts() -> int:
    """Attempts a delivery gets in all (per redelivery): the first, then one per retry delay."""
    return len(settings.PICTOR_WEBHOOK_RETRY_DELAYS) + 1


def _claim(delivery_id: int, lease: timedelta) -> int | None:
    """Take the next attempt of a pending, due delivery; its number, or None if not ours."""
    now = timezone.now()
    row = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .values_list("attempts", "next_attempt_at", "earlier_attempts")
        .first()
    )
    if row is None:
        return None
    attempts, due, earlier = row
    if due is None or due > now + DUE_SLACK:
        # Not due: a duplicate of a task whose attempt already ran or is running.
        return None
    if attempts - earlier >= max_attempts():
        # Every attempt was made, but the last one's outcome never got recorded (its worker
        # died, or its row could not be saved). The count is taken before each send, so this
        # bound holds whatever failed after it: give up rather than send again.
        gave_up = WebhookDelivery.objects.filter(
            pk=delivery_id, status=WebhookDelivery.Status.PENDING, attempts=attempts
        ).update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None, finished_at=now)
        if gave_up:
            log.warning(
                "webhook delivery %s failed: %s attempt(s) made, the last not recorded",
                delivery_id,
                attempts,
            )
        return None
    # Compare-and-set on the attempt count: of two workers holding the same task, one sends.
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, attempts=attempts
    ).update(attempts=attempts + 1, next_attempt_at=now + lease)
    return attempts + 1 if claimed else None


def _record(delivery: WebhookDelivery, attempt: WebhookAttempt, outcome: Outcome) -> None:
    delays = settings.PICTOR_WEBHOOK_RETRY_DELAYS
    now = timezone.now()
    number = attempt.number
    # A redelivery starts a new round: its retries follow the delays from the first again.
    in_round = number - delivery.earlier_attempts
    if outcome is Outcome.RETRY and in_round > len(delays):
        outcome = Outcome.GIVE_UP
    mine = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=number
    )
    with transaction.atomic():
        try:
            # A savepoint: should the log row fail, the delivery's state still moves on.
            with transaction.atomic():
                attempt.save()
        except DatabaseError:
            log.exception("webhook %s attempt %s could not be logged", delivery.webhook_id, number)
        if outcome is Outcome.RETRY:
            delay = delays[in_round - 1]
            when = now + timedelta(seconds=delay)
            if not mine.update(next_attempt_at=when):
                return
            if delay <= 0:
                transaction.on_commit(lambda: enqueue_attempt(delivery.pk))
            else:
                schedule_attempt(delivery.pk, number + 1, when)
        else:
            status = (
                WebhookDelivery.Status.DELIVERED
                if outcome is Outcome.DELIVERED
                else WebhookDelivery.Status.FAILED
            )
            if not mine.update(status=status, next_attempt_at=None, finished_at=now):
                return
        counted = metrics.WEBHOOK_ATTEMPTS.labels(outcome=OUTCOME_LABELS[outcome])
        transaction.on_commit(counted.inc)
    if outcome is Outcome.GIVE_UP:
        log.warning(
            "webhook %s for job %s failed after %s attempt(s): %s",
            delivery.webhook_id,
            delivery.job_id,
            number,
            attempt.error or f"HTTP {attempt.status_code}",
        )
