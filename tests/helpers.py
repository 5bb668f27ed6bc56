"""Helpers the tests share (fixtures stay in conftest.py; these are plain functions)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


def xdist_worker() -> tuple[int, int]:
    """This pytest-xdist worker's index and its run's worker count; (0, 1) in a plain run."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")), count


@dataclass
class Tenant:
    org: Any
    key: str


def make_tenant(slug: str, plan: str = "premium") -> Tenant:
    from accounts.models import ApiKey
    from accounts.services import get_or_create_organization

    org = get_or_create_organization(slug, plan)
    _, raw = ApiKey.objects.issue(org)
    return Tenant(org, raw)


def private_copy(source: str, org: Any) -> str:
    """A copy of the registered model `source`, private to `org`; returns its id."""
    from generation.models import AIModel

    model = AIModel.objects.get(model_id=source)
    model.pk = None
    model.model_id = f"{source}-private"
    model.is_default = False
    model.organization = org
    model.save()
    return model.model_id


def unsigned(url: str) -> str:
    """An image link without its query: two signings of one image differ in expiry and signature,
    since each is signed when its answer is made, and a second boundary can fall between them."""
    return url.partition("?")[0]
