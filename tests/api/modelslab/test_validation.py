"""Every field's bounds, bad bodies and error shapes: always a 4xx in ModelsLab's shape."""

from __future__ import annotations

import pytest

from generation.models import Job

pytestmark = pytest.mark.django_db

BAD_FIELDS = [
    ("prompt", None),
    ("prompt", ""),
    ("prompt", "x" * 2001),
    ("width", 65),
    ("width", 56),
    ("width", 2048),
    ("width", "wide"),
    ("width", 1.5),
    ("height", -8),
    ("height", 1032),
    ("samples", 0),
    ("samples", 5),
    ("samples", "many"),
    ("num_inference_steps", 20),
    ("num_inference_steps", 51),
    ("num_inference_steps", 10**12),
    ("steps", 22),
    ("guidance_scale", 0.5),
    ("guidance_scale", 21),
    ("guidance_scale", "NaN"),
    ("guidance_scale", "Infinity"),
    ("guidance_scale", [7]),
    ("seed", -2),
    ("seed", 2**32),
    ("seed", "lucky"),
    ("scheduler", "NoSuchScheduler"),
    ("scheduler", "KarrasVeScheduler"),
    ("scheduler", "ScoreSdeVeScheduler"),
    ("scheduler", "Restart"),
    ("algorithm_type", "dpmsolver++++"),
    ("clip_skip", 0),
    ("clip_skip", 9),
    ("safety_checker", "maybe"),
    ("safety_checker_type", "smudge"),
    ("base64", "perhaps"),
    ("negative_prompt", "x" * 2001),
    ("model_id", "m" * 101),
    ("track_id", "t" * 256),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_it_rejects_an_out_of_bounds_field(api, tenant, demo_model, field, value):
    body = {"key": tenant.key, "prompt": "a cat", field: value}
    if value is None:
        del body[field]
    status, data = api.post("/api/v3/text2img", body)
    assert status == 400, data
    assert data["status"] == "error"
    problem = "num_inference_steps" if field == "steps" else field
    assert problem in data["message"], data
    assert all(isinstance(m, str) and m for m in data["message"][problem])
    assert not Job.objects.exists()


def test_it_words_the_missing_prompt_like_modelslab(api, tenant, demo_model):
    status, data = api.post("/api/v3/text2img", {"key": tenant.key})
    assert status == 400
    assert data == {"status": "error", "message": {"prompt": ["The prompt field is required."]}}


def test_it_names_the_plan_limit(api, free_tenant, demo_model):
    for field, value, words in [
        ("width", 768, "512 on the Free plan"),
        ("samples", 2, "1 on the Free plan"),
        ("num_inference_steps", 31, "21 on the Free plan"),
    ]:
        status, data = api.post(
            "/api/v3/text2img", {"key": free_tenant.key, "prompt": "a cat", field: value}
        )
        assert status == 400, data
        assert words in data["message"][field][0]


def test_it_reports_every_bad_field_at_once(api, tenant, demo_model):
    status, data = api.post(
        "/api/v3/text2img", {"key": tenant.key, "prompt": "a", "width": 7, "samples": 9}
    )
    assert status == 400
    assert set(data["message"]) == {"width", "samples"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("enhance_style", "anime"),
        ("multi_lingual", "yes"),
        ("face_enhance", True),
    ],
)
def test_it_refuses_features_it_cannot_honour(api, tenant, demo_model, field, value):
    status, data = api.post("/api/v3/text2img", {"key": tenant.key, "prompt": "a", field: value})
    assert status == 400
    assert data["status"] == "error"
    assert field in data["message"]
    assert "not supported" in data["message"][field][0]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("init_image", "https://example.com/a.png"),
        ("mask_image", "https://example.com/m.png"),
        ("strength", 0.5),
        ("controlnet_model", "demo-controlnet-canny"),
        ("scale", 4),
    ],
)
def test_it_refuses_fields_of_other_endpoints(api, tenant, demo_model, field, value):
    status, data = api.post("/api/v3/text2img", {"key": tenant.key, "prompt": "a", field: value})
    assert status == 400
    assert "belongs to" in data["message"][field][0]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        ('{"key": ', "application/json"),
        ("not json at all", "application/json"),
        ("[1, 2, 3]", "application/json"),
        ('"just a string"', "application/json"),
        ('{"prompt": NaN}', "application/json"),
        ("\xff\xfe", "application/json"),
        ("", "application/json"),
    ],
)
def test_it_answers_400_to_a_bad_body(api, tenant, demo_model, raw, content_type):
    response = api.raw("/api/v3/text2img", raw, content_type, Authorization=f"Bearer {tenant.key}")
    assert response.status_code == 400, response.content
    data = response.json()
    assert data["status"] == "error"
    assert data["message"]


def test_a_bad_body_without_a_key_is_still_not_a_500(api, demo_model):
    response = api.raw("/api/v3/text2img", "{oops", "application/json")
    assert response.status_code in (400, 401)
    assert response.json()["status"] == "error"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v3/text2img",
        "/api/v4/dreambooth",
        "/api/v3/fetch/1",
        "/api/v4/dreambooth/fetch/1",
        "/api/v3/system_load",
        "/api/v3/dreambooth/model_list",
        "/api/v4/dreambooth/model_list",
    ],
)
def test_every_endpoint_wants_a_valid_key(api, demo_model, tenant, path):
    for sent in ({}, {"key": "pct_wrongwrongwrongwrongwrong"}, {"key": 12345}, {"key": "nope"}):
        status, data = api.post(path, {"prompt": "a", **sent})
        assert status == 401, (path, sent, data)
        assert data["status"] == "error"
        assert data["message"] == "Invalid Api Key"
        assert data["tip"]


def test_it_refuses_a_get_on_a_generate_endpoint(api, tenant, demo_model):
    status, data = api.get("/api/v3/text2img", Authorization=f"Bearer {tenant.key}")
    assert status == 405
    assert data["status"] == "error"


def test_an_oversized_body_is_a_413_in_the_wire_format(api, tenant, demo_model, settings):
    settings.PICTOR_MAX_BODY_BYTES = 2**20
    big = {"key": tenant.key, "prompt": "a", "init_image": "A" * (2**20 + 1)}
    status, data = api.post("/api/v3/img2img", big)
    assert status == 413
    assert data == {"status": "error", "message": "The request body may be at most 1.0 MiB."}
    assert not Job.objects.exists()
