"""Contract of the Dan format: POST /api/sd/txt2img, its polls, and the anonymous key."""

from __future__ import annotations

import base64
import io
import uuid
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from accounts.auth import ANONYMOUS_KEY
from accounts.models import Membership, Organization, User
from accounts.services import get_or_create_organization
from billing import counters
from generation.models import Job
from tests.images import noise_image, png_base64, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)

TXT2IMG = "/api/sd/txt2img"
MISSING = {"code": 404, "data": None, "message": "Task not found"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def body(**fields):
    # A new prompt each time: the spam filter refuses the same body within 30 s.
    return {"prompt": f"a harbour at dawn {uuid.uuid4().hex[:8]}", **fields}


def post(api, tenant, **fields):
    return api.post(TXT2IMG, body(**fields), **bearer(tenant.key))


def last_job() -> Job:
    return Job.objects.latest("pk")


def image_from(text: str) -> Image.Image:
    """An answer's image: base64 PNG text, as Dan's document says (never a URL)."""
    return Image.open(io.BytesIO(base64.b64decode(text, validate=True)))


@pytest.fixture
def anonymous_on(settings):
    settings.PICTOR_ANONYMOUS_KEY_ENABLED = True


# Fields and defaults ----------------------------------------------------------------------------


def test_it_queues_with_dans_defaults_and_answers_status_0(api, tenant, demo_models, no_wait):
    status, data = post(api, tenant, some_future_field="ignored")

    assert status == 200, data
    job = last_job()
    assert data == {
        "code": 200,
        "data": {
            "taskId": str(job.pk),
            "queuePosition": 0,
            "status": 0,
            "images": [],
            "seed": job.params["seed"],
        },
        "message": "success",
    }
    p = job.params
    assert (job.kind, job.model.model_id) == ("text2img", "demo-sd15")
    assert (p["width"], p["height"], p["samples"], p["steps"]) == (512, 512, 1, 20)
    assert p["guidance_scale"] == 7.0
    assert p["scheduler"] == "EulerAncestralDiscreteScheduler"
    assert (p["use_karras_sigmas"], p["algorithm_type"]) == (False, "none")
    assert (p["negative_prompt"], p["loras"], p["hires_scale"]) == ("", [], 1)
    assert 0 <= p["seed"] < 2**32
    assert job.organization == tenant.org
    assert job.api_key.organization == tenant.org


def test_it_maps_every_field_onto_the_job(api, tenant, demo_models, no_wait):
    status, data = post(
        api,
        tenant,
        prompt="a lighthouse <lora:demo-lora-b:0.3>",
        negative_prompt="fog",
        model="demo-sd15",
        width=200,
        height=300,
        steps=40,
        cfg_scale=12.5,
        sampler_name="DPM++ 2M Karras",
        batch_size=2,
        loras=[["demo-lora-a", 0.5]],
        seed=1234,
        upscale=2,
    )

    assert status == 200, data
    p = last_job().params
    assert (p["prompt"], p["negative_prompt"]) == ("a lighthouse", "fog")
    assert (p["width"], p["height"], p["hires_scale"]) == (200, 304, 2)
    assert (p["steps"], p["guidance_scale"], p["samples"], p["seed"]) == (40, 12.5, 2, 1234)
    assert (p["scheduler"], p["use_karras_sigmas"]) == ("DPMSolverMultistepScheduler", True)
    assert p["loras"] == [["demo-lora-a", 0.5], ["demo-lora-b", 0.3]]
    assert data["data"]["seed"] == 1234


def test_it_takes_the_alias_names_and_upscale_true(api, tenant, demo_models, no_wait):
    status, data = post(
        api, tenant, model_name="demo-sd15", sampler="DDIM", upscale=True, width=64, height=64
    )

    assert status == 200, data
    p = last_job().params
    assert (p["scheduler"], p["hires_scale"]) == ("DDIMScheduler", 2)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"model": "demo-sd15", "model_name": "demo-sdxl"}, "model_name"),
        ({"sampler_name": "Euler", "sampler": "DDIM"}, "sampler"),
        (
            {
                "control_net": {
                    "model": "demo-controlnet-canny",
                    "image": png_base64(shapes_image(64, 64)),
                    "input_image": png_base64(noise_image(64, 64)),
                }
            },
            "control_net",
        ),
    ],
)
def test_an_alias_that_disagrees_with_its_field_is_a_400(
    api, tenant, demo_models, no_wait, fields, named
):
    status, data = post(api, tenant, **fields)
    assert status == 400 and data["message"].startswith(f"{named}: "), data
    assert Job.objects.count() == 0
    # The same value under both names is no contradiction.
    assert (
        post(api, tenant, model="demo-sd15", model_name="demo-sd15", width=64, height=64)[0] == 200
    )


@pytest.mark.parametrize(
    ("asked", "used"),
    [(8, 64), (12, 64), (63, 64), (99, 96), (100, 104), (333, 336), (1020, 1024), (1024, 1024)],
)
def test_it_rounds_sides_to_a_multiple_of_8_and_at_least_64(
    api, tenant, demo_models, no_wait, asked, used
):
    status, data = post(api, tenant, width=asked, height=asked)

    assert status == 200, data
    p = last_job().params
    assert (p["width"], p["height"]) == (used, used)


def test_a_control_net_unit_makes_a_controlnet_job(api, tenant, demo_models, no_wait):
    image = png_base64(shapes_image(64, 64))
    unit = {"model": "demo-controlnet-canny", "image": image, "module": "canny", "weight": 0.5}
    status, data = post(api, tenant, control_net=[unit], width=64, height=64)

    assert status == 200, data
    job = last_job()
    p = job.params
    assert job.kind == "controlnet"
    assert (p["controlnet_model"], p["controlnet_type"]) == ("demo-controlnet-canny", "canny")
    assert p["controlnet_conditioning_scale"] == 0.5
    assert default_storage.exists(p["init_image"])

    ready = {"model": "demo-controlnet-canny", "image": image, "module": "none"}
    assert post(api, tenant, control_net=ready, width=64, height=64)[0] == 200
    p = last_job().params
    assert (p["init_image"], default_storage.exists(p["control_image"])) == ("", True)


def test_a_polled_task_of_another_format_answers_png_whatever_it_was_stored_as(
    api, tenant, demo_models, sync_queue
):
    fields = {"key": tenant.key, "prompt": "a kite", "width": 64, "height": 64}
    status, data = api.post("/api/v3/text2img", {**fields, "output_format": "webp"})
    assert status == 200 and data["status"] == "success", data
    status, polled = api.get(f"/api/sd/txt2img/{data['id']}", **bearer(tenant.key))
    assert status == 200, polled
    image = image_from(polled["data"]["images"][0])
    assert (image.format, image.size) == ("PNG", (64, 64))


# Ranges: every bound is a 400 naming the field, in Dan's error shape -----------------------------

CONTROL = {"model": "demo-controlnet-canny", "image": "aGVsbG8="}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 7),
        ("width", 1025),
        ("width", "wide"),
        ("height", 7),
        ("height", 1025),
        ("steps", 19),
        ("steps", 61),
        ("steps", 42),  # inside Dan's range, above the premium plan's largest steps (41)
        ("cfg_scale", 0.5),
        ("cfg_scale", 30.5),
        ("batch_size", 0),
        ("batch_size", 5),
        ("seed", -2),
        ("seed", 2**32),
        ("sampler_name", "Nope sampler"),
        ("sampler", "Nope sampler"),
        ("loras", [["demo-lora-a"]]),
        ("loras", [["demo-lora-a", 2.5]]),
        ("loras", [["demo-lora-a", 1], ["demo-lora-a", 1]]),
        ("loras", [["no-such-lora", 1]]),
        ("upscale", 0),
        ("upscale", 5),
        ("upscale", "lots"),
        ("model", "demo-lora-a"),  # not a checkpoint
        ("model_name", "demo-lora-a"),
        ("control_net", [CONTROL, CONTROL]),
        ("control_net", {**CONTROL, "module": "depth"}),
        ("control_net", {**CONTROL, "weight": 3}),
        ("control_net", {"model": "demo-controlnet-canny"}),
        ("control_net", {**CONTROL, "model": "no-such-controlnet"}),
        ("control_net", "canny please"),
        ("prompt", ""),
    ],
)
def test_each_bound_is_a_400_naming_the_field(api, tenant, demo_models, no_wait, field, value):
    status, data = post(api, tenant, **{field: value})

    assert status == 400, data
    assert data["code"] == 400
    assert data["data"] is None
    assert data["message"].startswith(f"{field}: ")
    assert Job.objects.count() == 0


def test_the_ends_of_each_range_are_accepted(api, tenant, demo_models, no_wait):
    for fields in (
        {"width": 8, "height": 1024},
        {"steps": 20, "cfg_scale": 1},
        {"steps": 41, "cfg_scale": 30},
        {"batch_size": 4, "seed": 2**32 - 1},
        {"upscale": 4, "width": 256, "height": 256},
        {"upscale": 1, "loras": [["demo-lora-a", -2], ["demo-lora-b", 2]]},
    ):
        status, data = post(api, tenant, **fields)
        assert status == 200, (fields, data)


def test_the_plan_bounds_sizes_steps_batch_and_upscale(api, free_tenant, demo_models, no_wait):
    for field, value, message in (
        ("width", 520, "width: The width may not be greater than 512 on the Free plan."),
        ("steps", 22, "steps: The steps may not be greater than 21 on the Free plan."),
        ("batch_size", 2, "batch_size: The batch_size may not be greater than 1 on the Free plan."),
    ):
        status, data = post(api, free_tenant, **{field: value})
        assert (status, data) == (400, {"code": 400, "data": None, "message": message})

    status, data = post(api, free_tenant, upscale=2, width=256, height=320)
    assert status == 400
    assert data["message"] == (
        "upscale: The upscaled height (640) may not be greater than 512 on the Free plan."
    )
    assert post(api, free_tenant, upscale=2, width=256, height=256)[0] == 200
    # 515 rounds down to 512, which the plan allows.
    assert post(api, free_tenant, width=515)[0] == 200


def test_upscale_does_not_combine_with_control_net(api, tenant, demo_models, no_wait):
    status, data = post(api, tenant, upscale=2, control_net=CONTROL)
    assert status == 400
    assert data["message"].startswith("upscale: ")


def test_errors_have_dans_shape_and_status(api, tenant, demo_models, no_wait):
    assert post(api, tenant, model="no-such-model") == (
        404,
        {"code": 404, "data": None, "message": "Model id not found"},
    )
    status, data = api.post(TXT2IMG, "not json at all", **bearer(tenant.key))
    assert (status, data["code"], data["data"]) == (400, 400, None)

    Organization.objects.filter(pk=tenant.org.pk).update(credit_balance=0)
    assert post(api, tenant) == (
        402,
        {"code": 402, "data": None, "message": "Insufficient credits"},
    )
    assert Job.objects.count() == 0


# Authentication --------------------------------------------------------------------------------


def test_it_needs_a_valid_key(api, tenant, demo_models, no_wait):
    invalid = {"code": 401, "data": None, "message": "Invalid Api Key"}
    assert api.post(TXT2IMG, body()) == (401, invalid)
    assert api.post(TXT2IMG, body(), **bearer("pct_not_a_real_key_at_all")) == (401, invalid)
    assert api.get("/api/sd/txt2img/1") == (401, invalid)
    tenant.org.api_keys.get().revoke()
    assert post(api, tenant) == (401, invalid)


def test_the_anonymous_key_is_refused_while_switched_off(api, demo_models, no_wait):
    status, data = api.post(TXT2IMG, body(), **bearer(ANONYMOUS_KEY))

    assert (status, data) == (401, {"code": 401, "data": None, "message": "Invalid Api Key"})
    assert not Organization.objects.filter(slug="anonymous").exists()


def test_the_anonymous_key_acts_for_the_anonymous_tenant(api, demo_models, no_wait, anonymous_on):
    status, data = api.post(TXT2IMG, body(width=64, height=64), **bearer(ANONYMOUS_KEY))

    assert status == 200, data
    job = last_job()
    org = Organization.objects.get(slug="anonymous")
    assert (job.organization, job.api_key, org.plan.slug) == (org, None, "free")
    # Created with the free plan's 100 monthly credits; this image cost 1.
    assert org.credit_balance == 99
    status, polled = api.get(f"/api/sd/txt2img/{job.pk}", **bearer(ANONYMOUS_KEY))
    assert (status, polled["data"]["taskId"]) == (200, str(job.pk))
    # It is a free-plan tenant like any other.
    status, data = api.post(TXT2IMG, body(width=1024), **bearer(ANONYMOUS_KEY))
    assert (status, data["message"][:7]) == (400, "width: ")


def test_the_anonymous_plan_is_configurable(api, demo_models, no_wait, anonymous_on, settings):
    settings.PICTOR_ANONYMOUS_PLAN = "basic"
    assert api.post(TXT2IMG, body(width=768), **bearer(ANONYMOUS_KEY))[0] == 200
    assert Organization.objects.get(slug="anonymous").plan.slug == "basic"


def test_the_anonymous_key_works_on_no_other_format(api, demo_models, no_wait, anonymous_on):
    invalid = {"status": "error", "message": "Invalid Api Key"}
    for path in ("/api/v3/text2img", "/api/v6/images/text2img"):
        status, data = api.post(path, {"prompt": "a cat", "key": ANONYMOUS_KEY})
        assert (status, {k: data[k] for k in invalid}) == (401, invalid)
        status, data = api.post(path, {"prompt": "a cat"}, **bearer(ANONYMOUS_KEY))
        assert status == 401
    assert Job.objects.count() == 0


def test_the_anonymous_key_never_acts_for_someones_own_organization(
    api, demo_models, no_wait, anonymous_on
):
    org = get_or_create_organization("anonymous", "free")
    owner = User.objects.create_user("someone@example.com")
    Membership.objects.create(user=owner, organization=org, role=Membership.Role.OWNER)

    status, data = api.post(TXT2IMG, body(width=64), **bearer(ANONYMOUS_KEY))

    assert (status, data) == (401, {"code": 401, "data": None, "message": "Invalid Api Key"})
    assert Job.objects.count() == 0


def test_anonymous_callers_share_the_plans_requests_per_minute(
    api, demo_models, no_wait, anonymous_on, monkeypatch
):
    # At the start of a clock minute, so the ten requests cannot straddle two windows.
    monkeypatch.setattr(counters, "time", SimpleNamespace(time=lambda: 1_800_000_000.0 + 20))
    for _ in range(10):
        status, data = api.post(TXT2IMG, body(width=64, height=64), **bearer(ANONYMOUS_KEY))
        assert status == 200, data

    response = api.raw(
        TXT2IMG, '{"prompt": "one more"}', "application/json", **bearer(ANONYMOUS_KEY)
    )

    assert response.status_code == 429
    assert response.json() == {
        "code": 429,
        "data": None,
        "message": "Rate limit exceeded. Slow down and retry after the number of seconds in "
        "Retry-After.",
    }
    assert response["Retry-After"] == "41"
    assert Job.objects.count() == 10


def test_a_suspended_anonymous_tenant_is_refused(api, demo_models, no_wait, anonymous_on):
    assert api.post(TXT2IMG, body(width=64), **bearer(ANONYMOUS_KEY))[0] == 200
    Organization.objects.filter(slug="anonymous").update(suspended_at="2030-01-01T00:00:00Z")

    status, data = api.post(TXT2IMG, body(width=64), **bearer(ANONYMOUS_KEY))

    assert (status, data) == (403, {"code": 403, "data": None, "message": "Account suspended"})


# Generation, polling, ownership ---------------------------------------------------------------


def test_it_answers_the_png_of_the_asked_size_as_base64(api, tenant, demo_models, sync_queue):
    status, data = post(api, tenant, width=128, height=96, seed=5)

    assert status == 200, data
    task = data["data"]
    assert (task["status"], task["queuePosition"], len(task["images"])) == (2, 0, 1)
    stored = last_job().outputs.get()
    with default_storage.open(stored.path) as png:
        assert base64.b64decode(task["images"][0]) == png.read()
    image = image_from(task["images"][0])
    assert (image.format, image.size) == ("PNG", (128, 96))
    assert "Seed: 5" in image.info["parameters"]

    # Every poll answers the same images, base64 too.
    assert api.get(f"/api/sd/txt2img/{task['taskId']}", **bearer(tenant.key)) == (200, data)
    status, polled = api.post(
        "/api/sd/task/status", {"taskId": task["taskId"]}, **bearer(tenant.key)
    )
    assert (status, polled) == (200, data)


def test_a_task_whose_images_expired_answers_none(api, tenant, demo_models, sync_queue):
    _, data = post(api, tenant, width=64, height=64)
    Job.objects.filter(pk=data["data"]["taskId"]).update(expired_at=timezone.now())

    status, polled = api.get(f"/api/sd/txt2img/{data['data']['taskId']}", **bearer(tenant.key))

    assert status == 200, polled
    assert (polled["data"]["status"], polled["data"]["images"]) == (2, [])


def test_upscale_and_control_net_act_on_the_image(api, tenant, demo_models, sync_queue):
    _, plain = post(api, tenant, width=64, height=64, seed=9, prompt="a tower")
    _, larger = post(api, tenant, width=64, height=64, seed=9, prompt="a tower", upscale=2)
    unit = {"model": "demo-controlnet-canny", "image": png_base64(shapes_image(64, 64))}
    _, guided = post(api, tenant, width=64, height=64, seed=9, prompt="a tower", control_net=unit)

    plain_image, larger_image, guided_image = (
        image_from(d["data"]["images"][0]) for d in (plain, larger, guided)
    )
    assert larger_image.size == (128, 128)
    assert guided_image.size == (64, 64)
    difference = np.abs(np.asarray(plain_image, float) - np.asarray(guided_image, float))
    assert difference.mean() > 1


def test_polls_follow_the_task_through_its_states(api, tenant, demo_models, no_wait):
    _, first = post(api, tenant, width=64, height=64)
    _, second = post(api, tenant, width=64, height=64)
    first_id, second_id = first["data"]["taskId"], second["data"]["taskId"]
    assert (first["data"]["queuePosition"], second["data"]["queuePosition"]) == (0, 1)

    def poll(task_id):
        status, data = api.get(f"/api/sd/txt2img/{task_id}", **bearer(tenant.key))
        assert status == 200, data
        return data["data"]

    assert (poll(second_id)["status"], poll(second_id)["queuePosition"]) == (0, 1)
    Job.objects.filter(pk=first_id).update(
        status="processing", lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    assert (poll(first_id)["status"], poll(first_id)["queuePosition"]) == (1, 0)
    assert poll(second_id)["queuePosition"] == 0

    Job.objects.filter(pk=first_id).update(status="failed")
    failed = poll(first_id)
    assert (failed["status"], failed["images"]) == (3, [])
    assert failed["error"] == "Generation failed; the credits were refunded."

    status, data = api.post("/api/sd/task/status", {"taskId": second_id}, **bearer(tenant.key))
    assert (status, data["data"]["taskId"], data["data"]["status"]) == (200, second_id, 0)


def test_another_tenants_task_answers_like_a_missing_one(
    api, tenant, outsider, demo_models, no_wait
):
    _, data = post(api, outsider, width=64, height=64)
    theirs = data["data"]["taskId"]

    # "²" is a digit to str.isdigit(), not to int().
    for task_id in (theirs, "99999999", "not-a-number", "1" * 30, "²", "1²"):
        assert api.get(f"/api/sd/txt2img/{task_id}", **bearer(tenant.key)) == (404, MISSING)
        status, answer = api.post("/api/sd/task/status", {"taskId": task_id}, **bearer(tenant.key))
        assert (status, answer) == (404, MISSING)
    assert api.get(f"/api/sd/txt2img/{theirs}", **bearer(outsider.key))[0] == 200
