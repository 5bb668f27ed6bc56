"""The AUTOMATIC1111 routes front-ends load on connect, extras, png-info and the server facts.

A contract test per route (its shape, and an error case where it takes input), then the
connect sequence SillyTavern runs against a webui URL.
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from accounts.models import Organization
from billing import ledger
from billing.models import CreditEntry
from generation import service, submission, tasks
from generation.engine.cache import default_cache
from generation.engine.request import GenerationRequest
from generation.engine.styles import STYLE_PRESETS
from generation.models import AIModel, Job
from generation.service import job_cost
from tests.helpers import private_copy
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

SINGLE = "/sdapi/v1/extra-single-image"
BATCH = "/sdapi/v1/extra-batch-images"
PNG_INFO = "/sdapi/v1/png-info"
INCORRECT = {"detail": "Incorrect username or password"}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"webui:{key}".encode()).decode()}


def decode(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def with_parameters(image: Image.Image, text: str) -> str:
    info = PngInfo()
    info.add_text("parameters", text)
    info.add_text("Software", "a painter")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


# --- the lists -----------------------------------------------------------------------------


def test_upscalers_are_none_the_pil_filters_and_the_tenants_upscaler_models(
    api, tenant, outsider, demo_models
):
    mine = private_copy("demo-upscaler-x4", tenant.org)
    status, data = api.get("/sdapi/v1/upscalers", **basic(tenant.key))
    assert status == 200, data
    assert [u["name"] for u in data] == ["None", "Lanczos", "Nearest", "demo-upscaler-x4", mine]
    assert all(set(u) == {"name", "model_name", "model_path", "model_url", "scale"} for u in data)
    assert data[3]["scale"] == 4 and data[3]["model_path"] == "demo-upscaler-x4"
    # Another tenant's private upscaler looks missing.
    _, theirs = api.get("/sdapi/v1/upscalers", **basic(outsider.key))
    assert mine not in [u["name"] for u in theirs]


def test_latent_upscale_modes_are_the_hr_upscalers_txt2img_takes(
    api, tenant, demo_models, queued_only
):
    status, data = api.get("/sdapi/v1/latent-upscale-modes", **basic(tenant.key))
    assert status == 200, data
    names = [m["name"] for m in data]
    assert names[0] == "Latent" and all(set(m) == {"name"} for m in data)
    for n, name in enumerate(names):
        status, answer = api.post(
            "/sdapi/v1/txt2img",
            {
                "prompt": f"a dune {n}",
                "width": 64,
                "height": 64,
                "enable_hr": True,
                "hr_upscaler": name,
            },
            **basic(tenant.key),
        )
        assert status == 504, answer  # queued (then given up on): the name was accepted
    assert [j.params["hires_scale"] for j in Job.objects.all()] == [2] * len(names)
    status, answer = api.post(
        "/sdapi/v1/txt2img",
        {"prompt": "a dune", "enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"},
        **basic(tenant.key),
    )
    assert status == 400 and answer["detail"].startswith("hr_upscaler: "), answer


def test_sd_vae_lists_the_vaes_this_tenant_may_use(api, tenant, outsider, demo_models):
    mine = private_copy("demo-vae", tenant.org)
    status, data = api.get("/sdapi/v1/sd-vae", **basic(tenant.key))
    assert status == 200, data
    assert data == [
        {"model_name": "demo-vae", "filename": "demo-vae"},
        {"model_name": mine, "filename": "demo-vae"},
    ]
    assert api.get("/sdapi/v1/sd-vae", **basic(outsider.key))[1] == [data[0]]


def test_prompt_styles_are_the_style_presets(api, tenant):
    status, data = api.get("/sdapi/v1/prompt-styles", **basic(tenant.key))
    assert status == 200, data
    assert [s["name"] for s in data] == list(STYLE_PRESETS)
    anime = next(s for s in data if s["name"] == "anime")
    assert anime == {
        "name": "anime",
        "prompt": STYLE_PRESETS["anime"].template,
        "negative_prompt": STYLE_PRESETS["anime"].negative,
    }
    assert all("{prompt}" in s["prompt"] for s in data)


def test_face_restorers_and_scripts_are_empty(api, tenant):
    assert api.get("/sdapi/v1/face-restorers", **basic(tenant.key)) == (200, [])
    assert api.get("/sdapi/v1/scripts", **basic(tenant.key)) == (
        200,
        {"txt2img": [], "img2img": []},
    )
    assert api.get("/sdapi/v1/script-info", **basic(tenant.key)) == (200, [])


# --- server facts and no-ops ---------------------------------------------------------------


def test_cmd_flags_describe_this_server_and_never_the_credentials(api, tenant):
    status, data = api.get("/sdapi/v1/cmd-flags", **basic(tenant.key))
    assert status == 200, data
    assert (data["api"], data["nowebui"], data["api_auth"]) == (True, True, None)
    assert data["hide_ui_dir_config"] is True and data["ckpt_dir"] is None
    # This test process has no GPU: as a CPU worker, fp32.
    assert (data["no_half"], data["use_cpu"]) == (True, ["all"])
    assert tenant.key not in str(data)


def test_memory_reports_this_process(api, tenant):
    status, data = api.get("/sdapi/v1/memory", **basic(tenant.key))
    assert status == 200, data
    ram = data["ram"]
    assert 0 < ram["used"] < ram["total"] and ram["free"] == ram["total"] - ram["used"]
    assert data["cuda"] == {"error": "unavailable"}


@pytest.mark.parametrize("name", ["refresh-checkpoints", "refresh-vae", "refresh-loras"])
def test_refresh_answers_null_and_lists_are_always_fresh(api, tenant, demo_models, name):
    response = api.raw(f"/sdapi/v1/{name}", b"", "application/json", **basic(tenant.key))
    assert (response.status_code, response.content) == (200, b"null")
    AIModel.objects.create(
        model_id="new-one", name="new-one", family=AIModel.Family.VAE, path="demo-vae"
    )
    assert "new-one" in [
        v["model_name"] for v in api.get("/sdapi/v1/sd-vae", **basic(tenant.key))[1]
    ]


def test_unload_and_reload_touch_no_model_another_tenant_uses(
    api, tenant, outsider, demo_models, sync_queue
):
    status, _ = api.post(
        "/sdapi/v1/txt2img",
        {"prompt": "warm", "width": 64, "height": 64, "steps": 4},
        **basic(outsider.key),
    )
    assert status == 200
    loaded = default_cache.model_ids()
    assert "demo-sd15" in loaded
    for name in ("unload-checkpoint", "reload-checkpoint"):
        assert api.post(f"/sdapi/v1/{name}", **basic(tenant.key)) == (200, {})
    assert default_cache.model_ids() == loaded


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/sdapi/v1/upscalers"),
        ("get", "/sdapi/v1/latent-upscale-modes"),
        ("get", "/sdapi/v1/sd-vae"),
        ("get", "/sdapi/v1/prompt-styles"),
        ("get", "/sdapi/v1/face-restorers"),
        ("get", "/sdapi/v1/scripts"),
        ("get", "/sdapi/v1/script-info"),
        ("get", "/sdapi/v1/cmd-flags"),
        ("get", "/sdapi/v1/memory"),
        ("post", "/sdapi/v1/refresh-checkpoints"),
        ("post", "/sdapi/v1/refresh-vae"),
        ("post", "/sdapi/v1/refresh-loras"),
        ("post", "/sdapi/v1/unload-checkpoint"),
        ("post", "/sdapi/v1/reload-checkpoint"),
        ("post", PNG_INFO),
        ("post", SINGLE),
        ("post", BATCH),
    ],
)
def test_every_route_wants_the_key(api, tenant, method, path):
    status, data = getattr(api, method)(path, **basic("pct_" + "x" * 40))
    assert (status, data) == (401, INCORRECT)


# --- png-info ------------------------------------------------------------------------------


def test_png_info_reads_back_a_pictor_image(api, tenant, demo_models, sync_queue):
    status, made = api.post(
        "/sdapi/v1/txt2img",
        {
            "prompt": "a red fox, snow",
            "negative_prompt": "blur",
            "seed": 42,
            "width": 128,
            "height": 128,
            "steps": 6,
        },
        **basic(tenant.key),
    )
    assert status == 200, made
    text = decode(made["images"][0]).info["parameters"]

    status, data = api.post(PNG_INFO, {"image": made["images"][0]}, **basic(tenant.key))

    assert status == 200, data
    assert set(data) == {"info", "items", "parameters"}
    assert data["info"] == text
    params = data["parameters"]
    assert (params["Prompt"], params["Negative prompt"]) == ("a red fox, snow", "blur")
    assert (params["Seed"], params["Steps"], params["Sampler"]) == ("42", "6", "Euler a")
    assert (params["Size-1"], params["Size-2"]) == ("128", "128")
    assert params["Model"] == "demo-sd15"
    assert params["Clip skip"] == "1"  # webui's default for an infotext without it


def test_png_info_items_quotes_and_a_plain_image(api, tenant):
    text = 'a cat\nSteps: 20, Sampler: DPM++ 2M, Lora hashes: "a: 1, b: 2", Size: 64x32'
    status, data = api.post(
        PNG_INFO, {"image": with_parameters(noise_image(16, 16), text)}, **basic(tenant.key)
    )
    assert status == 200, data
    assert data["items"] == {"Software": "a painter"}
    assert data["parameters"]["Lora hashes"] == "a: 1, b: 2"
    assert (data["parameters"]["Size-1"], data["parameters"]["Size-2"]) == ("64", "32")

    status, data = api.post(
        PNG_INFO, {"image": png_base64(noise_image(16, 16))}, **basic(tenant.key)
    )
    assert status == 200, data
    assert (data["info"], data["items"], data["parameters"]["Prompt"]) == ("", {}, "")


def test_png_info_refuses_what_is_not_an_image(api, tenant):
    status, data = api.post(PNG_INFO, {}, **basic(tenant.key))
    assert status == 422 and data["detail"][0]["loc"] == ["body", "image"], data
    status, data = api.post(PNG_INFO, {"image": "not an image"}, **basic(tenant.key))
    assert status == 400 and data["detail"].startswith("image: "), data


# --- extras --------------------------------------------------------------------------------


def test_extra_single_image_resizes_with_pil_in_the_request(api, tenant):
    source = noise_image(40, 24)
    text = "a fox\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 40x24"
    status, data = api.post(
        SINGLE,
        {"image": with_parameters(source, text), "upscaler_1": "Lanczos", "upscaling_resize": 2},
        **basic(tenant.key),
    )
    assert status == 200, data
    assert set(data) == {"html_info", "image"}
    image = decode(data["image"])
    assert image.size == (80, 48)
    expected = source.resize((80, 48), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected))
    # The source's parameters travel with it; webui's postprocessing note is added.
    assert image.info["parameters"] == text
    assert image.info["postprocessing"] == (
        "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    )
    assert data["html_info"] == f"<p>{image.info['postprocessing']}</p>"
    # No job, no charge.
    assert not Job.objects.exists()
    assert ledger.balance(tenant.org) == tenant.org.plan.monthly_credits


def test_extra_single_image_modes(api, tenant):
    source = noise_image(40, 24)
    b64 = png_base64(source)

    def upscaled(**fields):
        status, data = api.post(SINGLE, {"image": b64, **fields}, **basic(tenant.key))
        assert status == 200, data
        return decode(data["image"])

    nearest = upscaled(upscaler_1="Nearest", upscaling_resize=3)
    assert np.array_equal(
        np.asarray(nearest.convert("RGB")),
        np.asarray(source.resize((120, 72), Image.Resampling.NEAREST)),
    )
    # resize_mode 1: cover w × h (aspect kept), then crop to it, or not.
    assert upscaled(
        upscaler_1="Lanczos", resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100
    ).size == (100, 100)
    assert upscaled(
        upscaler_1="Lanczos",
        resize_mode=1,
        upscaling_resize_w=100,
        upscaling_resize_h=100,
        upscaling_crop=False,
    ).size == (167, 100)
    # "None" (the default) leaves the image as it is.
    assert np.array_equal(np.asarray(upscaled().convert("RGB")), np.asarray(source))
    status, data = api.post(
        SINGLE,
        {"image": b64, "upscaler_1": "Lanczos", "show_extras_results": False},
        **basic(tenant.key),
    )
    assert (status, data["image"]) == (200, None)


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"image": None}, 422, "image"),
        ({"upscaler_1": "R-ESRGAN 4x+"}, 422, "upscaler_1"),
        ({"upscaling_resize": 0}, 422, "upscaling_resize"),
        ({"upscaling_resize": "nan"}, 422, "upscaling_resize"),
        ({"resize_mode": 2}, 422, "resize_mode"),
        ({"upscaling_resize_w": 5000, "resize_mode": 1}, 422, "upscaling_resize_w"),
        ({"gfpgan_visibility": 1.5}, 422, "gfpgan_visibility"),
        ({"gfpgan_visibility": 0.5}, 400, "gfpgan_visibility"),
        ({"codeformer_visibility": 1}, 400, "codeformer_visibility"),
        ({"upscaler_2": "Nearest", "extras_upscaler_2_visibility": 0.5}, 400, "upscaler_2"),
        ({"upscaling_resize": 100}, 400, "upscaling_resize"),
        (
            {
                "resize_mode": 1,
                "upscaling_resize_w": 2048,
                "upscaling_resize_h": 2048,
                "upscaling_crop": False,
            },
            400,
            "upscaling_resize_w",
        ),
        ({"image": "not an image"}, 400, "image"),
        ({"upscaler_1": "demo-upscaler-x4", "upscaling_resize": 5}, 400, "upscaling_resize"),
        ({"upscaler_1": "demo-upscaler-x4", "image": png_base64(noise_image(4, 16))}, 400, "image"),
    ],
)
def test_extra_single_image_refuses_bad_input(api, tenant, demo_models, fields, status, field):
    body = {"image": png_base64(noise_image(40, 24)), "upscaler_1": "Lanczos", **fields}
    got, data = api.post(
        SINGLE, {k: v for k, v in body.items() if v is not None}, **basic(tenant.key)
    )
    assert got == status, data
    if status == 422:
        assert data["detail"][0]["loc"] == ["body", field], data
    else:
        assert data["error"] == "ValidationError" and data["detail"].startswith(f"{field}: ")
    assert not Job.objects.exists()


def test_an_upscaler_model_runs_a_charged_job(api, tenant, outsider, demo_models, sync_queue):
    source = noise_image(40, 24)
    status, data = api.post(
        SINGLE,
        {"image": png_base64(source), "upscaler_1": "demo-upscaler-x4", "upscaling_resize": 2},
        **basic(tenant.key),
    )
    assert status == 200, data
    image = decode(data["image"])
    assert image.size == (80, 48)
    job = Job.objects.get()
    assert (job.kind, job.model.model_id, job.status) == ("upscale", "demo-upscaler-x4", "success")
    assert (job.params["scale"], job.params["width"], job.params["height"]) == (2, 80, 48)
    assert job.cost > 0
    assert ledger.balance(tenant.org) == tenant.org.plan.monthly_credits - job.cost
    # The model's pixels, not a PIL resize.
    lanczos = np.asarray(source.resize((80, 48), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(np.asarray(image.convert("RGB"), dtype=float) - lanczos).mean() > 1
    # Another tenant's private upscaler is an unknown name.
    theirs = private_copy("demo-upscaler-x4", outsider.org)
    status, data = api.post(
        SINGLE, {"image": png_base64(source), "upscaler_1": theirs}, **basic(tenant.key)
    )
    assert status == 422 and data["detail"][0]["loc"] == ["body", "upscaler_1"], data


def test_extra_batch_images_upscales_each_image(api, tenant, demo_models, sync_queue):
    images = [noise_image(40, 24, seed=1), noise_image(24, 24, seed=2)]
    body = {
        "imageList": [{"data": png_base64(im), "name": f"{n}.png"} for n, im in enumerate(images)]
    }
    status, data = api.post(
        BATCH, {**body, "upscaler_1": "Lanczos", "upscaling_resize": 1.5}, **basic(tenant.key)
    )
    assert status == 200, data
    assert set(data) == {"html_info", "images"}
    assert [decode(b64).size for b64 in data["images"]] == [(60, 36), (36, 36)]

    status, data = api.post(
        BATCH,
        {**body, "upscaler_1": "demo-upscaler-x4", "upscaling_resize": 2},
        **basic(tenant.key),
    )
    assert status == 200, data
    assert [decode(b64).size for b64 in data["images"]] == [(80, 48), (48, 48)]
    jobs = list(Job.objects.order_by("pk"))
    assert [(j.kind, j.status) for j in jobs] == [("upscale", "success")] * 2
    spent = sum(j.cost for j in jobs)
    assert ledger.balance(tenant.org) == tenant.org.plan.monthly_credits - spent


def test_extra_batch_images_refuses_bad_input(api, tenant, demo_models):
    item = {"data": png_base64(noise_image(16, 16)), "name": "a.png"}
    cases = [
        ({"imageList": [item] * 9}, 422, "imageList"),
        ({"imageList": [{"name": "a.png"}]}, 422, "imageList"),
        ({"imageList": [item, {"data": "junk", "name": "b"}]}, 400, "imageList.1.data"),
    ]
    for fields, status, field in cases:
        got, data = api.post(BATCH, {"upscaler_1": "Lanczos", **fields}, **basic(tenant.key))
        assert got == status, (fields, data)
        if status == 422:
            assert data["detail"][0]["loc"][:2] == ["body", field], data
        else:
            assert data["detail"].startswith(f"{field}: "), data


def test_a_batch_that_cannot_all_be_queued_charges_nothing(api, tenant, demo_models, settings):
    # Credits for one upscale job of the two: the second is refused, the first refunded.
    one = job_cost(
        GenerationRequest(
            prompt="",
            model_id="demo-upscaler-x4",
            kind="upscale",
            width=32,
            height=32,
            scale=2,
            steps=submission.UPSCALER_STEPS,
        )
    )
    Organization.objects.filter(pk=tenant.org.pk).update(credit_balance=one)
    settings.PICTOR_BLOCKING_WAIT = 0
    item = {"data": png_base64(noise_image(16, 16)), "name": "a.png"}
    status, data = api.post(
        BATCH, {"imageList": [item, item], "upscaler_1": "demo-upscaler-x4"}, **basic(tenant.key)
    )
    assert status == 402, data
    assert [j.status for j in Job.objects.all()] == ["canceled"]
    assert ledger.balance(tenant.org) == one


def upscale_two_images(api, tenant):
    """extra-batch-images with two 16 px images for the upscaler model (a job each)."""
    item = {"data": png_base64(noise_image(16, 16)), "name": "a.png"}
    body = {"imageList": [item, item], "upscaler_1": "demo-upscaler-x4"}
    return api.post(BATCH, body, **basic(tenant.key))


def test_a_batch_that_fails_partway_charges_nothing_and_keeps_nothing(
    api, tenant, demo_models, settings, monkeypatch
):
    # The first image's job runs; the second is still queued when the request's wait ends.
    real_wait = service.wait_for
    ran: list[int | None] = []

    def wait_after_running_one(job, seconds):
        if not ran:
            ran.append(tasks.run_next_job())
        return real_wait(job, seconds)

    monkeypatch.setattr(service, "wait_for", wait_after_running_one)
    settings.PICTOR_BLOCKING_WAIT = 0
    status, data = upscale_two_images(api, tenant)
    assert status == 504, data
    first, second = Job.objects.order_by("pk")
    assert ran == [first.pk]
    assert (first.status, second.status) == ("success", "canceled")
    assert first.expired_at is not None and not first.outputs.exists()
    assert ledger.balance(tenant.org) == tenant.org.plan.monthly_credits
    refund = CreditEntry.objects.get(key=ledger.refund_key(first.pk))
    assert refund.note == "Part of a request that failed as a whole"


def test_a_batch_shares_one_wait_between_its_images(
    api, tenant, demo_models, settings, monkeypatch
):
    waits: list[float] = []

    def first_job_takes_a_while(job, seconds):
        waits.append(seconds)
        if len(waits) == 1:
            tasks.run_next_job()
            time.sleep(0.4)
        return job

    monkeypatch.setattr(service, "wait_for", first_job_takes_a_while)
    settings.PICTOR_BLOCKING_WAIT = 1
    status, data = upscale_two_images(api, tenant)
    assert status == 504, data
    # The second image waits for what is left of the request's second, not a second of its own.
    assert len(waits) == 2 and 0.9 < waits[0] <= 1 and waits[1] < 0.65, waits


# --- a front-end connecting ----------------------------------------------------------------


def test_a_sillytavern_style_connect_sequence_then_txt2img(api, tenant, demo_models, sync_queue):
    for name in (
        "sd-models",
        "samplers",
        "upscalers",
        "latent-upscale-modes",
        "sd-vae",
        "options",
        "loras",
    ):
        status, data = api.get(f"/sdapi/v1/{name}", **basic(tenant.key))
        assert status == 200, (name, data)
    status, data = api.post(
        "/sdapi/v1/txt2img",
        {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4},
        **basic(tenant.key),
    )
    assert status == 200, data
    assert len(data["images"]) == 1
