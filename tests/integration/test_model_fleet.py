"""Models through the object store: two workers with their own caches and no model folder.

The operator publishes the default checkpoint to S3 (moto over HTTP, the real storage backend);
a tenant uploads a LoRA; each worker fetches what it needs into its own cache, checked by
SHA-256, and both give the same pixels; deleting the LoRA removes its objects, and each host's
cache drops its copy.
"""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.integration.conftest import dump_logs
from tests.processes import manage, spawn, stop

pytestmark = pytest.mark.integration


def start_worker(stack, name: str, tmp: Path) -> tuple[dict[str, str], object]:
    env = {
        **stack.env,
        "PICTOR_MODEL_CACHE_DIR": str(tmp / f"cache-{name}"),
        # Nothing on this host's disk: every model comes from the object store.
        "PICTOR_MODELS_DIR": str(tmp / f"no-models-{name}"),
    }
    (tmp / f"no-models-{name}").mkdir(exist_ok=True)
    process = spawn(env, tmp / f"worker-{name}.log", "manage.py", "worker")
    stack.processes[f"worker-{name}"] = process
    return env, process


def generate(stack, **fields) -> np.ndarray:
    # A new track_id each time: the spam filter refuses the same body within 30 s.
    body = {"prompt": "a lighthouse", "width": 64, "height": 64, "seed": 7, **fields}
    body["track_id"] = uuid.uuid4().hex
    data = stack.post("/api/v3/text2img", body, timeout=120).json()
    deadline = time.monotonic() + 180
    while data["status"] == "processing" and time.monotonic() < deadline:
        time.sleep(0.5)
        data = stack.post(f"/api/v3/fetch/{data['id']}", {}).json()
    assert data["status"] == "success", f"{data}\n{dump_logs(stack)}"
    [url] = data["output"]
    image = Image.open(io.BytesIO(requests.get(url, timeout=10).content)).convert("RGB")
    return np.asarray(image, dtype=np.float32)


def entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if p.is_dir()} if cache.is_dir() else set()


def test_models_reach_two_workers_through_s3_and_deleting_one_clears_it(
    make_stack, models_dir, tmp_path
):
    stack = make_stack(PICTOR_SYNC_WAIT="0")
    stop([stack.processes.pop("worker")], grace=3)
    out = stack.manage("publish_model", "demo-sd15")
    assert "under models/public/demo-sd15/" in out
    auth = {"Authorization": f"Bearer {stack.key}"}

    env_a, _worker_a = start_worker(stack, "a", tmp_path)
    lora = models_dir / "demo-lora-a" / "pytorch_lora_weights.safetensors"
    with lora.open("rb") as fh:
        response = requests.post(
            stack.base_url + "/api/v1/models",
            data={"model_id": "fleet-lora", "category": "lora"},
            files={"file": ("lora.safetensors", fh)},
            headers=auth,
            timeout=60,
        )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "validating"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        model = requests.get(
            stack.base_url + "/api/v1/models/fleet-lora", headers=auth, timeout=10
        ).json()
        if model["status"] != "validating":
            break
        time.sleep(0.5)
    assert model["status"] == "ready", f"{model}\n{dump_logs(stack)}"
    objects = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix="models/")["Contents"]
    keys = {o["Key"] for o in objects}
    assert any(k.endswith("/pytorch_lora_weights.safetensors") for k in keys)
    assert any(k.startswith("models/public/demo-sd15/") for k in keys)

    plain_a = generate(stack)
    lora_a = generate(stack, lora_model="fleet-lora")
    assert np.abs(lora_a - plain_a).mean() > 0.3
    cache_a = Path(env_a["PICTOR_MODEL_CACHE_DIR"])
    assert len(entries(cache_a)) == 2  # the checkpoint and the LoRA

    # The other host: a fresh cache, filled from S3 on first use, the same pixels.
    stop([stack.processes.pop("worker-a")], grace=5)
    env_b, _worker_b = start_worker(stack, "b", tmp_path)
    lora_b = generate(stack, lora_model="fleet-lora")
    assert np.array_equal(lora_a, lora_b)
    cache_b = Path(env_b["PICTOR_MODEL_CACHE_DIR"])
    assert entries(cache_b) == entries(cache_a)

    response = requests.delete(
        stack.base_url + "/api/v1/models/fleet-lora", headers=auth, timeout=30
    )
    assert response.status_code == 204
    left = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix="models/").get("Contents", [])
    assert not any("fleet-lora" in o["Key"] for o in left)
    assert any(o["Key"].startswith("models/public/demo-sd15/") for o in left)
    refused = stack.post(
        "/api/v3/text2img", {"prompt": "a lighthouse", "lora_model": "fleet-lora"}
    ).json()
    assert refused["status"] == "error"

    # Each host drops the deleted model's copy on its next fetch, or with the sweep command.
    for env, cache in ((env_a, cache_a), (env_b, cache_b)):
        manage(env, "sweep_model_cache")
        remaining = entries(cache)
        assert len(remaining) == 1, remaining
    assert np.array_equal(generate(stack), plain_a)
