"""Answers to polls: counted apart from generations, and telling the client when to ask again.

A view whose methods only read a job's state lists them in `poll_methods`; billing/throttles.py
counts those against PICTOR_POLL_RATE_PER_MINUTE instead of the plan's requests per minute.
A queued or running job's answer carries Retry-After: the job's estimated remaining seconds,
between 1 and MAX_RETRY_AFTER, so a client neither hammers nor oversleeps.
"""

from __future__ import annotations

import math
from typing import TypeVar

from django.http import HttpResponseBase

from generation import estimates
from generation.models import Job

# Reading methods; the ModelsLab and Dan fetches are POSTs that read.
POLL_METHODS = ("GET", "HEAD", "POST")
MAX_RETRY_AFTER = 10

R = TypeVar("R", bound=HttpResponseBase)


def retry_after(job: Job) -> int | None:
    """Whole seconds to wait before asking about `job` again; None once it has ended."""
    if job.is_finished:
        return None
    return max(1, min(MAX_RETRY_AFTER, math.ceil(estimates.eta(job))))


def hinted(response: R, job: Job | None) -> R:
    """`response` with Retry-After set while `job` is still queued or running."""
    seconds = retry_after(job) if job is not None else None
    if seconds is not None:
        response["Retry-After"] = str(seconds)
    return response
