"""Shared fixtures: the demo models (built once), three tenants, an API client, the queue mode."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Tenant, make_tenant, xdist_worker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Two torch threads for the run, shared by its pytest-xdist workers (`make test` starts two):
# torch with more threads than free cores runs many times slower (docs/benchmarks.md). The
# first pytest process sets the two unless the caller chose, and marks them as its own; a
# worker inherits both, and takes its share.
if "PICTOR_TORCH_THREADS" not in os.environ:
    os.environ["PICTOR_TORCH_THREADS"] = os.environ["PICTOR_TEST_RUN_THREADS"] = "2"
if os.environ.get("PICTOR_TEST_RUN_THREADS") and "PYTEST_XDIST_WORKER" in os.environ:
    _share = int(os.environ["PICTOR_TEST_RUN_THREADS"]) // xdist_worker()[1]
    os.environ["PICTOR_TORCH_THREADS"] = str(max(1, _share))


def _own_metrics_dir() -> None:
    """Give this run a metrics folder of its own, not the checkout's var/metrics.

    Runs in parallel share a checkout, and /metrics adds up every file in the folder. The
    settings (loaded by pytest-django before this file) exported var/metrics; no metric has
    written a file yet (sdplatform/metrics.py), so moving the folder here is still in time.
    """
    from django.conf import settings

    folder = tempfile.mkdtemp(prefix="pictor-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    settings.PROMETHEUS_MULTIPROC_DIR = Path(folder)


_own_metrics_dir()


def _torch_threads() -> None:
    """Give the engine this run's PICTOR_TORCH_THREADS default, set above.

    The settings read the variable before this file set it (see _own_metrics_dir), and the app
    has configured the engine from them: read it again and configure the engine anew.
    """
    from django.conf import settings

    from generation.apps import configure_engine
    from sdplatform.env import envint

    settings.PICTOR_TORCH_THREADS = envint("PICTOR_TORCH_THREADS", default=None)
    configure_engine()


_torch_threads()

DEMO_DIR_ENV = "PICTOR_TEST_MODELS_DIR"


@pytest.fixture(autouse=True)
def _fresh_queue_sums() -> None:
    """Each test's database starts empty: no ETA sum read in another test's may be reused."""
    from generation import estimates

    estimates._fresh_ahead.clear()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with every demo model, built once per session (or reused from the env)."""
    from generation.management.commands.build_demo_models import DEMO_MODELS

    root = Path(os.environ.get(DEMO_DIR_ENV) or tmp_path_factory.mktemp("models"))
    for model_id, _family, _base, _description, build in DEMO_MODELS:
        build(str(root / model_id))
    return root


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, reached over HTTP like any S3-compatible store."""
    from moto.server import ThreadedMotoServer

    from tests.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def media_dir(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"allow_overwrite": True, "location": str(settings.MEDIA_ROOT)},
        },
    }
    return settings.MEDIA_ROOT


@pytest.fixture
def demo_model(db: None, settings: Any, models_dir: Path, media_dir: Path) -> Any:
    from generation.models import AIModel

    settings.PICTOR_MODELS_DIR = models_dir
    return AIModel.objects.create(
        model_id="demo-sd15", name="demo-sd15", path="demo-sd15", is_default=True
    )


@pytest.fixture
def demo_models(demo_model: Any) -> dict[str, Any]:
    """Every demo model registered (demo-sd15 the default), as the build command does."""
    from generation.management.commands.build_demo_models import DEMO_MODELS, DISTILLED
    from generation.models import AIModel

    models = {"demo-sd15": demo_model}
    for model_id, family, base, description, _build in DEMO_MODELS:
        if model_id not in models:
            models[model_id] = AIModel.objects.create(
                model_id=model_id,
                name=model_id,
                family=family,
                base=base,
                path=model_id,
                description=description,
                distillation=DISTILLED.get(model_id, ""),
            )
    return models


@pytest.fixture(autouse=True)
def default_plans(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush the rows the seed migration wrote; put the plans back."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None and "db" not in request.fixturenames:
        return
    transactional = marker is not None and marker.kwargs.get("transaction", False)
    request.getfixturevalue("transactional_db" if transactional else "db")
    from billing.models import Plan
    from billing.plans import seed_default_plans

    seed_default_plans(Plan)


@pytest.fixture
def tenant(db: None) -> Tenant:
    """The caller: an organization on the premium plan with one key."""
    return make_tenant("acme")


@pytest.fixture
def outsider(db: None) -> Tenant:
    """Another organization, whose ids must look missing to `tenant`."""
    return make_tenant("globex")


@pytest.fixture
def free_tenant(db: None) -> Tenant:
    return make_tenant("freeloader", "free")


@pytest.fixture
def sync_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run django-q2 tasks inline, so a submitted job is done when the request returns."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def api(client: Any) -> Any:
    """POST JSON and get (status, body) back."""

    class Api:
        def post(self, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
            response = client.post(
                path,
                data=body if body is not None else {},
                content_type="application/json",
                headers=headers,
            )
            return response.status_code, _json(response)

        def raw(self, path: str, data: bytes | str, content_type: str, **headers: str) -> Any:
            return client.post(path, data=data, content_type=content_type, headers=headers)

        def get(self, path: str, **headers: str) -> tuple[int, Any]:
            response = client.get(path, headers=headers)
            return response.status_code, _json(response)

    return Api()


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.content


@pytest.fixture
def queued_only(settings: Any) -> None:
    """No worker and no wait for a blocking format: the job is queued, then canceled (504)."""
    settings.PICTOR_BLOCKING_WAIT = 0


@pytest.fixture
def no_wait(settings: Any) -> Iterator[None]:
    settings.PICTOR_SYNC_WAIT = 0
    yield


@pytest.fixture
def dead_redis(settings: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """The cache and the django-q2 broker on Redis at a port where nothing listens."""
    import socket

    from django_q.conf import Conf
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with socket.socket() as probe:  # a port bound, then closed: a connection there is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    retry = Retry(NoBackoff(), 1)
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
                "CONNECTION_POOL_KWARGS": {"retry": retry},
            },
        }
    }
    # The broker as sdplatform/settings.py makes it with REDIS_URL set (django-q2 reads its
    # configuration once, at import).
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(
        Conf,
        "REDIS",
        {"host": "127.0.0.1", "port": port, "socket_connect_timeout": 0.5, "retry": retry},
    )
    return port


@dataclass
class People:
    """Users of two organizations: acme's owner and member, and globex's owner (outsider)."""

    owner: Any
    member: Any
    outsider: Any
    acme: Any
    globex: Any


@pytest.fixture
def people(db: None) -> People:
    from django.utils import timezone

    from accounts.models import Membership, User

    acme = make_tenant("acme", "basic")
    globex = make_tenant("globex", "basic")
    users = {}
    for name, tenant, role in (
        ("owner", acme, Membership.Role.OWNER),
        ("member", acme, Membership.Role.MEMBER),
        ("outsider", globex, Membership.Role.OWNER),
    ):
        users[name] = User.objects.create_user(
            f"{name}@example.com", "pw-123456789", email_verified_at=timezone.now()
        )
        Membership.objects.create(user=users[name], organization=tenant.org, role=role)
    return People(users["owner"], users["member"], users["outsider"], acme.org, globex.org)
