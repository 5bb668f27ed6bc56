"""A ControlNet unit whose guidance window holds none of the job's steps is a 400 naming it."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from generation.models import Job
from tests.images import png_base64, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
FIELD = "alwayson_scripts.controlnet.args[{}].guidance_end"


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"webui:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def unit(**fields) -> dict:
    model = "demo-controlnet-canny"
    return {
        "image": png_base64(shapes_image(64, 64, variant=0)),
        "module": "canny",
        "model": f"{model} [{hashlib.sha256(model.encode()).hexdigest()[:8]}]",
        "enabled": True,
        **fields,
    }


def post(api, tenant, *units, path=TXT2IMG, **fields):
    body = {
        "prompt": "a lighthouse at dusk",
        "width": 64,
        "height": 64,
        "steps": 21,
        "comments": {"test": uuid.uuid4().hex},
        "alwayson_scripts": {"controlnet": {"args": list(units)}},
        **fields,
    }
    return api.post(path, body, **basic(tenant.key))


def test_a_window_between_two_steps_is_refused_naming_the_unit(api, tenant, demo_models):
    empty = {"guidance_start": 0.95, "guidance_end": 0.96}
    status, data = post(api, tenant, unit(**empty))
    assert status == 400, data
    assert data["detail"].startswith(FIELD.format(0) + ": "), data
    status, data = post(api, tenant, unit(), unit(**empty))
    assert status == 400, data
    assert data["detail"].startswith(FIELD.format(1) + ": "), data
    assert not Job.objects.exists()


def test_the_window_is_checked_on_the_steps_the_job_runs(api, tenant, demo_models, queued_only):
    window = {"guidance_start": 0.45, "guidance_end": 0.6}
    # 6 steps of Euler a hold no step in it; Heun's 11 timesteps hold one (5/11 to 6/11).
    status, data = post(api, tenant, unit(**window), steps=6)
    assert status == 400, data
    status, data = post(api, tenant, unit(**window), steps=6, sampler_name="Heun")
    assert status == 504, data  # queued: accepted
    # img2img runs the last steps × denoising_strength steps: 3 of 6 hold none of (0.5, 0.8).
    late = {"guidance_start": 0.5, "guidance_end": 0.8}
    status, data = post(api, tenant, unit(**late), steps=6)
    assert status == 504, data
    init = {"init_images": [png_base64(shapes_image(64, 64, variant=2))], "denoising_strength": 0.5}
    status, data = post(api, tenant, unit(**late), path=IMG2IMG, steps=6, **init)
    assert status == 400, data
    assert data["detail"].startswith(FIELD.format(0) + ": "), data
    assert Job.objects.count() == 2
