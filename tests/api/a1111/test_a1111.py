"""Contract of the AUTOMATIC1111 format, /sdapi/v1/ (docs/architecture.md; generation/api/a1111/).

Most tests stop at the queued job: with PICTOR_BLOCKING_WAIT at 0 the call gives up at once
(504, the job canceled), and the Job row shows what the request turned into. A few generate
on the demo model with the queue run inline.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from accounts.models import ApiKey
from billing import ledger
from generation.models import Job
from tests.helpers import make_tenant, private_copy
from tests.images import centre_mask, noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
SMALL = {"width": 128, "height": 128}
INCORRECT = {"detail": "Incorrect username or password"}


def basic(key: str, user: str = "webui") -> dict[str, str]:
    """webui's --api-auth: HTTP Basic with the API key as password."""
    token = base64.b64encode(f"{user}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sha(model_id: str) -> str:
    return hashlib.sha256(model_id.encode()).hexdigest()


def title(model_id: str) -> str:
    return f"{model_id}.safetensors [{sha(model_id)[:10]}]"


def decode(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


@pytest.fixture
def queued_only(settings):
    """Generation calls give up at once (504); the job they queued shows the request."""
    settings.PICTOR_BLOCKING_WAIT = 0


def submitted(api, tenant, path=TXT2IMG, **fields) -> Job:
    """The job a generation request queued (it was canceled when the call gave up)."""
    before = set(Job.objects.values_list("pk", flat=True))
    status, data = api.post(
        path, {"prompt": "a lighthouse", **SMALL, **fields}, **basic(tenant.key)
    )
    assert status == 504, data
    assert data["error"] == "GenerationTimedOut"
    (job,) = Job.objects.exclude(pk__in=before)
    return job


# --- generation on the demo model --------------------------------------------------------


def test_it_generates_txt2img_end_to_end(api, tenant, demo_models, sync_queue):
    status, data = api.post(
        TXT2IMG,
        {"prompt": "a red fox in the snow", "negative_prompt": "blur", "seed": 42, **SMALL},
        **basic(tenant.key),
    )

    assert status == 200, data
    assert set(data) == {"images", "parameters", "info"}
    (image,) = [decode(b64) for b64 in data["images"]]
    assert image.size == (128, 128)
    assert "Seed: 42" in image.info["parameters"]
    params = data["parameters"]
    assert params["prompt"] == "a red fox in the snow"
    assert (params["steps"], params["sampler_name"], params["cfg_scale"]) == (20, "Euler a", 7.0)
    assert (params["seed"], params["batch_size"], params["n_iter"]) == (42, 1, 1)
    info = json.loads(data["info"])
    assert (info["seed"], info["all_seeds"]) == (42, [42])
    assert info["prompt"] == "a red fox in the snow"
    assert info["negative_prompt"] == "blur"
    assert (info["width"], info["height"], info["steps"]) == (128, 128, 20)
    assert info["sampler_name"] == "Euler a"
    assert info["cfg_scale"] == 7.0
    assert info["sd_model_name"] == "demo-sd15"
    assert info["sd_model_hash"] == sha("demo-sd15")[:10]
    assert info["infotexts"] == [image.info["parameters"]]
    assert re.fullmatch(r"\d{14}", info["job_timestamp"])
    assert (info["clip_skip"], info["batch_size"], info["n_iter"]) == (1, 1, 1)
    for name in (
        "subseed",
        "all_subseeds",
        "all_prompts",
        "seed_resize_from_w",
        "seed_resize_from_h",
    ):
        assert name in info
    job = Job.objects.get()
    assert (job.status, job.api_key.organization) == (Job.Status.SUCCESS, tenant.org)


def test_send_images_false_answers_no_images(api, tenant, demo_models, sync_queue):
    status, data = api.post(
        TXT2IMG, {"prompt": "a quiet pond", "send_images": False, **SMALL}, **basic(tenant.key)
    )
    assert status == 200, data
    assert data["images"] == []
    assert len(json.loads(data["info"])["infotexts"]) == 1


def test_it_generates_img2img_and_inpaints_with_a_mask(api, tenant, demo_models, sync_queue):
    init = noise_image(128, 128, seed=3)
    body = {"init_images": [png_base64(init)], "seed": 5, "steps": 10, **SMALL}

    status, data = api.post(IMG2IMG, {"prompt": "a stone bridge", **body}, **basic(tenant.key))
    assert status == 200, data
    assert decode(data["images"][0]).size == (128, 128)
    info = json.loads(data["info"])
    assert (info["seed"], info["denoising_strength"]) == (5, 0.75)
    # webui leaves the images out of the echo unless include_init_images is on.
    assert data["parameters"]["init_images"] is None
    assert Job.objects.get().kind == "img2img"

    mask = {"mask": png_base64(centre_mask(128, 128)), "denoising_strength": 0.9}
    painted = {}
    for fill in (0, 1):
        status, data = api.post(
            IMG2IMG,
            {"prompt": f"a stone bridge {fill}", **body, **mask, "inpainting_fill": fill},
            **basic(tenant.key),
        )
        assert status == 200, data
        painted[fill] = np.asarray(decode(data["images"][0]).convert("RGB")).astype(int)
    assert list(Job.objects.values_list("kind", flat=True).order_by("pk")) == [
        "img2img",
        "inpaint",
        "inpaint",
    ]
    original = np.asarray(init).astype(int)
    for pixels in painted.values():
        # Outside the mask (and its 4 px soft edge) the init image is kept.
        assert np.abs(pixels[:20, :20] - original[:20, :20]).max() <= 2
        assert np.abs(pixels[54:74, 54:74] - original[54:74, 54:74]).mean() > 10
    # fill (0) repaints from the surrounding colours, original (1) from the pixels underneath.
    assert np.abs(painted[0][54:74, 54:74] - painted[1][54:74, 54:74]).mean() > 1


# --- what a request turns into -----------------------------------------------------------


def test_the_defaults_reach_the_job(api, tenant, demo_models, queued_only):
    job = submitted(api, tenant, width=512, height=512)
    p = job.params
    assert job.model.model_id == "demo-sd15"
    assert (job.kind, job.api_key.organization) == ("text2img", tenant.org)
    assert (p["steps"], p["guidance_scale"], p["samples"]) == (20, 7.0, 1)
    assert (p["width"], p["height"], p["hires_scale"]) == (512, 512, 1)
    assert (p["scheduler"], p["use_karras_sigmas"]) == ("EulerAncestralDiscreteScheduler", False)
    assert p["clip_skip"] is None
    assert 0 <= p["seed"] < 2**32


def test_the_default_steps_shrink_to_the_plan_but_an_explicit_value_does_not(
    api, tenant, demo_models, queued_only
):
    plan = tenant.org.plan
    plan.steps_list = [10, 15]
    plan.save()
    assert submitted(api, tenant).params["steps"] == 15
    assert submitted(api, tenant, steps=12, prompt="a tower").params["steps"] == 12
    status, data = api.post(TXT2IMG, {"prompt": "a tower", "steps": 20}, **basic(tenant.key))
    assert status == 400
    assert "steps" in data["detail"] and "15" in data["detail"]


def test_each_field_reaches_the_job(api, tenant, demo_models, queued_only):
    job = submitted(
        api,
        tenant,
        prompt="a castle, demo-embedding style <lora:demo-lora-a:0.6>",
        negative_prompt="fog",
        seed=123,
        sampler_name="DPM++ 2M",
        scheduler="Karras",
        batch_size=2,
        n_iter=2,
        steps=30,
        cfg_scale=9.5,
        enable_hr=True,
        hr_scale=2,
        denoising_strength=0.5,
        override_settings={"CLIP_stop_at_last_layers": 2, "sd_vae": "demo-vae.safetensors"},
    )
    p = job.params
    assert p["prompt"] == "a castle, demo-embedding style"
    assert p["loras"] == [["demo-lora-a", 0.6]]
    assert p["embeddings"] == ["demo-embedding"]
    assert (p["negative_prompt"], p["seed"], p["samples"], p["steps"]) == ("fog", 123, 4, 30)
    assert (p["scheduler"], p["use_karras_sigmas"]) == ("DPMSolverMultistepScheduler", True)
    assert (p["guidance_scale"], p["clip_skip"], p["vae"]) == (9.5, 2, "demo-vae")
    assert (p["hires_scale"], p["hires_strength"], p["width"]) == (2, 0.5, 128)


def test_sampler_index_and_aliases_name_the_sampler(api, tenant, demo_models, queued_only):
    by_index = submitted(api, tenant, sampler_index="DDIM").params
    by_alias = submitted(api, tenant, sampler_name="k_dpmpp_2m_ka", prompt="b").params
    assert by_index["scheduler"] == "DDIMScheduler"
    assert (by_alias["scheduler"], by_alias["use_karras_sigmas"]) == (
        "DPMSolverMultistepScheduler",
        True,
    )


def test_features_left_off_are_accepted(api, tenant, demo_models, queued_only):
    job = submitted(
        api,
        tenant,
        restore_faces=False,
        tiling=False,
        styles=[],
        alwayson_scripts={},
        script_args=[],
        subseed_strength=0,
        seed_resize_from_w=-1,
        eta=1.0,
        s_noise=1,
        save_images=True,
        override_settings={"samples_format": "png"},
        some_future_field="ignored",
    )
    assert job.params["samples"] == 1


RANGES = [
    ("width", 63),
    ("width", 100),
    ("width", 4096),
    ("height", 0),
    ("width", "wide"),
    ("steps", 0),
    ("steps", 151),
    ("cfg_scale", 0.5),
    ("cfg_scale", 31),
    ("batch_size", 0),
    ("batch_size", 9),
    ("n_iter", 0),
    ("seed", -2),
    ("seed", 2**32),
    ("denoising_strength", 1.5),
    ("hr_scale", 5),
    ("eta", 2),
    ("prompt", "x" * 2001),
    ("sampler_name", "Definitely Not A Sampler"),
    ("scheduler", "bogus"),
    ("override_settings", "karras"),
    ("enable_hr", "maybe"),
]


@pytest.mark.parametrize(("field", "value"), RANGES)
def test_a_value_out_of_range_is_a_422_naming_the_field(api, tenant, demo_models, field, value):
    status, data = api.post(TXT2IMG, {"prompt": "a hill", field: value}, **basic(tenant.key))
    assert status == 422, data
    (entry,) = data["detail"]
    assert entry["loc"] == ["body", field]
    assert entry["msg"] and entry["type"] == "value_error"
    assert Job.objects.count() == 0


def test_a_bad_override_value_is_a_422_naming_the_key(api, tenant, demo_models):
    status, data = api.post(
        TXT2IMG,
        {"prompt": "a hill", "override_settings": {"CLIP_stop_at_last_layers": 13}},
        **basic(tenant.key),
    )
    assert status == 422
    assert data["detail"][0]["loc"] == ["body", "override_settings", "CLIP_stop_at_last_layers"]


def test_a_body_that_is_not_an_object_is_a_422(api, tenant, demo_models):
    status, data = api.post(TXT2IMG, ["a", "list"], **basic(tenant.key))
    assert status == 422
    assert data["detail"][0]["loc"] == ["body"]
    response = api.raw(TXT2IMG, "{not json", "application/json", **basic(tenant.key))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


NOT_HONOURED = [
    ({"restore_faces": True}, "restore_faces"),
    ({"styles": ["cinematic"]}, "styles"),
    ({"alwayson_scripts": {"ADetailer": {"args": [True]}}}, "alwayson_scripts.ADetailer"),
    ({"script_name": "x/y/z plot"}, "script_name"),
    (
        {"override_settings": {"eta_noise_seed_delta": 31337}},
        "override_settings.eta_noise_seed_delta",
    ),
    ({"batch_size": 2, "n_iter": 3}, "n_iter"),
    ({"batch_size": 5}, "batch_size"),
    ({"steps": 45}, "steps"),
    ({"width": 1032}, "width"),
    ({"enable_hr": True, "hr_scale": 1.5}, "hr_scale"),
    ({"enable_hr": True, "hr_scale": 1}, "hr_scale"),
    ({"enable_hr": True, "hr_scale": 4, "width": 512}, "hr_scale"),
    ({"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"),
    ({"enable_hr": True, "hr_resize_x": 1024}, "hr_resize_x"),
    ({"enable_hr": True, "hr_prompt": "something else"}, "hr_prompt"),
    ({"sampler_name": "DPM fast"}, "sampler_name"),
    ({"scheduler": "Exponential"}, "scheduler"),
    ({"sampler_name": "Euler a", "scheduler": "Karras"}, "scheduler"),
    ({"sampler_name": "Euler a", "eta": 0.5}, "eta"),
    ({"prompt": "a <lora:no-such-lora:1>"}, "prompt"),
]


@pytest.mark.parametrize(("fields", "field"), NOT_HONOURED)
def test_a_feature_this_server_cannot_honour_is_a_400_naming_the_field(
    api, tenant, demo_models, fields, field
):
    status, data = api.post(TXT2IMG, {"prompt": "a hill", **fields}, **basic(tenant.key))
    assert status == 400, data
    assert set(data) == {"error", "detail", "body", "errors"}
    assert data["error"] == "ValidationError"
    assert data["detail"].startswith(f"{field}: ")
    assert data["errors"] == data["detail"] and data["body"] == ""
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hr_second_pass_steps", "abc"),
        ("hr_resize_x", 7.5),
        ("hr_resize_y", []),
        ("hr_checkpoint_name", {}),
        ("hr_sampler_name", True),
        ("hr_scheduler", ["Karras"]),
    ],
)
def test_hires_settings_are_typed_even_with_the_hires_fix_off(
    api, tenant, demo_models, queued_only, field, value
):
    # As webui's model does: the value is not read without enable_hr, but its type is checked.
    status, data = api.post(TXT2IMG, {"prompt": "a hill", field: value}, **basic(tenant.key))
    assert status == 422 and data["detail"][0]["loc"] == ["body", field], data
    assert Job.objects.count() == 0


def test_hires_settings_of_the_right_type_are_not_read_with_the_hires_fix_off(
    api, tenant, demo_models, queued_only
):
    job = submitted(
        api, tenant, TXT2IMG, hr_second_pass_steps=30, hr_resize_x=1024, hr_sampler_name="Euler"
    )
    assert job.params["hires_scale"] == 1


def test_img2img_contract(api, tenant, demo_models, queued_only):
    image = png_base64(noise_image(64, 64))
    mask = png_base64(centre_mask(64, 64))
    job = submitted(api, tenant, IMG2IMG, init_images=[image], denoising_strength=0.4)
    assert (job.kind, job.params["strength"], job.params["width"]) == ("img2img", 0.4, 128)
    assert job.params["init_image"].startswith("inputs/")

    job = submitted(api, tenant, IMG2IMG, prompt="b", init_images=[image], mask=mask)
    assert (job.kind, job.params["strength"]) == ("inpaint", 0.75)
    assert job.params["mask_image"].startswith("inputs/")

    cases = [
        ({}, 422, "init_images"),
        ({"init_images": []}, 422, "init_images"),
        ({"init_images": [image, image]}, 400, "init_images"),
        ({"init_images": ["not an image"]}, 400, "init_images"),
        ({"init_images": [image], "denoising_strength": 2}, 422, "denoising_strength"),
        ({"init_images": [image], "denoising_strength": 0.01}, 400, "denoising_strength"),
        ({"init_images": [image], "resize_mode": 1}, 400, "resize_mode"),
        ({"init_images": [image], "mask": mask, "mask_blur": 65}, 422, "mask_blur"),
        (
            {"init_images": [image], "mask": mask, "inpaint_full_res_padding": -1},
            422,
            "inpaint_full_res_padding",
        ),
        ({"init_images": [image], "mask": mask, "mask_round": False}, 400, "mask_round"),
        ({"init_images": [image], "mask": mask, "inpainting_fill": 2}, 400, "inpainting_fill"),
        ({"init_images": [image], "mask": "junk"}, 400, "mask"),
        # The engine's rules: a 9-channel inpainting checkpoint needs a mask.
        (
            {
                "init_images": [image],
                "override_settings": {"sd_model_checkpoint": "demo-sd15-inpaint"},
            },
            400,
            "sd_model_checkpoint",
        ),
    ]
    for n, (fields, status, field) in enumerate(cases):
        got, data = api.post(IMG2IMG, {"prompt": f"case {n}", **fields}, **basic(tenant.key))
        assert got == status, (fields, data)
        if status == 422:
            assert data["detail"][0]["loc"] == ["body", field]
        else:
            assert data["detail"].startswith(f"{field}: "), data

    job = submitted(
        api,
        tenant,
        IMG2IMG,
        prompt="c",
        init_images=[image],
        mask=mask,
        override_settings={"sd_model_checkpoint": "demo-sd15-inpaint"},
        mask_blur=4,
        inpaint_full_res=False,
    )
    assert (job.kind, job.model.model_id) == ("inpaint", "demo-sd15-inpaint")


def test_a_timeout_answers_webuis_error_shape(api, tenant, demo_models, queued_only):
    status, data = api.post(TXT2IMG, {"prompt": "slow", **SMALL}, **basic(tenant.key))
    assert status == 504
    assert data == {
        "error": "GenerationTimedOut",
        "detail": data["detail"],
        "body": "",
        "errors": data["detail"],
    }
    job = Job.objects.get()
    assert job.status == Job.Status.CANCELED
    assert ledger.balance(tenant.org) == tenant.org.plan.monthly_credits


# --- auth ----------------------------------------------------------------------------------


def test_it_takes_the_key_as_basic_password_or_bearer(api, tenant, demo_models):
    assert api.get("/sdapi/v1/sd-models", **basic(tenant.key))[0] == 200
    assert api.get("/sdapi/v1/sd-models", **basic(tenant.key, user=""))[0] == 200
    assert api.get("/sdapi/v1/sd-models", **bearer(tenant.key))[0] == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"webui:pct_wrongwrongwrongwrong").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"webui:").decode()},
        {"Authorization": "Bearer pct_wrongwrongwrongwrong"},
    ],
)
def test_no_or_a_wrong_key_is_webuis_401(client, demo_models, headers):
    for method, path in (("get", "/sdapi/v1/sd-models"), ("post", TXT2IMG)):
        response = getattr(client, method)(path, headers=headers, content_type="application/json")
        assert response.status_code == 401
        assert response.json() == INCORRECT
        assert response["WWW-Authenticate"] == "Basic"
    assert Job.objects.count() == 0


# --- the GET endpoints ---------------------------------------------------------------------


def test_sd_models_lists_the_checkpoints(api, tenant, demo_models):
    status, data = api.get("/sdapi/v1/sd-models", **basic(tenant.key))
    assert status == 200
    by_name = {m["model_name"]: m for m in data}
    # webui lists refiners among the checkpoints: refiner_checkpoint names one of them.
    assert set(by_name) == {
        "demo-sd15",
        "demo-sd15-inpaint",
        "demo-sd15-lcm",
        "demo-sdxl",
        "demo-sdxl-refiner",
    }
    sd15 = by_name["demo-sd15"]
    assert set(sd15) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert sd15["title"] == title("demo-sd15")
    assert re.fullmatch(r"demo-sd15\.safetensors \[[0-9a-f]{10}\]", sd15["title"])
    assert sd15["sha256"] == sha("demo-sd15")
    assert sd15["hash"] == sd15["sha256"][:10]
    assert (sd15["filename"], sd15["config"]) == ("demo-sd15", None)


def test_samplers_lists_webui_names(api, tenant):
    status, data = api.get("/sdapi/v1/samplers", **basic(tenant.key))
    assert status == 200
    by_name = {s["name"]: s for s in data}
    for name in ("Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC"):
        assert set(by_name[name]) == {"name", "aliases", "options"}
    assert "k_euler_a" in by_name["Euler a"]["aliases"]
    assert by_name["DPM++ 2M Karras"]["options"] == {"scheduler": "karras"}


def test_schedulers_lists_automatic_and_karras(api, tenant):
    status, data = api.get("/sdapi/v1/schedulers", **basic(tenant.key))
    assert status == 200
    assert [s["name"] for s in data] == ["automatic", "karras"]
    assert [s["label"] for s in data] == ["Automatic", "Karras"]
    for item in data:
        assert set(item) == {"name", "label", "aliases", "default_rho", "need_inner_model"}


def test_loras_and_embeddings(api, tenant, demo_models):
    status, loras = api.get("/sdapi/v1/loras", **basic(tenant.key))
    assert status == 200
    assert [lora["name"] for lora in loras] == ["demo-lora-a", "demo-lora-b"]
    assert loras[0] == {
        "name": "demo-lora-a",
        "alias": "demo-lora-a",
        "path": "demo-lora-a",
        "metadata": {},
    }
    status, embeddings = api.get("/sdapi/v1/embeddings", **basic(tenant.key))
    assert status == 200
    assert embeddings["skipped"] == {}
    assert embeddings["loaded"]["demo-embedding"] == {
        "step": None,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
        "shape": 32,
        "vectors": 2,
    }
    # With an SDXL checkpoint as the key's model, the SD 1.5 embedding cannot load.
    api.post("/sdapi/v1/options", {"sd_model_checkpoint": "demo-sdxl"}, **basic(tenant.key))
    _, embeddings = api.get("/sdapi/v1/embeddings", **basic(tenant.key))
    assert (list(embeddings["loaded"]), list(embeddings["skipped"])) == ([], ["demo-embedding"])


def test_options_reports_the_model_and_format(api, tenant, demo_models):
    status, data = api.get("/sdapi/v1/options", **basic(tenant.key))
    assert status == 200
    assert data["sd_model_checkpoint"] == title("demo-sd15")
    assert data["samples_format"] == "png"


def test_progress_with_nothing_running(api, tenant):
    status, data = api.get("/sdapi/v1/progress?skip_current_image=true", **basic(tenant.key))
    assert status == 200
    assert data == {
        "progress": 0,
        "eta_relative": 0,
        "state": {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        },
        "current_image": None,
        "textinfo": None,
    }


# --- the model: per key, per request -------------------------------------------------------


def test_options_post_sets_the_model_of_this_keys_next_requests(
    api, tenant, demo_models, queued_only
):
    _, other_key = ApiKey.objects.issue(tenant.org)
    response = api.raw(
        "/sdapi/v1/options",
        json.dumps({"sd_model_checkpoint": title("demo-sdxl"), "samples_format": "png"}),
        "application/json",
        **basic(tenant.key),
    )
    assert (response.status_code, response.content) == (200, b"null")

    assert api.get("/sdapi/v1/options", **basic(tenant.key))[1]["sd_model_checkpoint"] == title(
        "demo-sdxl"
    )
    assert submitted(api, tenant).model.model_id == "demo-sdxl"
    # Another key of the same organization keeps the server default.
    assert api.get("/sdapi/v1/options", **basic(other_key))[1]["sd_model_checkpoint"] == title(
        "demo-sd15"
    )
    # A model name without the title's suffix works too.
    api.post("/sdapi/v1/options", {"sd_model_checkpoint": "demo-sd15"}, **basic(tenant.key))
    assert submitted(api, tenant, prompt="again").model.model_id == "demo-sd15"


def test_options_post_refuses_what_it_cannot_set(api, tenant, demo_models):
    missing = api.post(
        "/sdapi/v1/options", {"sd_model_checkpoint": "nope.safetensors"}, **basic(tenant.key)
    )
    assert missing == (404, {"detail": "Model not found: nope.safetensors"})
    status, data = api.post(
        "/sdapi/v1/options", {"sd_model_checkpoint": "demo-lora-a"}, **basic(tenant.key)
    )
    assert status == 400 and data["detail"].startswith("sd_model_checkpoint: ")
    status, data = api.post("/sdapi/v1/options", {"samples_format": "jpg"}, **basic(tenant.key))
    assert status == 400 and data["detail"].startswith("samples_format: ")
    assert ApiKey.objects.get(organization=tenant.org).default_model is None


def test_override_settings_picks_the_model_per_request(api, tenant, demo_models, queued_only):
    for n, name in enumerate(
        [
            title("demo-sdxl"),
            "demo-sdxl.safetensors",
            "demo-sdxl",
            sha("demo-sdxl")[:10],
            "demo-sdxl.safetensors [0000000000]",
        ]
    ):
        job = submitted(
            api, tenant, prompt=f"try {n}", override_settings={"sd_model_checkpoint": name}
        )
        assert job.model.model_id == "demo-sdxl", name
    # The override lasts one request.
    assert submitted(api, tenant, prompt="plain").model.model_id == "demo-sd15"
    status, data = api.post(
        TXT2IMG,
        {"prompt": "x", "override_settings": {"sd_model_checkpoint": "nope"}},
        **basic(tenant.key),
    )
    assert (status, data) == (404, {"detail": "Model not found: nope"})


# --- progress and interrupt act on the caller's own jobs -------------------------------------


def queue_job(api, key: str, prompt: str) -> Job:
    """A queued job made with `key` (through the ModelsLab format, which does not wait)."""
    status, data = api.post(
        "/api/v3/text2img", {"key": key, "prompt": prompt, "width": 64, "height": 64}
    )
    assert status == 200 and data["status"] == "processing", data
    return Job.objects.get(pk=data["id"])


def test_progress_and_interrupt_touch_only_the_callers_own_jobs(
    api, tenant, outsider, demo_models, no_wait
):
    _, colleague_key = ApiKey.objects.issue(tenant.org)
    mine = [queue_job(api, tenant.key, "a"), queue_job(api, tenant.key, "b")]
    colleagues = queue_job(api, colleague_key, "c")
    theirs = queue_job(api, outsider.key, "d")
    # A worker has taken the first one and is at step 5.
    Job.objects.filter(pk=mine[0].pk).update(
        status=Job.Status.PROCESSING,
        progress_step=5,
        progress_total=21,
        lease_expires_at=mine[0].lease_deadline(),
    )

    status, progress = api.get("/sdapi/v1/progress", **basic(tenant.key))
    assert status == 200
    assert progress["state"]["job_count"] == 2
    assert (progress["state"]["sampling_step"], progress["state"]["sampling_steps"]) == (5, 21)
    assert progress["progress"] == pytest.approx(5 / 21, abs=1e-3)
    assert progress["eta_relative"] > 0
    assert api.get("/sdapi/v1/progress", **basic(outsider.key))[1]["state"]["job_count"] == 1

    balance = ledger.balance(tenant.org)
    status, data = api.post("/sdapi/v1/interrupt", None, **basic(tenant.key))
    assert (status, data) == (200, {})

    statuses = {j.pk: j.status for j in Job.objects.all()}
    assert [statuses[j.pk] for j in mine] == [Job.Status.CANCELED, Job.Status.CANCELED]
    assert statuses[colleagues.pk] == statuses[theirs.pk] == Job.Status.QUEUED
    assert ledger.balance(tenant.org) == balance + sum(j.cost for j in mine)
    assert ledger.balance(outsider.org) == outsider.org.plan.monthly_credits - theirs.cost
    assert api.get("/sdapi/v1/progress", **basic(tenant.key))[1]["state"]["job_count"] == 0
    assert api.get("/sdapi/v1/progress", **basic(outsider.key))[1]["state"]["job_count"] == 1


def test_skip_cancels_only_the_current_job(api, tenant, outsider, demo_models, no_wait):
    first, second = queue_job(api, tenant.key, "e"), queue_job(api, tenant.key, "f")
    theirs = queue_job(api, outsider.key, "g")
    response = api.raw("/sdapi/v1/skip", "", "application/json", **basic(tenant.key))
    assert (response.status_code, response.content) == (200, b"null")
    first.refresh_from_db(), second.refresh_from_db(), theirs.refresh_from_db()
    assert (first.status, second.status, theirs.status) == ("canceled", "queued", "queued")


# --- ownership ---------------------------------------------------------------------------


def test_another_tenants_private_models_look_missing(api, tenant, demo_models, queued_only):
    globex = make_tenant("globex")
    checkpoint = private_copy("demo-sd15", globex.org)
    lora = private_copy("demo-lora-a", globex.org)

    names = {m["model_name"] for m in api.get("/sdapi/v1/sd-models", **basic(tenant.key))[1]}
    assert checkpoint not in names
    assert checkpoint in {
        m["model_name"] for m in api.get("/sdapi/v1/sd-models", **basic(globex.key))[1]
    }
    loras = {m["name"] for m in api.get("/sdapi/v1/loras", **basic(tenant.key))[1]}
    assert lora not in loras and "demo-lora-a" in loras

    for name in (checkpoint, title(checkpoint)):
        theirs = api.post(
            TXT2IMG,
            {"prompt": "p", "override_settings": {"sd_model_checkpoint": name}},
            **basic(tenant.key),
        )
        missing = api.post(
            TXT2IMG,
            {
                "prompt": "p",
                "override_settings": {"sd_model_checkpoint": name.replace("private", "absent")},
            },
            **basic(tenant.key),
        )
        assert theirs[0] == missing[0] == 404
        assert theirs[1] == {"detail": f"Model not found: {name}"}
        assert str(theirs[1]).replace("private", "X") == str(missing[1]).replace("absent", "X")

        theirs = api.post("/sdapi/v1/options", {"sd_model_checkpoint": name}, **basic(tenant.key))
        assert theirs == (404, {"detail": f"Model not found: {name}"})

    theirs = api.post(TXT2IMG, {"prompt": f"p <lora:{lora}:1>"}, **basic(tenant.key))
    missing = api.post(TXT2IMG, {"prompt": "p <lora:demo-lora-a-absent:1>"}, **basic(tenant.key))
    assert theirs[0] == missing[0] == 400
    assert str(theirs[1]).replace("private", "X") == str(missing[1]).replace("absent", "X")
    assert Job.objects.filter(organization=tenant.org).count() == 0
    # Its owner uses both.
    job = submitted(
        api,
        globex,
        prompt=f"q <lora:{lora}:1>",
        override_settings={"sd_model_checkpoint": title(checkpoint)},
    )
    assert (job.model.model_id, job.params["loras"]) == (checkpoint, [[lora, 1.0]])
