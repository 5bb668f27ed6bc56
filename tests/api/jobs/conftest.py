"""What the job API's tests share: jobs made through the ModelsLab route, and a JSON client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from generation.models import Job
from tests.helpers import Tenant


@pytest.fixture
def jobs_api(client: Any) -> Any:
    """GET, POST and DELETE /api/v1/ with a Bearer key; answers (status, body)."""

    class JobsApi:
        def call(self, method: str, path: str, key: str | None, **extra: Any) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            response = client.generic(
                method, path, content_type="application/json", headers=headers, **extra
            )
            body = response.json() if response.content else None
            return response.status_code, body

        def get(self, path: str, key: str | None) -> tuple[int, Any]:
            return self.call("GET", path, key)

        def post(self, path: str, key: str | None, **extra: Any) -> tuple[int, Any]:
            return self.call("POST", path, key, **extra)

        def delete(self, path: str, key: str | None) -> tuple[int, Any]:
            return self.call("DELETE", path, key)

    return JobsApi()


@pytest.fixture
def submit(api: Any, demo_models: Any) -> Callable[..., int]:
    """Queue a small text2img job for `tenant` through /api/v3/text2img; returns its id."""

    def submit(tenant: Tenant, **fields: Any) -> int:
        body = {
            "key": tenant.key,
            # A new prompt each time: the spam filter refuses the same body within 30 s.
            "prompt": f"a lighthouse {uuid.uuid4().hex[:8]}",
            "width": 64,
            "height": 64,
            **fields,
        }
        status, data = api.post("/api/v3/text2img", body)
        assert status == 200, data
        return int(data["id"])

    return submit


def clone(job_id: int, **changes: Any) -> Job:
    """A copy of the job row with `changes` (another status, time, model...)."""
    job = Job.objects.get(pk=job_id)
    job.pk = None
    for name, value in changes.items():
        setattr(job, name, value)
    job.save()
    return job


def local_path(url: str) -> str:
    """The path and query of an absolute link, for the test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"
