"""The hand-written key, poll, model, queue-count, daily-images and queue-ahead statements give
what the ORM gives (sdplatform/rows.py).

`lookups_against_the_orm()` loads the same rows both ways and reports every difference; it runs
here on SQLite and, in tests/integration/test_rows_postgres.py, on PostgreSQL, whose drivers hand
back datetimes and JSON differently.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext
from django.utils import timezone


def values(instance: Model | None) -> dict[str, Any] | None:
    """Every column's value with its type, to tell 1 from 1.0 and naive from aware datetimes."""
    if instance is None:
        return None
    return {
        field.attname: (type(value).__name__, value, getattr(value, "tzinfo", None))
        for field in instance._meta.concrete_fields
        for value in [getattr(instance, field.attname)]
    }


def differences(ours: Model | None, orm: Model | None) -> list[str]:
    mine, theirs = values(ours) or {}, values(orm) or {}
    return [
        f"{name}: {mine.get(name)!r} != {theirs.get(name)!r}"
        for name in theirs | mine
        if mine.get(name) != theirs.get(name)
    ]


def lookups_against_the_orm() -> dict[str, Any]:
    """Keys, polled jobs and models loaded by the fixed statements and by the ORM, and queries;
    a submit's count of queued jobs both ways."""
    from accounts.models import ApiKey
    from accounts.services import get_or_create_organization
    from billing import limits
    from generation import estimates, jobs, quotas
    from generation.models import AIModel, DailyImages, Job, OutputImage, find_visible

    now = timezone.now()
    model = AIModel.objects.create(
        model_id="demo-sd15", name="Demo", path="demo-sd15", is_default=True
    )
    org = get_or_create_organization("acme", "basic")
    outsider = get_or_create_organization("other", "basic")
    own = AIModel.objects.create(
        model_id="acme-own", name="Own", path="own", organization=org, files=[{"name": "a"}]
    )
    AIModel.objects.create(model_id="theirs", name="Theirs", path="t", organization=outsider)
    AIModel.objects.create(model_id="off", name="Off", path="off", enabled=False)
    AIModel.objects.create(
        model_id="checking", name="Checking", path="c", status=AIModel.Status.VALIDATING
    )
    key, raw = ApiKey.objects.issue(org, name="laptop")
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=now, expires_at=now + timedelta(days=1))
    expired, expired_raw = ApiKey.objects.issue(org, name="old")
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=now - timedelta(seconds=1))
    revoked, revoked_raw = ApiKey.objects.issue(org, name="gone")
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=now)

    params = {"prompt": "a café at dusk ☕", "samples": 2, "guidance_scale": 7.5, "seed": None}
    job = Job.objects.create(
        organization=org,
        api_key=key,
        model=model,
        status=Job.Status.SUCCESS,
        params=params,
        started_at=now,
        finished_at=now + timedelta(seconds=2),
        generation_time=1.25,
    )
    for index, nsfw in ((1, True), (0, False)):
        OutputImage.objects.create(
            job=job,
            index=index,
            path=f"generations/{index}.png",
            seed=2**40 + index,
            nsfw=nsfw,
            width=64,
            height=96,
        )
    bare = Job.objects.create(organization=org, model=model, params=params)
    elsewhere = Job.objects.create(organization=outsider, model=model, params=params)

    with CaptureQueriesContext(connection) as key_queries:
        found = ApiKey.objects.for_raw_key(raw)
        assert found is not None
        plan = found.organization.plan
    orm_key = ApiKey.objects.select_related("organization__plan").get(pk=key.pk)

    with CaptureQueriesContext(connection) as poll_queries:
        polled = jobs.polled(org, job.pk)
        assert polled is not None
        outputs = list(polled.outputs.all())
        polled_model = polled.model
        back = {output.job.pk for output in outputs}
    orm_job = Job.objects.select_related("model").get(pk=job.pk)
    orm_outputs = list(orm_job.outputs.all())
    bare_polled = jobs.polled(org, bare.pk)
    with CaptureQueriesContext(connection) as model_queries:
        found_own, found_default = find_visible(org, "acme-own"), find_visible(org, None)

    # `bare` and three more wait in the queue; a running job and the outsider's do not count.
    queued = [bare.pk] + [
        Job.objects.create(organization=org, model=model, params=params).pk for _ in range(3)
    ]
    Job.objects.create(organization=org, model=model, params=params, status=Job.Status.PROCESSING)
    counts = [(up_to, besides) for up_to in (1, 3, 4, 10) for besides in (queued[2], job.pk)]
    queue_counts = [
        (
            quotas.queued_jobs(org, up_to, besides),
            Job.objects.for_org(org)
            .filter(status=Job.Status.QUEUED)
            .exclude(pk=besides)[:up_to]
            .count(),
        )
        for up_to, besides in counts
    ]

    # What a queued job's ETA adds up: jobs of other priorities, ages and states, one running.
    ahead = [
        Job.objects.create(
            organization=outsider,
            model=model,
            params={"width": side, "height": 512, "samples": samples, "steps": steps},
            priority=priority,
            status=status,
            progress_step=step,
            progress_total=steps,
        )
        for side, samples, steps, priority, status, step in [
            (1024, 2, 21, 0, Job.Status.PROCESSING, 7),
            (64, 1, 31, 0, Job.Status.QUEUED, 0),
            (768, 3, 41, 2, Job.Status.QUEUED, 0),
            (512, 4, 21, 1, Job.Status.SUCCESS, 21),
        ]
    ]
    # Each a minute older than the next, so that none is "just submitted" (units_ahead's reuse).
    waiting = [*queued, ahead[1].pk, ahead[2].pk]
    sized = {"width": 512, "height": 640, "samples": 1, "steps": 21}
    Job.objects.filter(pk__in=queued).update(params=sized)
    for age, pk in enumerate(reversed(waiting), start=1):
        Job.objects.filter(pk=pk).update(created_at=now - timedelta(minutes=age))
    waiting = [Job.objects.get(pk=pk) for pk in waiting]
    units_ahead = [(estimates.units_ahead(job), orm_units_ahead(job)) for job in waiting]

    # Today's images as submits add them up (the DailyImages row), a canceled and a failed job
    # taken off again by finish(); last night's job counts on its own day.
    tenant = get_or_create_organization("daily", "basic")
    last_night = limits.start_of_day() - timedelta(hours=1)
    made, counts = [], []
    for samples, created_at in ((1, now), (2, now), (4, last_night), (3, now), (4, now)):
        made.append(
            Job.objects.create(
                organization=tenant,
                model=model,
                params={**params, "samples": samples},
                created_at=created_at,
            )
        )
        counts.append(quotas.count_submit(tenant, made[-1], up_to=3))
    jobs.cancel(made[1])
    jobs.finish(Job.objects.filter(pk=made[3].pk), made[3].pk, status=Job.Status.FAILED)
    days = dict(DailyImages.objects.filter(organization=tenant).values_list("day", "images"))
    daily = {
        "counts": counts,
        "today": days.get(quotas.usage_day(now)),
        "last night": days.get(quotas.usage_day(last_night)),
        "summed": quotas.counted(Job.objects.for_org(tenant))
        .filter(created_at__gte=limits.start_of_day())
        .aggregate(n=quotas.images_sum())["n"],
        # What the pages and the account API show: the row, read back.
        "shown": quotas.images_today(tenant),
        "shown per day": quotas.images_per_day(tenant, quotas.usage_day(last_night)) == days,
    }

    return {
        "images today": daily,
        "units ahead": units_ahead,
        "key": differences(found, orm_key),
        "organization": differences(found.organization, orm_key.organization),
        "plan": differences(plan, orm_key.organization.plan),
        "key queries": len(key_queries),
        "job": differences(polled, orm_job),
        "model": differences(polled_model, orm_job.model),
        "outputs": [output.index for output in outputs],
        "output fields": [
            d for a, b in zip(outputs, orm_outputs, strict=True) for d in differences(a, b)
        ],
        "outputs' job": sorted(back),
        "job id": job.pk,
        "poll queries": len(poll_queries),
        "bare outputs": None if bare_polled is None else list(bare_polled.outputs.all()),
        "own model": differences(found_own, AIModel.objects.get(pk=own.pk)),
        "default model": differences(found_default, AIModel.objects.get(pk=model.pk)),
        "model queries": len(model_queries),
        "queue counts": queue_counts,
        "hidden models": [find_visible(org, name) for name in ("theirs", "off", "checking", "x")],
        "refused keys": [ApiKey.objects.for_raw_key(k) for k in (expired_raw, revoked_raw)],
        "refused jobs": [
            jobs.polled(org, elsewhere.pk),
            jobs.polled(outsider, job.pk),
            jobs.polled(org, 0),
            jobs.polled(org, 2**63),
            jobs.polled(org, job.pk + 1000),
        ],
    }


def orm_units_ahead(job: Any) -> float:
    """The ETA's sum of the work ahead of `job`, as the ORM wrote it before it became a fixed
    statement (generation/estimates.py: units_ahead_query)."""
    from django.db.models import Q, Sum

    from generation import estimates
    from generation.models import Job

    before = Job.objects.waiting().filter(
        Q(status=Job.Status.PROCESSING)
        | Q(priority__gt=job.priority)
        | Q(priority=job.priority, created_at__lt=job.created_at)
    )
    bounded = before.annotate(units=estimates._units_left())[: estimates.AHEAD_BOUND]
    return bounded.aggregate(total=Sum("units"))["total"] or 0.0


def check(outcome: dict[str, Any]) -> None:
    """What both databases must show."""
    assert outcome["key"] == outcome["organization"] == outcome["plan"] == [], outcome
    assert outcome["key queries"] == 1, outcome
    assert outcome["job"] == outcome["model"] == outcome["output fields"] == [], outcome
    assert outcome["outputs"] == [0, 1], outcome
    assert outcome["outputs' job"] == [outcome["job id"]], outcome
    assert outcome["poll queries"] == 1, outcome
    assert outcome["bare outputs"] == [], outcome
    assert outcome["refused keys"] == [None, None], outcome
    assert outcome["own model"] == outcome["default model"] == [], outcome
    assert outcome["model queries"] == 2, outcome
    assert outcome["hidden models"] == [None] * 4, outcome
    assert outcome["refused jobs"] == [None] * 5, outcome
    # (ours, the ORM's) for caps 1, 3, 4, 10, each leaving out a queued job, then a finished one.
    expected = [[n, n] for n in (1, 1, 3, 3, 3, 4, 3, 4)]
    assert [list(pair) for pair in outcome["queue counts"]] == expected, outcome
    # Each submit's (queued jobs but its own, up to 3; its day's images with its own), each day
    # a total of its own; then today's less the canceled 2 and the failed 3: the jobs' sum.
    daily = outcome["images today"]
    assert [list(pair) for pair in daily["counts"]] == [[0, 1], [1, 3], [2, 4], [3, 6], [3, 10]]
    assert (daily["today"], daily["last night"], daily["summed"]) == (5, 4, 5), daily
    assert daily["shown"] == 5 and daily["shown per day"], daily
    # Each (ours, the ORM's); every job ahead counted somewhere, the sums not all alike.
    sums = [tuple(pair) for pair in outcome["units ahead"]]
    assert all(ours == pytest.approx(orm) for ours, orm in sums), sums
    assert len({round(ours, 6) for ours, _ in sums}) >= 3, sums


@pytest.mark.django_db
def test_the_fixed_lookups_load_what_the_orm_loads_in_one_query():
    check(lookups_against_the_orm())
