"""PAG, panoramas, variation seeds and tiling on the wire: ModelsLab and A1111 (variations.py)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from generation.models import Job
from tests.images import noise_image, outputs, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

TEXT2IMG = "/api/v3/text2img"
TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"


def modelslab(tenant, **fields):
    return {"key": tenant.key, "prompt": "a red fox in the snow", "seed": 42, **fields}


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"webui:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def webui(**fields):
    return {
        "prompt": "a quiet harbour",
        "seed": 42,
        "steps": 10,
        "width": 64,
        "height": 64,
        **fields,
    }


def decoded(data: dict) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)
        for b64 in data["images"]
    ]


# --- ModelsLab ---------------------------------------------------------------------------


def test_self_attention_yes_runs_pag_and_changes_the_image(api, tenant, demo_model, sync_queue):
    small = {"width": 64, "height": 64}
    status, plain = api.post(TEXT2IMG, modelslab(tenant, self_attention="no", **small))
    assert status == 200, plain
    status, guided = api.post(TEXT2IMG, modelslab(tenant, self_attention="yes", **small))
    assert status == 200, guided

    assert np.abs(outputs(plain)[0] - outputs(guided)[0]).mean() > 1
    assert [job.params["pag_scale"] for job in Job.objects.order_by("pk")] == [0.0, 3.0]
    assert guided["meta"]["self_attention"] == "yes"


def test_panorama_yes_runs_multidiffusion(api, tenant, demo_model, sync_queue):
    wide = {"width": 96, "height": 64}
    status, plain = api.post(TEXT2IMG, modelslab(tenant, **wide))
    assert status == 200, plain
    status, panorama = api.post(TEXT2IMG, modelslab(tenant, panorama="yes", **wide))
    assert status == 200, panorama

    (image,) = outputs(panorama)
    assert image.shape[:2] == (64, 96)
    assert np.abs(outputs(plain)[0] - image).mean() > 1
    assert Job.objects.order_by("pk").last().params["panorama"] is True
    assert panorama["meta"]["panorama"] == "yes"


@pytest.mark.parametrize(
    ("path", "fields", "field", "words"),
    [
        # diffusers' MultiDiffusion pipeline has no SDXL form.
        (TEXT2IMG, {"panorama": "yes", "model_id": "demo-sdxl", "width": 128}, "panorama", "SDXL"),
        (TEXT2IMG, {"panorama": "yes", "width": 64, "height": 64}, "panorama", "wider"),
        (
            TEXT2IMG,
            {"panorama": "yes", "width": 128, "height": 64, "upscale": "yes"},
            "panorama",
            "hires",
        ),
        (
            TEXT2IMG,
            {"panorama": "yes", "width": 128, "height": 64, "self_attention": "yes"},
            "panorama",
            "self",
        ),
        (TEXT2IMG, {"panorama": "maybe"}, "panorama", "yes or no"),
        (TEXT2IMG, {"self_attention": "maybe"}, "self_attention", "yes or no"),
        ("/api/v3/img2img", {"panorama": "yes"}, "panorama", "text2img endpoints"),
        (
            "/api/v6/image_editing/super_resolution",
            {"self_attention": "yes"},
            "self_attention",
            "endpoints",
        ),
    ],
)
def test_modelslab_refuses_what_it_cannot_run(api, tenant, demo_models, path, fields, field, words):
    body = modelslab(tenant, **fields)
    if "super_resolution" in path:
        del body["prompt"]  # a field of the generating endpoints, refused there too
    status, data = api.post(path, body)

    assert status == 400, data
    assert data["status"] == "error"
    assert list(data["message"]) == [field]
    assert words in data["message"][field][0]
    assert not Job.objects.exists()


# --- A1111 -------------------------------------------------------------------------------


def test_variation_seeds_run_and_the_info_reports_them(api, tenant, demo_models, sync_queue):
    status, plain = api.post(TXT2IMG, webui(), **basic(tenant.key))
    assert status == 200, plain
    status, varied = api.post(
        TXT2IMG,
        webui(subseed=77, subseed_strength=0.5, batch_size=2),
        **basic(tenant.key),
    )
    assert status == 200, varied

    info = json.loads(varied["info"])
    assert (info["subseed"], info["all_subseeds"], info["subseed_strength"]) == (77, [77, 78], 0.5)
    assert "Variation seed: 77, Variation seed strength: 0.5" in info["infotexts"][0]
    assert "Variation seed: 78," in info["infotexts"][1]
    assert np.abs(decoded(plain)[0] - decoded(varied)[0]).mean() > 1
    assert json.loads(plain["info"])["subseed_strength"] == 0


def test_a_random_subseed_is_the_one_reported(api, tenant, demo_models, sync_queue):
    # Euler, not webui's default Euler a: an ancestral sampler adds the seed's noise at each step.
    random_subseed = webui(subseed=-1, subseed_strength=1.0, sampler_name="Euler")
    status, data = api.post(TXT2IMG, random_subseed, **basic(tenant.key))
    assert status == 200, data

    info = json.loads(data["info"])
    job = Job.objects.get()
    assert info["subseed"] == job.params["subseed"] >= 0
    # At strength 1 the noise is the subseed's own: the plain image of that seed.
    status, of_subseed = api.post(
        TXT2IMG, webui(seed=info["subseed"], sampler_name="Euler"), **basic(tenant.key)
    )
    assert status == 200, of_subseed
    assert np.array_equal(decoded(data)[0], decoded(of_subseed)[0])


def test_tiling_runs_and_is_reported(api, tenant, demo_models, sync_queue):
    status, plain = api.post(TXT2IMG, webui(), **basic(tenant.key))
    assert status == 200, plain
    status, tiled = api.post(TXT2IMG, webui(tiling=True), **basic(tenant.key))
    assert status == 200, tiled

    assert np.abs(decoded(plain)[0] - decoded(tiled)[0]).mean() > 1
    assert "Tiling: True" in json.loads(tiled["info"])["infotexts"][0]
    assert tiled["parameters"]["tiling"] is True
    assert Job.objects.order_by("pk").last().params["tiling"] is True


def test_variation_seeds_on_img2img_are_a_400(api, tenant, demo_models):
    body = webui(init_images=[png_base64(noise_image(64, 64))], subseed_strength=0.3)

    status, data = api.post(IMG2IMG, body, **basic(tenant.key))

    assert status == 400, data
    assert data["detail"].startswith("subseed_strength: ")
    assert not Job.objects.exists()
