"""Tenants' own models: add by upload, URL or ModelsLab's load_model; validate; use; delete."""

from __future__ import annotations

import http.server
import json
import shutil
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from accounts.models import ApiKey, Membership, User
from generation import model_store, own_models
from generation.models import AIModel
from tests.helpers import Tenant, private_copy
from tests.images import outputs
from tests.ldm_checkpoint import write_ldm_checkpoint

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def model_cache(settings: Any, tmp_path: Path) -> Path:
    settings.PICTOR_MODEL_CACHE_DIR = tmp_path / "model-cache"
    return settings.PICTOR_MODEL_CACHE_DIR


@pytest.fixture
def lora_file(models_dir: Path) -> Path:
    return models_dir / "demo-lora-a" / "pytorch_lora_weights.safetensors"


def bearer(tenant: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.key}"}


def upload(client: Any, tenant: Any, path: Path, **fields: str) -> tuple[int, Any]:
    with path.open("rb") as fh:
        response = client.post(
            "/api/v1/models",
            data={"model_id": "my-lora", "category": "lora", "file": fh, **fields},
            headers=bearer(tenant),
        )
    return response.status_code, response.json()


def image(api: Any, tenant: Any, **fields: Any) -> np.ndarray:
    body = {
        "key": tenant.key,
        "track_id": uuid.uuid4().hex,
        "prompt": "a castle on a hill",
        "width": 64,
        "height": 64,
        "seed": 21,
        **fields,
    }
    status, data = api.post("/api/v3/text2img", body)
    assert status == 200, data
    [pixels] = outputs(data)
    return pixels


def test_it_uploads_validates_uses_and_deletes_a_lora(
    client, api, tenant, demo_models, sync_queue, model_cache, media_dir, lora_file
):
    before = image(api, tenant)
    status, body = upload(client, tenant, lora_file)
    assert status == 202, body
    # The worker's one-step check ran inline (sync queue): the model is ready.
    model = AIModel.objects.get(model_id="my-lora")
    assert model.status == AIModel.Status.READY, model.error
    assert model.organization == tenant.org
    assert len(model.sha256) == 64 and model.size == lora_file.stat().st_size
    stored = media_dir / model.storage_prefix / "pytorch_lora_weights.safetensors"
    assert stored.read_bytes() == lora_file.read_bytes()

    status, listing = api.get("/api/v1/models", **bearer(tenant))
    assert status == 200
    assert [m["model_id"] for m in listing["results"]] == ["my-lora"]
    assert listing["results"][0]["status"] == "ready"
    assert listing["used_bytes"] == model.size

    with_lora = image(api, tenant, lora_model="my-lora")
    assert np.abs(with_lora - before).mean() > 0.3
    # The same as the operator's copy of the same file.
    assert np.array_equal(with_lora, image(api, tenant, lora_model="demo-lora-a"))
    assert np.array_equal(image(api, tenant), before)
    assert any(model_cache.iterdir())

    response = client.delete("/api/v1/models/my-lora", headers=bearer(tenant))
    assert response.status_code == 204
    assert not AIModel.objects.filter(model_id="my-lora").exists()
    assert not stored.exists()
    assert not list(model_cache.glob(f"{model.pk}-*"))
    status, data = api.post(
        "/api/v3/text2img",
        {"key": tenant.key, "prompt": "a castle", "lora_model": "my-lora", "width": 64},
    )
    assert status == 400 and "my-lora" in str(data["message"])


def test_an_embedding_and_a_vae_are_validated_and_usable(
    client, api, tenant, demo_models, sync_queue, model_cache, media_dir, models_dir
):
    embedding = models_dir / "demo-embedding" / "learned_embeds.safetensors"
    vae = models_dir / "demo-vae" / "diffusion_pytorch_model.safetensors"
    assert upload(client, tenant, embedding, model_id="my-emb", category="embedding")[0] == 202
    assert upload(client, tenant, vae, model_id="my-vae", category="vae")[0] == 202
    for model_id in ("my-emb", "my-vae"):
        model = AIModel.objects.get(model_id=model_id)
        assert model.status == AIModel.Status.READY, model.error
    before = image(api, tenant)
    assert np.abs(image(api, tenant, vae="my-vae") - before).mean() > 0.3
    assert np.array_equal(image(api, tenant, vae="my-vae"), image(api, tenant, vae="demo-vae"))
    status, _ = api.post(
        "/api/v3/text2img",
        {"key": tenant.key, "prompt": "a castle", "embeddings_model": "my-emb", "width": 64},
    )
    assert status == 200


def safetensors_bytes(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x80\x04\x95" + b"pickle" * 20, "not a .safetensors file"),
        (b"PK\x03\x04" + b"zip" * 20, "not a .safetensors file"),
        (
            safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}, b"1"),
            "damaged",
        ),
        (safetensors_bytes({"__metadata__": {}}, b""), "no tensors"),
    ],
)
def test_it_refuses_what_is_not_safetensors(
    client, tenant, demo_models, sync_queue, model_cache, tmp_path, content, words
):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    status, body = upload(client, tenant, path)
    assert status == 400, body
    assert body["error"]["field"] == "file"
    assert words in body["error"]["message"]
    assert not AIModel.objects.filter(model_id="my-lora").exists()


def test_it_refuses_a_file_over_the_plan_cap_and_over_the_quota(
    client, tenant, demo_models, sync_queue, model_cache, lora_file
):
    plan = tenant.org.plan
    plan.model_max_bytes = lora_file.stat().st_size - 1
    plan.save()
    status, body = upload(client, tenant, lora_file)
    assert status == 413, body
    assert "larger than the Premium plan allows" in body["error"]["message"]

    plan.model_max_bytes = 10 * lora_file.stat().st_size
    plan.model_storage_bytes = lora_file.stat().st_size + 10
    plan.save()
    assert upload(client, tenant, lora_file)[0] == 202
    status, body = upload(client, tenant, lora_file, model_id="second")
    assert status == 402, body
    assert body["error"]["code"] == "storage_quota_exceeded"
    assert "model storage" in body["error"]["message"]


def test_an_upload_whose_content_length_is_not_a_number_is_a_4xx(client, tenant, demo_models):
    # gunicorn refuses such a header itself; Django's runserver passes it on as it came.
    response = client.post(
        "/api/v1/models",
        data={"model_id": "my-lora", "category": "lora"},
        headers=bearer(tenant),
        CONTENT_LENGTH="12abc",
    )
    assert response.status_code == 400, response.content
    assert "error" in response.json()


def test_uploads_at_the_same_moment_never_pass_the_quota_together(
    client, tenant, demo_models, sync_queue, model_cache, lora_file, monkeypatch
):
    size = lora_file.stat().st_size
    plan = tenant.org.plan
    plan.model_max_bytes, plan.model_storage_bytes = 10 * size, size + 10
    plan.save()
    stored = model_store.upload

    def upload_while_another_lands(model, weights, path):
        # Another upload of the organization passes its own checks and is saved meanwhile.
        entry = stored(model, weights, path)
        AIModel.objects.create(
            model_id="landed-first", name="x", organization=tenant.org, size=size, path="x"
        )
        return entry

    monkeypatch.setattr(model_store, "upload", upload_while_another_lands)
    status, body = upload(client, tenant, lora_file)
    assert status == 402, body
    assert body["error"]["code"] == "storage_quota_exceeded"
    assert not AIModel.objects.filter(model_id="my-lora").exists()


def test_a_header_nested_thousands_deep_is_not_safetensors(
    client, tenant, demo_models, model_cache, tmp_path
):
    header = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    status, body = upload(client, tenant, path)
    assert status == 400, body
    assert body["error"]["field"] == "file"


def test_a_model_deleted_by_two_requests_at_once_is_deleted_once(tenant, demo_models, lora_file):
    model = AIModel.objects.create(
        model_id="twice", name="x", organization=tenant.org, family=AIModel.Family.LORA
    )
    # The second request found the model before the first deleted it.
    assert own_models.delete_model(model) is True
    assert own_models.delete_model(model) is False


@pytest.mark.parametrize(
    ("size", "text"),
    [(51_856, "50.6 KiB"), (512, "512 bytes"), (3 * 1024**2, "3.0 MiB"), (5 * 1024**3, "5.0 GiB")],
)
def test_sizes_are_said_in_a_unit_that_fits(size, text):
    assert own_models.size_text(size) == text


def test_a_plan_without_own_models_says_so(client, free_tenant, demo_models, lora_file):
    status, body = upload(client, free_tenant, lora_file)
    assert status == 402, body
    assert "does not include own models" in body["error"]["message"]


@pytest.fixture
def file_server(lora_file: Path, tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(lora_file, folder / "lora.safetensors")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_it_adds_a_model_from_a_url_and_refuses_an_internal_one(
    api, tenant, demo_models, sync_queue, model_cache, media_dir, file_server, settings
):
    url = f"{file_server}/lora.safetensors"
    body = {"model_id": "from-url", "category": "lora", "url": url}
    # 127.0.0.1 is not public: refused before any connection.
    status, data = api.post("/api/v1/models", body, **bearer(tenant))
    assert status == 400, data
    assert data["error"]["field"] == "url"
    assert "refused" in data["error"]["message"]

    port = int(file_server.rsplit(":", 1)[1])
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.PICTOR_FETCH_ALLOWED_PORTS = [port]
    status, data = api.post("/api/v1/models", body, **bearer(tenant))
    assert status == 202, data
    assert AIModel.objects.get(model_id="from-url").status == AIModel.Status.READY


def test_another_organization_cannot_see_or_use_it(
    client, api, tenant, outsider, demo_models, sync_queue, model_cache, media_dir, lora_file
):
    assert upload(client, tenant, lora_file)[0] == 202
    status, listing = api.get("/api/v1/models", **bearer(outsider))
    assert listing["results"] == []
    assert api.get("/api/v1/models/my-lora", **bearer(outsider))[0] == 404
    assert client.delete("/api/v1/models/my-lora", headers=bearer(outsider)).status_code == 404
    status, data = api.post(
        "/api/v3/text2img",
        {"key": outsider.key, "prompt": "a castle", "lora_model": "my-lora", "width": 64},
    )
    assert status == 400 and "my-lora" in str(data["message"])
    # Its id is taken for everyone: ids are global.
    status, body = upload(client, outsider, lora_file)
    assert status == 400 and body["error"]["field"] == "model_id"


def test_a_failure_s_reason_names_files_but_not_the_worker_s_folders(settings, tmp_path):
    cache = tmp_path / "var" / "model-cache"
    settings.PICTOR_MODEL_CACHE_DIR = cache
    settings.PICTOR_MODELS_DIR = tmp_path / "models"
    file = cache / "32-7309a1" / "pytorch_lora_weights.safetensors"
    error = OSError(f"Error while deserializing header: {file} is not a file; see {cache}/3/")
    reason = own_models.failure_reason(error)
    assert reason == (
        "OSError: Error while deserializing header: pytorch_lora_weights.safetensors is not a "
        "file; see "
    )
    other = ValueError(f"no model in {tmp_path / 'models' / 'base'}/unet/ and 'x/y' stays")
    assert own_models.failure_reason(other) == "ValueError: no model in  and 'x/y' stays"


def test_a_model_that_does_not_load_fails_with_its_reason(
    client, tenant, demo_models, sync_queue, model_cache, media_dir, models_dir
):
    # A VAE sent as a LoRA: valid safetensors, the wrong architecture.
    vae = models_dir / "demo-vae" / "diffusion_pytorch_model.safetensors"
    status, body = upload(client, tenant, vae, model_id="not-a-lora")
    assert status == 202, body
    model = AIModel.objects.get(model_id="not-a-lora")
    assert model.status == AIModel.Status.FAILED
    assert model.error
    assert model.size == 0  # its files are gone: no storage counted
    assert not (media_dir / model.storage_prefix).exists() or not any(
        (media_dir / model.storage_prefix).iterdir()
    )


def test_a_validating_model_cannot_be_used(api, tenant, demo_models, model_cache, media_dir):
    AIModel.objects.create(
        model_id="pending",
        name="pending",
        family=AIModel.Family.LORA,
        organization=tenant.org,
        status=AIModel.Status.VALIDATING,
    )
    status, data = api.post(
        "/api/v3/text2img",
        {"key": tenant.key, "prompt": "a castle", "lora_model": "pending", "width": 64},
    )
    assert status == 400 and "pending" in str(data["message"])


def test_modelslab_load_model_adds_a_lora_the_formats_can_use(
    api, tenant, demo_models, sync_queue, model_cache, media_dir, file_server, settings
):
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.PICTOR_FETCH_ALLOWED_PORTS = [int(file_server.rsplit(":", 1)[1])]
    body = {
        "key": tenant.key,
        "url": f"{file_server}/lora.safetensors",
        "model_id": "ml-lora",
        "model_category": "lora",
        "model_format": "safetensors",
        "model_visibility": "private",
        "model_name": "My LoRA",
    }
    status, data = api.post("/api/v3/load_model", body)
    assert status == 200, data
    assert data["status"] == "success" and data["model_status"] == "ready"
    status, listing = api.post("/api/v4/dreambooth/model_list", {"key": tenant.key})
    assert "ml-lora" in json.dumps(listing)
    image(api, tenant, lora_model="ml-lora")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model_format": "ckpt"}, "model_format"),
        ({"model_category": "controlnet"}, "model_category"),
        ({"model_visibility": "public"}, "model_visibility"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
    ],
)
def test_modelslab_load_model_refuses_what_it_cannot_honour(
    api, tenant, demo_models, model_cache, fields, field
):
    body = {
        "key": tenant.key,
        "url": "https://example.com/x.safetensors",
        "model_id": "ml-x",
        "model_category": "lora",
        **fields,
    }
    status, data = api.post("/api/v3/load_model", body)
    assert status == 400, data
    assert data["status"] == "error"
    assert field in json.dumps(data["message"])
    assert not AIModel.objects.filter(model_id="ml-x").exists()


def test_a_single_file_checkpoint_is_validated_and_usable(
    client, api, tenant, demo_models, sync_queue, model_cache, media_dir, models_dir, tmp_path
):
    checkpoint = write_ldm_checkpoint(models_dir / "demo-sd15", tmp_path / "mine.safetensors")
    status, body = upload(client, tenant, checkpoint, model_id="my-ckpt", category="checkpoint")
    assert status == 202, body
    assert body["category"] == "checkpoint" and body["base"] == "sd15"
    model = AIModel.objects.get(model_id="my-ckpt")
    assert model.status == AIModel.Status.READY, model.error
    # Its configs came from the server's sd15 checkpoint, and are stored next to the weights.
    assert any(entry["name"].startswith("config/") for entry in model.files)
    pixels = image(api, tenant, model_id="my-ckpt")
    # The same weights as demo-sd15, converted there and back: nearly the same image.
    assert np.abs(pixels - image(api, tenant, model_id="demo-sd15")).mean() < 2


def test_a_broken_vae_fails_its_one_step_check(
    client, api, tenant, demo_models, sync_queue, model_cache, media_dir, tmp_path
):
    # Well-formed safetensors, but no VAE: the worker's load fails and says why.
    path = tmp_path / "vae.safetensors"
    path.write_bytes(
        safetensors_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4))
    )
    status, body = upload(client, tenant, path, model_id="bad-vae", category="vae")
    assert status == 202, body
    model = AIModel.objects.get(model_id="bad-vae")
    assert model.status == AIModel.Status.FAILED and model.error
    assert model.size == 0 and model.files == []
    assert not (media_dir / model.storage_prefix).exists() or not any(
        (media_dir / model.storage_prefix).rglob("*.safetensors")
    )


def test_an_upload_while_redis_is_down_is_a_503_and_stores_nothing(
    client, tenant, demo_models, model_cache, media_dir, lora_file, dead_redis
):
    status, body = upload(client, tenant, lora_file)
    assert status == 503, body
    assert not AIModel.objects.filter(model_id="my-lora").exists()
    assert not (media_dir / "models").exists() or not any((media_dir / "models").rglob("*"))


def member_client(client: Any, tenant: Any, role: str) -> Any:
    user = User.objects.create_user(f"{role}@example.com", "pw-123456789")
    Membership.objects.create(user=user, organization=tenant.org, role=role)
    client.force_login(user)
    return client


def test_an_admin_adds_and_deletes_a_model_on_the_models_page(
    client, tenant, demo_models, sync_queue, model_cache, media_dir, lora_file
):
    member_client(client, tenant, Membership.Role.ADMIN)
    with lora_file.open("rb") as fh:
        response = client.post(
            "/app/models/",
            {"file": fh, "model_id": "page-lora", "category": "lora", "base": "sd15"},
            follow=True,
        )
    page = response.content.decode()
    assert response.status_code == 200
    assert "page-lora is uploaded" in page
    assert AIModel.objects.get(model_id="page-lora").status == AIModel.Status.READY
    assert 'data-model="page-lora"' in page and ">ready<" in page

    # A refusal is said on the page, nothing stored.
    with lora_file.open("rb") as fh:
        response = client.post(
            "/app/models/", {"file": fh, "model_id": "Bad Id!", "category": "lora"}, follow=True
        )
    assert "Model id: Use 1 to 80 lower-case letters" in response.content.decode()

    response = client.post("/app/models/page-lora/delete/", follow=True)
    assert "page-lora is deleted" in response.content.decode()
    assert not AIModel.objects.filter(model_id="page-lora").exists()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        # PostgreSQL cannot store a NUL character (SQLite can): said on the page instead.
        ("a\x00b", "holds a NUL character"),
        # The name column holds 200 characters: a longer name is refused, not cut.
        ("n" * 201, "Name: A name has at most 200 characters."),
    ],
)
def test_a_model_name_that_cannot_be_stored_whole_is_refused_and_nothing_stored(
    client, tenant, demo_models, model_cache, media_dir, lora_file, name, says
):
    member_client(client, tenant, Membership.Role.ADMIN)
    with lora_file.open("rb") as fh:
        fields = {"file": fh, "model_id": "bad-name-lora", "category": "lora", "name": name}
        response = client.post("/app/models/", fields, follow=True)
    assert says in response.content.decode()
    assert not AIModel.objects.filter(model_id="bad-name-lora").exists()


def test_a_member_sees_the_models_page_but_cannot_upload_or_delete(
    client, tenant, demo_models, model_cache, media_dir, lora_file
):
    member_client(client, tenant, Membership.Role.MEMBER)
    page = client.get("/app/models/").content.decode()
    assert "demo-sd15" in page and "Owners and admins can add" in page
    assert 'data-testid="model-upload"' not in page
    with lora_file.open("rb") as fh:
        response = client.post(
            "/app/models/", {"file": fh, "model_id": "sneaky", "category": "lora"}
        )
    assert response.status_code == 403
    assert not AIModel.objects.filter(model_id="sneaky").exists()
    own = private_copy("demo-lora-a", tenant.org)
    assert client.post(f"/app/models/{own}/delete/").status_code == 403
    assert AIModel.objects.filter(model_id=own).exists()


def test_a_key_acts_with_its_makers_role_so_a_members_key_cannot_manage_models(
    api, client, tenant, demo_models, sync_queue, model_cache, media_dir, lora_file
):
    user = User.objects.create_user("member@example.com", "pw-123456789")
    membership = Membership.objects.create(
        user=user, organization=tenant.org, role=Membership.Role.MEMBER
    )
    _, raw = ApiKey.objects.issue(tenant.org, "theirs", created_by=user)
    member = Tenant(tenant.org, raw)
    status, data = upload(client, member, lora_file)
    assert status == 403 and "owner or an admin" in data["error"]["message"], data
    own = private_copy("demo-lora-a", tenant.org)
    response = client.delete(f"/api/v1/models/{own}", headers=bearer(member))
    assert response.status_code == 403
    body = {"key": raw, "url": "https://example.com/x.safetensors", "model_id": "ml-x"}
    status, data = api.post("/api/v3/load_model", body)
    assert status == 403 and data["status"] == "error", data
    assert set(
        AIModel.objects.filter(organization=tenant.org).values_list("model_id", flat=True)
    ) == {own}

    # Promoted, the same key manages models.
    membership.role = Membership.Role.ADMIN
    membership.save()
    assert upload(client, member, lora_file)[0] == 202
    assert client.delete(f"/api/v1/models/{own}", headers=bearer(member)).status_code == 204


def test_a_plan_without_own_models_says_so_on_the_page(client, free_tenant, demo_models):
    member_client(client, free_tenant, Membership.Role.OWNER)
    page = client.get("/app/models/").content.decode()
    assert "plan does not include own models" in page


def test_a_validation_whose_task_was_lost_is_queued_again_and_runs_once(
    client, tenant, demo_models, lora_file, model_cache, media_dir
):
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone
    from django_q.models import OrmQ

    from generation import own_models
    from generation.tasks import sweep

    status, data = upload(client, tenant, lora_file)
    assert status == 202, data
    model = AIModel.objects.get(model_id="my-lora")
    assert model.status == AIModel.Status.VALIDATING
    OrmQ.objects.all().delete()  # the broker lost its task (a Redis restart, a killed worker)
    assert own_models.requeue_lost_validations() == 0  # too recent to call it lost

    AIModel.objects.filter(pk=model.pk).update(created_at=timezone.now() - timedelta(minutes=20))
    lock = own_models.VALIDATION_LOCK.format(model.pk)
    cache.add(lock, 1)  # a worker validates it right now: nothing is queued
    assert own_models.requeue_lost_validations() == 0
    assert own_models.validate_model(model.pk) == "busy"
    cache.delete(lock)

    sweep()
    assert [task.func() for task in OrmQ.objects.all()] == [own_models.VALIDATE_TASK]
    sweep()  # once per interval, whichever host sweeps
    assert OrmQ.objects.count() == 1
    assert own_models.validate_model(model.pk) == "ready"
    assert own_models.validate_model(model.pk) == "gone"  # a late duplicate changes nothing
    assert AIModel.objects.get(pk=model.pk).status == AIModel.Status.READY


def test_a_validation_that_never_ran_in_a_day_fails_the_model(
    client, tenant, demo_models, lora_file
):
    from datetime import timedelta

    from django.utils import timezone

    from generation import own_models

    status, data = upload(client, tenant, lora_file)
    assert status == 202, data
    model = AIModel.objects.get(model_id="my-lora")
    AIModel.objects.filter(pk=model.pk).update(created_at=timezone.now() - timedelta(hours=25))
    assert own_models.requeue_lost_validations() == 0
    model.refresh_from_db()
    assert (model.status, model.files, model.size) == (AIModel.Status.FAILED, [], 0)
    assert "never ran" in model.error
