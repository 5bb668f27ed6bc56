"""The hires fix's hr_upscaler: each listed latent mode enlarges the latents as webui's does."""

from __future__ import annotations

import base64
import io
import json
import uuid

import numpy as np
import pytest
from PIL import Image

from generation.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

TXT2IMG = "/sdapi/v1/txt2img"
MODES = "/sdapi/v1/latent-upscale-modes"
# webui's latent upscale modes (modules/shared.py) as the (torch mode, antialias) that runs:
# enlarging, bilinear antialiasing changes no pixel, so Latent (antialiased) runs as Latent.
WEBUI = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", False),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"webui:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def hires(api, tenant, **fields):
    body = {
        "prompt": "a dune",
        # A comment of its own: the spam filter refuses the same body twice within 30 s.
        "comments": {"test": uuid.uuid4().hex},
        "width": 64,
        "height": 64,
        "seed": 7,
        "steps": 6,
        "enable_hr": True,
        "denoising_strength": 0.5,
        **fields,
    }
    return api.post(TXT2IMG, body, **basic(tenant.key))


def test_the_listed_modes_run_as_webui_names_them(api, tenant, demo_models, queued_only):
    status, data = api.get(MODES, **basic(tenant.key))
    assert status == 200, data
    names = [m["name"] for m in data]
    assert names[0] == "Latent"
    assert set(names) == set(WEBUI)
    for name in names:
        status, answer = hires(api, tenant, hr_upscaler=name)
        assert status == 504, answer  # queued (then given up on): the name was accepted
        job = Job.objects.order_by("-pk").first()
        assert (job.params["hires_mode"], job.params["hires_antialias"]) == WEBUI[name]
    # Left out, hr_upscaler is webui's default, Latent (bilinear).
    status, answer = hires(api, tenant)
    assert status == 504, answer
    assert Job.objects.order_by("-pk").first().params["hires_mode"] == "bilinear"


@pytest.mark.parametrize("name", ["R-ESRGAN 4x+", "latent"])
def test_an_unknown_mode_is_refused(api, tenant, demo_models, name):
    status, answer = hires(api, tenant, hr_upscaler=name)
    assert status == 400, answer
    assert answer["detail"].startswith("hr_upscaler: "), answer
    assert not Job.objects.exists()


def test_the_modes_give_different_pixels_and_the_info_names_them(
    api, tenant, demo_models, sync_queue
):
    images = {}
    for name in ("Latent", "Latent (bicubic)", "Latent (nearest)"):
        status, data = hires(api, tenant, hr_upscaler=name)
        assert status == 200, data
        [image] = data["images"]
        picture = Image.open(io.BytesIO(base64.b64decode(image)))
        assert picture.size == (128, 128)
        images[name] = np.asarray(picture.convert("RGB"), dtype=np.int16)
        info = json.loads(data["info"])
        assert info["extra_generation_params"]["Hires upscaler"] == name
    assert np.abs(images["Latent"] - images["Latent (bicubic)"]).mean() > 1
    assert np.abs(images["Latent"] - images["Latent (nearest)"]).mean() > 1
    assert np.abs(images["Latent (bicubic)"] - images["Latent (nearest)"]).mean() > 1
