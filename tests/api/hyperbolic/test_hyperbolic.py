"""Contract of the Hyperbolic format (docs/architecture.md): POST /v1/image/generation answering
{"images": [{"index", "image", "random_seed"}], "inference_time"}, errors OpenAI-style.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from billing import ledger
from generation.engine.styles import STYLE_PRESETS
from generation.models import AIModel, Job
from tests.helpers import private_copy
from tests.images import noise_image, png_base64, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/image/generation"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE = png_base64(noise_image(64, 64))


def bearer(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.key}"}


def generate(api, tenant, **fields):
    body = {"model_name": "demo-sd15", "prompt": "a lighthouse at dusk", **fields}
    return api.post(URL, {k: v for k, v in body.items() if v is not None}, **bearer(tenant))


def decoded(data: dict, index: int = 0) -> Image.Image:
    png = base64.b64decode(data["images"][index]["image"], validate=True)
    assert png.startswith(PNG_SIGNATURE)
    return Image.open(io.BytesIO(png))


def test_it_answers_base64_images_with_their_seeds(api, tenant, demo_model, sync_queue):
    status, data = generate(api, tenant, width=128, height=64, steps=10, seed=21)
    assert status == 200, data
    assert set(data) == {"images", "inference_time"}
    assert [(i["index"], i["random_seed"]) for i in data["images"]] == [(0, 21)]
    assert decoded(data).size == (128, 64)
    assert isinstance(data["inference_time"], float) and data["inference_time"] > 0
    assert Job.objects.get().status == Job.Status.SUCCESS


def test_it_queues_hyperbolic_defaults_and_refunds_a_timed_out_job(
    api, tenant, free_tenant, demo_model, queued_only
):
    before = ledger.balance(tenant.org)
    status, data = generate(api, tenant)
    assert status == 504
    assert data["object"] == "error"
    assert (data["type"], data["code"], data["param"]) == ("timeout_error", 504, None)
    assert "canceled" in data["message"]

    job = Job.objects.get()
    p = job.params
    assert (p["width"], p["height"], p["steps"], p["guidance_scale"]) == (1024, 1024, 30, 5.0)
    assert (p["scheduler"], p["samples"], p["kind"]) == ("UniPCMultistepScheduler", 1, "text2img")
    assert (p["negative_prompt"], p["prompt_2"], p["loras"]) == ("", "", [])
    assert isinstance(p["seed"], int) and p["seed"] >= 0
    assert job.status == Job.Status.CANCELED
    assert ledger.balance(tenant.org) == before

    # The defaults never exceed the plan: the free plan's largest side and step count.
    assert generate(api, free_tenant)[0] == 504
    p = Job.objects.get(organization=free_tenant.org).params
    assert (p["width"], p["height"], p["steps"]) == (512, 512, 21)


def test_it_honours_every_field(api, tenant, demo_models, queued_only):
    status, _ = generate(
        api,
        tenant,
        prompt="a lighthouse",
        negative_prompt="blurry",
        width=256,
        height=128,
        backend="torch",
        seed=5,
        cfg_scale=12.5,
        sampler="DPM++ 2M Karras",
        steps=25,
        style_preset="pixel-art",
        enable_refiner=False,
        loras={"demo-lora-a": 0.7, "demo-lora-b": -0.25},
        unknown_field="ignored",
    )
    assert status == 504
    p = Job.objects.get().params
    pixel_art = STYLE_PRESETS["pixel-art"]
    assert p["prompt"] == pixel_art.template.format(prompt="a lighthouse")
    assert p["negative_prompt"] == f"blurry, {pixel_art.negative}"
    assert (p["width"], p["height"], p["seed"], p["steps"]) == (256, 128, 5, 25)
    assert p["guidance_scale"] == 12.5
    assert (p["scheduler"], p["use_karras_sigmas"]) == ("DPMSolverMultistepScheduler", True)
    assert p["loras"] == [["demo-lora-a", 0.7], ["demo-lora-b", -0.25]]


def test_a_style_preset_changes_the_stored_prompt(api, tenant, demo_model, queued_only):
    generate(api, tenant, prompt="a red fox")
    generate(api, tenant, prompt="a red fox", style_preset="origami")
    plain, styled = (j.params for j in Job.objects.order_by("pk"))
    assert plain["prompt"] == "a red fox"
    assert styled["prompt"] != plain["prompt"]
    assert "a red fox" in styled["prompt"] and "origami" in styled["prompt"]
    assert styled["negative_prompt"] == STYLE_PRESETS["origami"].negative


def test_image_makes_an_img2img_job(api, tenant, demo_model, queued_only):
    assert generate(api, tenant, image=IMAGE, strength=0.35)[0] == 504
    assert generate(api, tenant, image=IMAGE, prompt="a fox")[0] == 504
    first, second = (j.params for j in Job.objects.order_by("pk"))
    assert (first["kind"], first["strength"]) == ("img2img", 0.35)
    assert first["init_image"]
    # Without width/height the input's size is kept; strength defaults to 0.8.
    assert (first["width"], first["height"]) == (64, 64)
    assert second["strength"] == 0.8


@pytest.mark.parametrize("name", ["demo-controlnet-canny", "canny"])
def test_controlnet_name_and_image_make_a_controlnet_job(
    api, tenant, demo_models, queued_only, name
):
    control = png_base64(shapes_image(64, 64))
    status, _ = generate(api, tenant, controlnet_name=name, controlnet_image=control)
    assert status == 504
    job = Job.objects.get()
    assert job.kind == "controlnet"
    p = job.params
    assert (p["controlnet_model"], p["controlnet_type"]) == ("demo-controlnet-canny", "canny")
    assert (p["width"], p["height"]) == (64, 64)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model_name": None}, "model_name"),
        ({"model_name": "demo-lora-a"}, "model_name"),
        ({"model_name": "demo-sd15-inpaint"}, "model_name"),
        ({"prompt": None}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"width": 56}, "width"),
        ({"width": 2056}, "width"),
        ({"width": 1032}, "width"),
        ({"width": 100}, "width"),
        ({"height": 56}, "height"),
        ({"height": 2056}, "height"),
        ({"height": 1032}, "height"),
        ({"height": 100}, "height"),
        ({"steps": 0}, "steps"),
        ({"steps": 42}, "steps"),
        ({"cfg_scale": 0.9}, "cfg_scale"),
        ({"cfg_scale": 30.5}, "cfg_scale"),
        ({"image": IMAGE, "strength": -0.1}, "strength"),
        ({"image": IMAGE, "strength": 1.1}, "strength"),
        ({"strength": 0.5}, "strength"),
        ({"image": "not an image"}, "image"),
        ({"controlnet_name": "canny", "controlnet_image": "not an image"}, "controlnet_image"),
        ({"seed": -2}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"backend": "tvm"}, "backend"),
        ({"backend": "cuda"}, "backend"),
        ({"sampler": "Nope"}, "sampler"),
        ({"style_preset": "watercolour"}, "style_preset"),
        ({"enable_refiner": True}, "enable_refiner"),
        ({"loras": ["demo-lora-a"]}, "loras"),
        ({"loras": {"demo-lora-a": 2.5}}, "loras"),
        ({"loras": {"demo-lora-a": "heavy"}}, "loras"),
        ({"loras": {"no-such-lora": 1}}, "loras"),
        ({"loras": {"demo-lora-a": 1}, "lora": {"demo-lora-b": 1}}, "lora"),
        ({"prompt_2": "a second prompt"}, "prompt_2"),
        ({"negative_prompt_2": "a second negative"}, "negative_prompt_2"),
        ({"controlnet_name": "demo-controlnet-canny"}, "controlnet_image"),
        ({"controlnet_image": IMAGE}, "controlnet_name"),
        ({"controlnet_name": "no-such-controlnet", "controlnet_image": IMAGE}, "controlnet_name"),
        ({"controlnet_name": "canny", "controlnet_image": IMAGE, "image": IMAGE}, "image"),
    ],
)
def test_each_bound_is_a_400_naming_the_field(api, tenant, demo_models, queued_only, fields, field):
    status, data = generate(api, tenant, **fields)
    assert status == 400, data
    assert data["object"] == "error"
    assert (data["type"], data["code"], data["param"]) == ("invalid_request_error", 400, field)
    assert data["message"].startswith(f"{field}: "), data
    assert "init_image" not in data["message"], data  # the engine's word, not the client's
    assert Job.objects.count() == 0


def test_unknown_presets_are_listed(api, tenant, demo_model):
    _, data = generate(api, tenant, style_preset="watercolour")
    for name in ("3d-model", "analog-film", "neon-punk", "tile-texture"):
        assert name in data["message"]


def test_the_plan_bounds_sides_and_steps(api, free_tenant, demo_model, queued_only):
    status, data = generate(api, free_tenant, width=520)
    assert (status, data["param"]) == (400, "width")
    assert "512 on the Free plan" in data["message"]
    status, data = generate(api, free_tenant, steps=22)
    assert (status, data["param"]) == (400, "steps")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer pct_wrong"}, {"Authorization": "Token abc"}],
)
def test_a_missing_or_bad_key_is_401(api, tenant, demo_model, headers):
    status, data = api.post(URL, {"model_name": "demo-sd15", "prompt": "a fox"}, **headers)
    assert status == 401
    assert data == {
        "object": "error",
        "message": "Invalid Api Key",
        "type": "authentication_error",
        "param": None,
        "code": 401,
    }


def test_another_tenants_private_model_answers_like_a_missing_one(
    api, tenant, outsider, demo_models, queued_only
):
    private = private_copy("demo-sd15", outsider.org)
    lora = private_copy("demo-lora-a", outsider.org)
    answer = generate(api, tenant, model_name=private)
    assert answer == generate(api, tenant, model_name="no-such-model", prompt="a fox")
    assert answer[0] == 404
    assert answer[1]["type"] == "invalid_request_error"
    assert (answer[1]["message"], answer[1]["param"]) == ("Model id not found", "model_name")

    status, data = generate(api, tenant, loras={lora: 1})
    _, missing = generate(api, tenant, loras={"no-such-lora": 1})
    assert (status, data["param"]) == (400, "loras")
    assert data["message"].replace(lora, "X") == missing["message"].replace("no-such-lora", "X")
    assert Job.objects.count() == 0
    assert generate(api, outsider, model_name=private, loras={lora: 1})[0] == 504


def test_a_failed_generation_is_a_server_error(api, tenant, demo_model, sync_queue):
    AIModel.objects.create(model_id="broken", name="broken", path="no-such-folder")
    status, data = generate(api, tenant, model_name="broken", width=64, height=64)
    assert status == 500
    assert (data["object"], data["type"], data["code"]) == ("error", "server_error", 500)


def sdxl_pixels(api, tenant, **fields) -> np.ndarray:
    status, data = generate(
        api, tenant, model_name="demo-sdxl", width=128, height=128, steps=8, seed=3, **fields
    )
    assert status == 200, data
    return np.asarray(decoded(data).convert("RGB")).astype(np.int16)


def test_the_second_prompts_reach_the_sdxl_text_encoder(api, tenant, demo_models, sync_queue):
    plain = sdxl_pixels(api, tenant)
    second = sdxl_pixels(api, tenant, prompt_2="an oil painting of a storm")
    negative = sdxl_pixels(api, tenant, negative_prompt_2="an oil painting of a storm")
    assert np.abs(plain - second).mean() > 1
    assert np.abs(plain - negative).mean() > 1
    assert np.abs(second - negative).mean() > 1
    # Reproducible: the same body (apart from the spam filter's view) gives the same pixels.
    again = sdxl_pixels(api, tenant, prompt_2="an oil painting of a storm", cfg_scale=5)
    assert np.array_equal(second, again)
