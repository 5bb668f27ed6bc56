"""Contract of the Synapse format (docs/architecture.md): /sd/list, /sd/sampler, /sd/loras,
/sd/embeddings and POST /sd/<model> answering {"data": "<base64 png>"}.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from billing import ledger
from generation.models import AIModel, Job
from tests.helpers import make_tenant, private_copy

pytestmark = pytest.mark.django_db(transaction=True)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LISTS = ("/sd/list", "/sd/sampler", "/sd/loras", "/sd/embeddings")


def bearer(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.key}"}


def generate(api, tenant, model="demo-sd15", **fields):
    return api.post(f"/sd/{model}", {"prompt": "a lighthouse at dusk", **fields}, **bearer(tenant))


def test_it_answers_one_base64_png_of_the_asked_size(api, tenant, demo_model, sync_queue):
    status, data = generate(api, tenant, width=128, height=64, seed=11)
    assert status == 200, data
    assert list(data) == ["data"]
    png = base64.b64decode(data["data"], validate=True)
    assert png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    assert image.size == (128, 64)
    # Synapse's defaults reached the engine: 20 steps, DPM++ 2M Karras, CFG 7.
    parameters = image.info["parameters"]
    assert parameters.startswith("a lighthouse at dusk")
    assert "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 11" in parameters
    job = Job.objects.get()
    assert job.status == Job.Status.SUCCESS


def test_it_queues_synapse_defaults_and_refunds_a_timed_out_job(
    api, tenant, demo_model, queued_only
):
    before = ledger.balance(tenant.org)
    status, data = generate(api, tenant)
    assert status == 504
    assert set(data) == {"error"}
    assert "canceled" in data["error"]

    job = Job.objects.get()
    p = job.params
    assert (p["width"], p["height"], p["steps"], p["guidance_scale"]) == (512, 512, 20, 7.0)
    assert (p["scheduler"], p["use_karras_sigmas"]) == ("DPMSolverMultistepScheduler", True)
    assert (p["negative_prompt"], p["samples"], p["kind"]) == ("", 1, "text2img")
    assert isinstance(p["seed"], int) and p["seed"] >= 0
    assert job.model.model_id == "demo-sd15"
    assert job.status == Job.Status.CANCELED
    assert ledger.balance(tenant.org) == before


def test_it_honours_every_field(api, tenant, demo_models, queued_only):
    fields = {
        "prompt": "a <lora:demo-lora-a:0.5> lighthouse, demo-embedding",
        "negative_prompt": "blurry",
        "steps": "31",
        "cfg_scale": 9.5,
        "sampler": "euler a",
        "width": 256,
        "height": 128,
        "seed": 5,
        "unknown_field": "ignored",
    }
    status, _ = generate(api, tenant, model="demo-sdxl", **fields)
    # demo-sdxl takes neither an SD 1.x LoRA nor an embedding: a 400 naming the prompt.
    assert status == 400

    status, _ = generate(api, tenant, **fields)
    assert status == 504
    p = Job.objects.get().params
    assert p["prompt"] == "a lighthouse, demo-embedding"
    assert p["loras"] == [["demo-lora-a", 0.5]]
    assert p["embeddings"] == ["demo-embedding"]
    assert p["negative_prompt"] == "blurry"
    assert (p["steps"], p["guidance_scale"], p["seed"]) == (31, 9.5, 5)
    assert (p["scheduler"], p["use_karras_sigmas"]) == ("EulerAncestralDiscreteScheduler", False)
    assert (p["width"], p["height"]) == (256, 128)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "<lora:demo-lora-a>"}, "prompt"),
        ({"prompt": "a <lora:no-such-lora:1>"}, "prompt"),
        ({"prompt": "a <lora:demo-lora-a:heavy>"}, "prompt"),
        ({"steps": 0}, "steps"),
        ({"steps": 42}, "steps"),
        ({"steps": "many"}, "steps"),
        ({"cfg_scale": 0.9}, "cfg_scale"),
        ({"cfg_scale": 30.5}, "cfg_scale"),
        ({"width": 56}, "width"),
        ({"width": 1032}, "width"),
        ({"width": 100}, "width"),
        ({"height": 56}, "height"),
        ({"height": 1032}, "height"),
        ({"height": 100}, "height"),
        ({"seed": -2}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"sampler": "Nope"}, "sampler"),
        ({"sampler": "DDIMInverseScheduler"}, "sampler"),
    ],
)
def test_each_bound_is_a_400_naming_the_field(api, tenant, demo_models, queued_only, fields, field):
    body = {"prompt": "a lighthouse at dusk", **fields}
    if body["prompt"] is None:
        del body["prompt"]
    status, data = api.post("/sd/demo-sd15", body, **bearer(tenant))
    assert status == 400, data
    assert data["error"] == "Invalid request"
    assert data["details"].startswith(f"{field}: "), data
    assert Job.objects.count() == 0


def test_the_plan_bounds_steps_and_sides(api, free_tenant, demo_model, queued_only):
    status, data = generate(api, free_tenant, width=520)
    assert status == 400
    assert data["details"] == "width: The width may not be greater than 512 on the Free plan."
    status, data = generate(api, free_tenant, steps=22)
    assert status == 400
    assert data["details"] == "steps: The steps may not be greater than 21 on the Free plan."
    assert generate(api, free_tenant, steps=21)[0] == 504


def test_a_model_that_is_not_a_text2img_checkpoint_is_a_400_naming_model(
    api, tenant, demo_models, queued_only
):
    for model in ("demo-lora-a", "demo-sd15-inpaint"):
        status, data = generate(api, tenant, model=model)
        assert status == 400
        assert data["details"].startswith("model: "), data


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer pct_wrong"}, {"Authorization": "Token abc"}],
)
def test_a_missing_or_bad_key_is_401(api, tenant, demo_model, headers):
    status, data = api.post("/sd/demo-sd15", {"prompt": "a lighthouse"}, **headers)
    assert status == 401
    assert data == {"error": "Invalid request", "details": "Invalid Api Key"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer pct_wrong"},
        {"Authorization": "Token abc"},
        {"Authorization": "Basic !!!"},
        {"key": "pct_wrong"},
    ],
)
def test_the_lists_answer_a_bad_key_401(api, tenant, demo_models, headers):
    for listing in LISTS:
        assert api.get(listing, **headers) == (
            401,
            {"error": "Invalid request", "details": "Invalid Api Key"},
        )


def test_the_lists_answer_without_a_key_with_the_public_names_only(
    api, tenant, outsider, demo_models
):
    private_copy("demo-sd15", outsider.org)
    private_copy("demo-lora-a", outsider.org)
    private_copy("demo-embedding", tenant.org)

    assert api.get("/sd/list") == (
        200,
        ["demo-sd15", "demo-sd15-inpaint", "demo-sd15-lcm", "demo-sdxl"],
    )
    assert api.get("/sd/loras") == (200, ["demo-lora-a", "demo-lora-b"])
    assert api.get("/sd/embeddings") == (200, ["demo-embedding"])
    assert api.get("/sd/sampler") == api.get("/sd/sampler", **bearer(tenant))
    # With its key, an organization sees its own private ones too, and only its own.
    assert api.get("/sd/embeddings", **bearer(tenant)) == (
        200,
        ["demo-embedding", "demo-embedding-private"],
    )
    assert api.get("/sd/loras", **bearer(tenant)) == (200, ["demo-lora-a", "demo-lora-b"])
    assert api.get("/sd/loras", **bearer(outsider))[1] == [
        "demo-lora-a",
        "demo-lora-a-private",
        "demo-lora-b",
    ]
    # Generating still needs a key.
    assert api.post("/sd/demo-sd15", {"prompt": "a lighthouse"})[0] == 401


def test_a_disabled_public_model_is_not_listed(api, demo_models):
    AIModel.objects.filter(model_id="demo-sdxl").update(enabled=False)

    assert "demo-sdxl" not in api.get("/sd/list")[1]


def test_the_lists_name_what_the_tenant_may_use(api, tenant, outsider, demo_models):
    private_copy("demo-sd15", outsider.org)
    private_copy("demo-lora-a", outsider.org)
    own = private_copy("demo-sdxl", tenant.org)

    assert api.get("/sd/list", **bearer(tenant)) == (
        200,
        ["demo-sd15", "demo-sd15-inpaint", "demo-sd15-lcm", "demo-sdxl", own],
    )
    assert api.get("/sd/loras", **bearer(tenant)) == (200, ["demo-lora-a", "demo-lora-b"])
    assert api.get("/sd/embeddings", **bearer(tenant)) == (200, ["demo-embedding"])
    status, samplers = api.get("/sd/sampler", **bearer(tenant))
    assert status == 200
    assert {"DPM++ 2M Karras", "Euler a", "Euler", "DDIM", "UniPC", "LCM"} <= set(samplers)
    assert "DDIMInverseScheduler" not in samplers
    assert api.get("/sd/list", **bearer(outsider))[1] == [
        "demo-sd15",
        "demo-sd15-inpaint",
        "demo-sd15-lcm",
        "demo-sd15-private",
        "demo-sdxl",
    ]


def test_another_tenants_private_model_answers_like_a_missing_one(
    api, tenant, outsider, demo_models, queued_only
):
    private = private_copy("demo-sd15", outsider.org)
    lora = private_copy("demo-lora-a", outsider.org)
    assert generate(api, tenant, model=private) == generate(api, tenant, model="no-such-model")
    assert generate(api, tenant, model=private)[0] == 404
    assert generate(api, tenant, model=private)[1] == {"error": "Model id not found"}

    status, data = generate(api, tenant, prompt=f"a <lora:{lora}:1>")
    _, missing = generate(api, tenant, prompt="a <lora:no-such-lora:1>")
    assert status == 400
    assert data["details"].replace(lora, "X") == missing["details"].replace("no-such-lora", "X")
    assert Job.objects.count() == 0
    # The owner may use both.
    assert generate(api, outsider, model=private, prompt=f"a <lora:{lora}:1>")[0] == 504


def test_a_failed_generation_is_the_synapse_500(api, tenant, demo_model, sync_queue):
    AIModel.objects.create(model_id="broken", name="broken", path="no-such-folder")
    before = ledger.balance(tenant.org)
    status, data = generate(api, tenant, model="broken", width=64, height=64)
    assert status == 500
    assert data["error"] == "Error during generation (SD)"
    assert Job.objects.get().status == Job.Status.FAILED
    assert ledger.balance(tenant.org) == before


def test_credits_and_rate_limits_keep_the_error_shape(api, demo_model, queued_only):
    poor = make_tenant("poor")
    ledger.set_balance(poor.org, 0)
    status, data = generate(api, poor)
    assert status == 402
    assert data["error"] == "Insufficient credits"

    rich = make_tenant("rich")
    assert generate(api, rich, prompt="a dull repeat")[0] == 504
    response = api.raw(
        "/sd/demo-sd15",
        '{"prompt": "a dull repeat"}',
        "application/json",
        Authorization=f"Bearer {rich.key}",
    )
    assert response.status_code == 429
    assert response.json()["error"] == "Rate limit exceeded"
    assert "details" in response.json()
    assert int(response["Retry-After"]) >= 1
