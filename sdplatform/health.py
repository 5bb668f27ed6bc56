"""Liveness and readiness probes."""

from __future__ import annotations

import uuid

from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers."""
    if _database_ok():
        return JsonResponse({"status": "ok"})
    return JsonResponse({"status": "error", "database": "unreachable"}, status=503)


def _broker_ok() -> bool:
    from django_q.brokers import get_broker

    try:
        broker = get_broker()
        # ping() alone is always True for the ORM broker; queue_size() reads its table.
        return bool(broker.ping()) and broker.queue_size() is not None
    except Exception:
        return False


def _storage_ok() -> bool:
    name = f"health/{uuid.uuid4().hex}.txt"
    try:
        saved = default_storage.save(name, ContentFile(b"ok"))
        default_storage.delete(saved)
        return True
    except Exception:
        return False


def _cache_ok() -> bool:
    try:
        cache.set("pictor:readyz", "ok", 5)
        return bool(cache.get("pictor:readyz") == "ok")
    except Exception:
        return False


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, the broker, the cache and the storage all answer."""
    checks = {
        "database": _database_ok(),
        "broker": _broker_ok(),
        "cache": _cache_ok(),
        "storage": _storage_ok(),
    }
    ok = all(checks.values())
    body = {
        "status": "ok" if ok else "error",
        **{k: "ok" if v else "down" for k, v in checks.items()},
    }
    return JsonResponse(body, status=200 if ok else 503)
