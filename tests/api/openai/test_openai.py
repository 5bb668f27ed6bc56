"""Contract of the OpenAI Images format (docs/api/openai.md): /v1/images/{generations,edits,
variations} and /v1/models, answering OpenAI's bodies and {"error": {...}} with its statuses.
"""

from __future__ import annotations

import base64
import io
import uuid

import numpy as np
import pytest
from PIL import Image

from accounts.models import Organization
from billing import ledger
from billing.models import Plan
from generation.engine.styles import STYLE_PRESETS
from generation.models import AIModel, Job
from tests.helpers import make_tenant, private_copy
from tests.images import fetched_bytes, noise_image

pytestmark = pytest.mark.django_db(transaction=True)

GENERATIONS = "/v1/images/generations"
EDITS = "/v1/images/edits"
VARIATIONS = "/v1/images/variations"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZE = 96


def bearer(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.key}"}


def generate(api, tenant, **fields):
    # A new prompt each time: the spam filter refuses the same body within 30 s.
    # The plan's fewest steps unless the test is about quality: quick on a busy CPU.
    body = {
        "prompt": f"a lighthouse at dusk {uuid.uuid4().hex[:6]}",
        "size": "64x64",
        "quality": "low",
        **fields,
    }
    return api.post(GENERATIONS, {k: v for k, v in body.items() if v is not None}, **bearer(tenant))


def png_file(image: Image.Image, name: str = "image.png") -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    buffer.name = name
    return buffer


def openai_mask(size: int = SIZE) -> Image.Image:
    """OpenAI's convention: opaque everywhere, fully transparent (edit here) in the middle."""
    mask = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return mask


def upload(client, path, tenant, **fields):
    """(status, body) of a multipart POST; file values are PIL images."""
    data = {"prompt": f"a stone bridge {uuid.uuid4().hex[:6]}", **fields}
    data = {k: v for k, v in data.items() if v is not None}
    for name, value in data.items():
        if isinstance(value, Image.Image):
            data[name] = png_file(value, f"{name}.png")
    response = client.post(path, data=data, headers=bearer(tenant))
    return response.status_code, response.json()


def b64_image(item: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item["b64_json"], validate=True)))


def assert_error(answer, status, param, code, kind="invalid_request_error"):
    got_status, body = answer
    assert got_status == status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert (error["type"], error["param"], error["code"]) == (kind, param, code), error
    assert error["message"]
    return error


# --- generations --------------------------------------------------------------------------------


def test_it_answers_a_link_to_the_png_with_openai_s_fields(api, tenant, demo_model, sync_queue):
    before = ledger.balance(tenant.org)
    status, data = generate(api, tenant, prompt="a red fox", size="128x64", user="end-user-7")
    assert status == 200, data
    assert list(data) == [
        "created",
        "data",
        "background",
        "output_format",
        "quality",
        "size",
        "usage",
    ]
    [item] = data["data"]
    assert set(item) == {"url", "revised_prompt"}
    assert item["revised_prompt"] == "a red fox"
    assert item["url"].startswith("http://testserver/files/generations/")
    png = fetched_bytes(item["url"])
    assert png.startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(png)).size == (128, 64)
    job = Job.objects.get()
    assert abs(data["created"] - job.created_at.timestamp()) < 1
    assert (data["size"], data["quality"], data["output_format"]) == ("128x64", "low", "png")
    assert data["background"] == "opaque"
    # Usage counts credits: what the ledger took.
    assert data["usage"]["output_tokens"] == data["usage"]["total_tokens"] == job.cost > 0
    assert data["usage"]["input_tokens"] == 0
    assert ledger.balance(tenant.org) == before - job.cost
    assert (job.track_id, job.kind, job.model.model_id) == ("end-user-7", "text2img", "demo-sd15")


def test_b64_json_in_png_jpeg_and_webp(api, tenant, demo_model, sync_queue):
    status, data = generate(api, tenant, response_format="b64_json", n=2, seed=None)
    assert status == 200, data
    assert len(data["data"]) == 2
    for item in data["data"]:
        assert set(item) == {"b64_json", "revised_prompt"}
        assert base64.b64decode(item["b64_json"]).startswith(PNG_SIGNATURE)
    assert Job.objects.get().output_base64

    sizes = {}
    for fmt, pillow in (("jpeg", "JPEG"), ("webp", "WEBP")):
        for compression in (5, 90):
            status, data = generate(
                api,
                tenant,
                response_format="b64_json",
                output_format=fmt,
                output_compression=compression,
            )
            assert status == 200, data
            image = b64_image(data["data"][0])
            assert (image.format, image.size) == (pillow, (64, 64))
            assert data["output_format"] == fmt
            sizes[fmt, compression] = len(data["data"][0]["b64_json"])
        # output_compression is OpenAI's: the more compression, the smaller the image.
        assert sizes[fmt, 90] < sizes[fmt, 5]
    # The answer is the stored file itself, not a copy converted for the answer.
    job = Job.objects.order_by("-created_at").first()
    stored = job.outputs.get()
    assert stored.path.endswith("/0.webp")
    assert base64.b64decode(data["data"][0]["b64_json"]).startswith(b"RIFF")


def test_a_jpeg_link_serves_the_stored_jpg(api, client, tenant, demo_model, sync_queue):
    status, data = generate(api, tenant, output_format="jpeg", output_compression=40)
    assert status == 200, data
    assert data["output_format"] == "jpeg"
    [item] = data["data"]
    assert item["url"].startswith("http://testserver/files/generations/")
    assert item["url"].split("?")[0].endswith("/0.jpg")
    response = client.get(item["url"].replace("http://testserver", ""))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert (image.format, image.size) == ("JPEG", (64, 64))
    assert Job.objects.get().outputs.get().path.endswith("/0.jpg")


def test_bad_output_options_are_refused_before_anything_is_charged(api, tenant, demo_model):
    before = ledger.balance(tenant.org)
    assert_error(
        generate(api, tenant, output_compression=50), 400, "output_compression", "invalid_value"
    )
    assert_error(
        generate(api, tenant, output_format="gif", response_format="b64_json"),
        400,
        "output_format",
        "invalid_value",
    )
    assert not Job.objects.exists()
    assert ledger.balance(tenant.org) == before


def test_defaults_and_quality_pick_the_plan_s_steps(
    api, tenant, free_tenant, demo_model, queued_only
):
    # premium lists [21, 31, 41]: low the fewest, medium/standard/auto the middle, high/hd the most.
    expected = {
        None: 31,
        "auto": 31,
        "standard": 31,
        "medium": 31,
        "low": 21,
        "high": 41,
        "hd": 41,
    }
    for quality, steps in expected.items():
        status, data = generate(api, tenant, quality=quality, size=None)
        assert status == 504, data
        assert data["error"]["type"] == "server_error"
        job = Job.objects.latest("pk")
        p = job.params
        assert p["steps"] == steps, quality
        # No size: OpenAI's 1024x1024, within the plan.
        assert (p["width"], p["height"], p["samples"]) == (1024, 1024, 1)
        assert (p["safety_checker"], p["negative_prompt"], job.kind) == (True, "", "text2img")
        assert job.status == Job.Status.CANCELED
    # The free plan: its one step count and its largest side.
    assert generate(api, free_tenant, quality="high", size="auto")[0] == 504
    p = Job.objects.filter(organization=free_tenant.org).get().params
    assert (p["steps"], p["width"], p["height"]) == (21, 512, 512)


@pytest.mark.parametrize(("style", "preset"), [("vivid", "enhance"), ("natural", "photographic")])
def test_a_style_is_a_prompt_style(api, tenant, demo_model, sync_queue, style, preset):
    status, data = generate(api, tenant, prompt="a red fox", style=style)
    assert status == 200, data
    prompt, negative = STYLE_PRESETS[preset].apply("a red fox", "")
    assert data["data"][0]["revised_prompt"] == prompt != "a red fox"
    p = Job.objects.get().params
    assert (p["prompt"], p["negative_prompt"]) == (prompt, negative)


def test_moderation_low_turns_the_safety_checker_off(api, tenant, demo_model, queued_only):
    generate(api, tenant, moderation="low")
    generate(api, tenant, moderation="auto")
    low, auto = (job.params["safety_checker"] for job in Job.objects.order_by("pk"))
    assert (low, auto) == (False, True)


def test_sizes_within_the_plan(api, tenant, free_tenant, demo_model, queued_only):
    assert generate(api, tenant, size="512x256")[0] == 504
    assert generate(api, tenant, size="1024x1024")[0] == 504
    sizes = [(j.params["width"], j.params["height"]) for j in Job.objects.order_by("pk")]
    assert sizes == [(512, 256), (1024, 1024)]
    for size in ("1792x1024", "1024x1536", "100x64", "64x63", "32x32", "big", "1024", "-64x64"):
        assert_error(generate(api, tenant, size=size), 400, "size", "invalid_value")
    error = assert_error(generate(api, free_tenant, size="1024x1024"), 400, "size", "invalid_value")
    assert "512 on the Free plan" in error["message"]
    assert Job.objects.count() == 2


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"prompt": None}, "prompt", "missing_required_parameter"),
        ({"prompt": "x" * 2001}, "prompt", "invalid_value"),
        ({"n": 0}, "n", "invalid_value"),
        ({"n": 11}, "n", "invalid_value"),
        ({"n": "many"}, "n", "invalid_value"),
        ({"response_format": "file"}, "response_format", "invalid_value"),
        ({"quality": "ultra"}, "quality", "invalid_value"),
        ({"style": "moody"}, "style", "invalid_value"),
        ({"moderation": "off"}, "moderation", "invalid_value"),
        ({"background": "transparent"}, "background", "invalid_value"),
        ({"background": "green"}, "background", "invalid_value"),
        ({"stream": True}, "stream", "invalid_value"),
        (
            {"output_compression": 101, "output_format": "jpeg"},
            "output_compression",
            "invalid_value",
        ),
        ({"user": "u" * 256}, "user", "invalid_value"),
        ({"seed": 5}, "seed", "unknown_parameter"),
        ({"negative_prompt": "blurry"}, "negative_prompt", "unknown_parameter"),
        ({"model": "demo-lora-a"}, "model", "invalid_value"),
        ({"model": "demo-sd15-inpaint"}, "model", "invalid_value"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(api, tenant, demo_models, fields, param, code):
    assert_error(generate(api, tenant, **fields), 400, param, code)
    assert not Job.objects.exists()


def test_background_opaque_and_auto_are_what_comes_back(api, tenant, demo_model, queued_only):
    assert generate(api, tenant, background="opaque")[0] == 504
    assert generate(api, tenant, background="auto")[0] == 504


def test_n_is_bounded_by_the_plan(api, free_tenant, demo_model):
    error = assert_error(generate(api, free_tenant, n=2), 400, "n", "invalid_value")
    assert error["message"] == "n: The n may not be greater than 1 on the Free plan."


def test_models_by_id_by_openai_name_and_privately(api, tenant, outsider, demo_models, queued_only):
    private = private_copy("demo-sd15", outsider.org)
    for name in ("dall-e-2", "dall-e-3", "gpt-image-1", None):
        assert generate(api, tenant, model=name)[0] == 504
        assert Job.objects.latest("pk").model.model_id == "demo-sd15"
    assert generate(api, outsider, model=private)[0] == 504
    assert Job.objects.latest("pk").model.model_id == private
    count = Job.objects.count()
    # Another tenant's model looks like one that does not exist.
    for name in (private, "no-such-model"):
        error = assert_error(generate(api, tenant, model=name), 404, None, "model_not_found")
        assert f"'{name}' does not exist" in error["message"]
    assert Job.objects.count() == count


def test_keys_credits_and_rate_limits_in_openai_s_shape(api, tenant, demo_model, queued_only):
    assert_error(api.post(GENERATIONS, {"prompt": "a fox"}), 401, None, "invalid_api_key")
    wrong = {"Authorization": "Bearer pct_" + "x" * 40}
    assert_error(api.post(GENERATIONS, {"prompt": "a fox"}, **wrong), 401, None, "invalid_api_key")

    broke = make_tenant("broke")
    Organization.objects.filter(pk=broke.org.pk).update(credit_balance=0)
    response_status, body = generate(api, broke)
    assert_error((response_status, body), 429, None, "insufficient_quota", "insufficient_quota")
    assert not Job.objects.exists()

    body = {"prompt": "the same body twice", "size": "64x64"}
    assert api.post(GENERATIONS, body, **bearer(tenant))[0] == 504
    assert_error(
        api.post(GENERATIONS, body, **bearer(tenant)), 429, None, "rate_limit_exceeded", "requests"
    )


def test_429s_carry_their_retry_headers(client, tenant, demo_model, queued_only):
    body = {"prompt": "the same body twice", "size": "64x64"}
    post = lambda: client.post(  # noqa: E731
        GENERATIONS, body, content_type="application/json", headers=bearer(tenant)
    )
    post()
    assert int(post()["Retry-After"]) > 0
    Organization.objects.filter(pk=tenant.org.pk).update(credit_balance=0)
    body["prompt"] = "another body"
    response = post()
    # The balance will not come back by retrying: OpenAI's SDK reads this header.
    assert (response.status_code, response["x-should-retry"]) == (429, "false")
    assert response["Retry-After"] == "60"


def test_a_failed_generation_is_a_refunded_server_error(api, tenant, demo_model, sync_queue):
    AIModel.objects.create(model_id="broken", name="broken", path="no-such-folder")
    before = ledger.balance(tenant.org)
    assert_error(
        generate(api, tenant, model="broken"), 500, None, "generation_failed", "server_error"
    )
    assert Job.objects.get().status == Job.Status.FAILED
    assert ledger.balance(tenant.org) == before


def test_the_rate_limit_of_the_plan_is_a_429(api, demo_model):
    limited = make_tenant("limited", "basic")
    Plan.objects.filter(slug="basic").update(requests_per_minute=0)
    status, body = api.get("/v1/models", **bearer(limited))
    assert_error((status, body), 429, None, "rate_limit_exceeded", "requests")


# --- edits and variations -----------------------------------------------------------------------


def test_an_edit_with_a_mask_repaints_its_transparent_area(client, tenant, demo_models, sync_queue):
    source = noise_image(SIZE, SIZE)
    status, data = upload(
        client,
        EDITS,
        tenant,
        image=source,
        mask=openai_mask(),
        response_format="b64_json",
        quality="low",
    )
    assert status == 200, data
    job = Job.objects.get()
    assert (job.kind, job.params["strength"]) == ("inpaint", 1.0)
    image = np.asarray(b64_image(data["data"][0]).convert("RGB")).astype(np.int16)
    original = np.asarray(source).astype(np.int16)
    # Away from the mask's soft edge the input survives; inside, the model painted.
    border = np.ones((SIZE, SIZE), bool)
    border[SIZE // 4 - 12 : 3 * SIZE // 4 + 12, SIZE // 4 - 12 : 3 * SIZE // 4 + 12] = False
    inside = (slice(SIZE // 4 + 12, 3 * SIZE // 4 - 12),) * 2
    assert np.abs(image[border] - original[border]).max() <= 2
    assert np.abs(image[inside] - original[inside]).mean() > 20
    # The input size is kept when no size is sent.
    assert data["size"] == f"{SIZE}x{SIZE}"


def test_an_edit_without_a_mask_is_img2img(client, tenant, demo_model, sync_queue):
    status, data = upload(client, EDITS, tenant, **{"image[]": noise_image(64, 64)}, size="128x128")
    assert status == 200, data
    job = Job.objects.get()
    assert (job.kind, job.params["strength"], data["size"]) == ("img2img", 0.75, "128x128")
    assert data["data"][0]["url"].startswith("http://testserver/files/")
    assert data["data"][0]["revised_prompt"].startswith("a stone bridge")


def test_a_variation_is_img2img_without_a_prompt(client, tenant, demo_model, sync_queue):
    status, data = upload(client, VARIATIONS, tenant, prompt=None, image=noise_image(64, 64), n=2)
    assert status == 200, data
    assert [set(item) for item in data["data"]] == [{"url"}, {"url"}]
    p = Job.objects.get().params
    assert (p["kind"], p["prompt"], p["strength"], p["samples"]) == ("img2img", "", 0.6, 2)


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"image": None}, "image", "missing_required_parameter"),
        ({"prompt": None}, "prompt", "missing_required_parameter"),
        ({"mask": Image.new("RGB", (SIZE, SIZE))}, "mask", "invalid_value"),
        ({"mask": openai_mask(64)}, "mask", "invalid_value"),
        ({"mask": Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))}, "mask", "invalid_value"),
        ({"image": "https://example.com/a.png"}, "image", "invalid_value"),
        ({"seed": "5"}, "seed", "unknown_parameter"),
        ({"markup": Image.new("RGB", (8, 8))}, "markup", "unknown_parameter"),
        ({"prompt": Image.new("RGB", (8, 8))}, "prompt", "invalid_value"),
        ({"size": "4096x4096"}, "size", "invalid_value"),
        ({"n": "x"}, "n", "invalid_value"),
        ({"prompt": "a\x00b"}, "prompt", "invalid_value"),
    ],
)
def test_a_bad_edit_is_a_400_naming_the_parameter(client, tenant, demo_model, fields, param, code):
    fields = {"image": noise_image(SIZE, SIZE), **fields}
    assert_error(upload(client, EDITS, tenant, **fields), 400, param, code)
    assert not Job.objects.exists()


def test_an_unreadable_or_missing_upload_is_a_400(client, tenant, demo_model):
    junk = io.BytesIO(b"not an image")
    junk.name = "junk.png"
    response = client.post(EDITS, {"prompt": "x", "image": junk}, headers=bearer(tenant))
    error = assert_error((response.status_code, response.json()), 400, "image", "invalid_value")
    assert "not a readable image" in error["message"]
    # Variations take no mask; two images are one too many.
    two = [png_file(noise_image(64, 64)), png_file(noise_image(64, 64, 1))]
    response = client.post(VARIATIONS, {"image": two}, headers=bearer(tenant))
    assert_error((response.status_code, response.json()), 400, "image", "invalid_value")
    status, body = upload(
        client, VARIATIONS, tenant, prompt=None, image=noise_image(64, 64), mask=openai_mask(64)
    )
    assert_error((status, body), 400, "mask", "unknown_parameter")
    # A JSON body is not a form.
    for path in (EDITS, VARIATIONS):
        response = client.post(
            path, {"prompt": "x"}, content_type="application/json", headers=bearer(tenant)
        )
        error = assert_error((response.status_code, response.json()), 400, None, None)
        assert "multipart/form-data" in error["message"]
    assert not Job.objects.exists()


def test_the_same_form_with_another_image_is_not_a_duplicate(
    client, tenant, demo_model, queued_only
):
    for seed in (0, 1):
        status, _ = upload(client, VARIATIONS, tenant, prompt=None, image=noise_image(64, 64, seed))
        assert status == 504
    status, body = upload(client, VARIATIONS, tenant, prompt=None, image=noise_image(64, 64, 1))
    assert_error((status, body), 429, None, "rate_limit_exceeded", "requests")


def test_an_oversize_form_is_a_413_in_openai_s_shape(client, settings, tenant, demo_model):
    settings.PICTOR_MAX_BODY_BYTES = 4096
    status, body = upload(client, EDITS, tenant, image=noise_image(SIZE, SIZE))
    assert_error((status, body), 413, None, None)
    assert "at most 4.0 KiB" in body["error"]["message"]


# --- models and routes --------------------------------------------------------------------------


def test_the_model_list_and_one_model(api, tenant, outsider, demo_models):
    private = private_copy("demo-sd15", tenant.org)
    hidden = private_copy("demo-sdxl", outsider.org)
    status, data = api.get("/v1/models", **bearer(tenant))
    assert status == 200, data
    assert data["object"] == "list"
    ids = [entry["id"] for entry in data["data"]]
    checkpoints = sorted(
        m.model_id
        for m in AIModel.objects.filter(family__in=AIModel.CHECKPOINTS, organization=None)
    )
    assert ids == sorted([*checkpoints, private]) + [
        "dall-e-2",
        "dall-e-3",
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
    ]
    assert hidden not in ids and "demo-lora-a" not in ids
    by_id = {entry["id"]: entry for entry in data["data"]}
    assert by_id[private]["owned_by"] == tenant.org.slug
    assert by_id["demo-sd15"] == {
        "id": "demo-sd15",
        "object": "model",
        "created": int(demo_models["demo-sd15"].created_at.timestamp()),
        "owned_by": "pictor",
    }
    assert api.get("/v1/models/demo-sd15", **bearer(tenant)) == (200, by_id["demo-sd15"])
    assert api.get("/v1/models/dall-e-3", **bearer(tenant))[1]["owned_by"] == "pictor"
    for name in (hidden, "demo-lora-a", "nothing"):
        assert_error(api.get(f"/v1/models/{name}", **bearer(tenant)), 404, None, "model_not_found")
    assert_error(api.get("/v1/models"), 401, None, "invalid_api_key")


@pytest.mark.parametrize("path", ["/v1/images/nowhere", "/v1/models/a/b", "/v1/images"])
def test_an_unknown_route_is_a_404_in_openai_s_shape(api, path):
    assert_error(api.get(path), 404, None, None)
    assert_error(api.post(path, {}), 404, None, None)


def test_hyperbolic_keeps_its_singular_route(api, tenant, demo_model):
    status, body = api.post("/v1/image/generation", {"prompt": "x"}, **bearer(tenant))
    assert (status, body["object"], body["param"]) == (400, "error", "model_name")
