"""Bad field values in every wire format: a 4xx in that format's shape, and no job or charge.

Each case goes to every format that has the field, under the format's own name for it: floats
that are not finite or out of range ("nan", "inf", "1e308", a 400-digit integer), over-long
integers, LoRA weights in prompt tags and in fields, text with a NUL or a lone surrogate, and
parameter combinations the engine cannot run (a hires fix or img2img pass with no step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from rest_framework.exceptions import ValidationError

from billing.models import CreditEntry
from generation.api.a1111 import checkpoints as a1111_checkpoints
from generation.api.a1111 import errors as a1111_errors
from generation.api.a1111 import serializers as a1111
from generation.api.dan import serializers as dan
from generation.api.hyperbolic import serializers as hyperbolic
from generation.api.modelslab import serializers as modelslab
from generation.engine import runner
from generation.engine.prompts import PromptError, extract_lora_tags
from generation.engine.request import GenerationRequest
from generation.models import Job
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db

HUGE_INT = 10**400  # parses as JSON, but float() of it overflows
LONG_DIGITS = "1" * 5000  # past Python's integer-string conversion limit
BAD_FLOATS = ["nan", "NaN", "inf", "-Infinity", "1e308", HUGE_INT, True]  # True: float() reads 1.0
BAD_TAG_WEIGHTS = ["nan", "inf", "-inf", "1e308", "-1e308", "3", "1" * 1500]
NUL = "demo-lora-a\x00"
SURROGATE = "demo-lora-a\ud800"


@dataclass(frozen=True)
class Format:
    """One wire format: where to post, a body it accepts, and how its errors name a field."""

    name: str
    path: str
    body: dict[str, Any] = field(default_factory=dict)
    key_in_body: bool = False

    def post(self, api: Any, tenant: Any, fields: dict[str, Any]) -> tuple[int, Any]:
        body = {**self.body, **fields}
        if self.key_in_body:
            return api.post(self.path, {"key": tenant.key, **body})
        return api.post(self.path, body, Authorization=f"Bearer {tenant.key}")

    def mentions(self, status: int, data: Any, *names: str) -> bool:
        """Whether `data` is this format's error body and its message mentions one of `names`.

        For text that cannot be stored, which the strict JSON parser may refuse before any
        field is read: its message then names the field (or says "field name") in a sentence.
        """
        if self.name == "modelslab":
            shape, text = data["status"] == "error", str(data["message"])
        elif self.name == "synapse":
            shape, text = data["error"] == "Invalid request", data["details"]
        elif self.name == "hyperbolic":
            shape, text = data["object"] == "error" and data["code"] == status, data["message"]
        elif self.name == "dan":
            shape, text = data["code"] == status and data["data"] is None, data["message"]
        elif status == 422:
            shape = all(e["loc"][0] == "body" for e in data["detail"])
            text = " ".join(".".join(map(str, [*e["loc"][1:], e["msg"]])) for e in data["detail"])
        else:
            shape, text = bool(data["error"]), data["detail"]
        return shape and any(name in text for name in names)

    def names(self, status: int, data: Any, name: str) -> bool:
        """Whether `data` is this format's error body and names the field `name`."""
        if self.name == "modelslab":
            message = data["message"]
            return data["status"] == "error" and isinstance(message, dict) and name in message
        if self.name == "synapse":
            return data["error"] == "Invalid request" and data["details"].startswith(f"{name}:")
        if self.name == "hyperbolic":
            return data["object"] == "error" and data["code"] == status and data["param"] == name
        if self.name == "dan":
            return (
                data["code"] == status
                and data["data"] is None
                and data["message"].startswith(f"{name}:")
            )
        if status == 422:  # a1111: FastAPI's validation error, one entry per field
            return any(".".join(map(str, e["loc"][1:])) == name for e in data["detail"])
        return data["error"] and data["detail"].startswith(f"{name}:")


MODELSLAB = Format("modelslab", "/api/v3/text2img", {"prompt": "a cat"}, key_in_body=True)
MODELSLAB_IMG2IMG = Format(
    "modelslab",
    "/api/v3/img2img",
    {"prompt": "a cat", "init_image": "https://example.com/cat.png"},
    key_in_body=True,
)
MODELSLAB_CONTROLNET = Format(
    "modelslab",
    "/api/v5/controlnet",
    {
        "prompt": "a cat",
        "controlnet_model": "demo-controlnet-canny",
        "init_image": "https://example.com/cat.png",
    },
    key_in_body=True,
)
MODELSLAB_SUPER_RESOLUTION = Format(
    "modelslab",
    "/api/v6/image_editing/super_resolution",
    {"init_image": "https://example.com/cat.png"},
    key_in_body=True,
)
SYNAPSE = Format("synapse", "/sd/demo-sd15", {"prompt": "a cat"})
HYPERBOLIC = Format(
    "hyperbolic", "/v1/image/generation", {"model_name": "demo-sd15", "prompt": "a cat"}
)
DAN = Format("dan", "/api/sd/txt2img", {"prompt": "a cat"})
A1111 = Format("a1111", "/sdapi/v1/txt2img", {"prompt": "a cat"})
A1111_OPTIONS = Format("a1111", "/sdapi/v1/options")
A1111_IMG2IMG = Format(
    "a1111", "/sdapi/v1/img2img", {"prompt": "a cat", "init_images": ["https://example.com/x.png"]}
)


@pytest.fixture(autouse=True)
def nothing_runs(settings: Any) -> None:
    """No worker and no wait: an accepted job stays queued, so a wrong 200 leaves a Job row."""
    settings.PICTOR_SYNC_WAIT = 0
    settings.PICTOR_BLOCKING_WAIT = 0


def refused(fmt: Format, api: Any, tenant: Any, name: str, fields: dict[str, Any]) -> None:
    """Post `fields` in `fmt`; assert a 4xx in its shape naming `name`, and nothing queued."""
    status, data = fmt.post(api, tenant, fields)
    assert 400 <= status < 500, (status, data)
    assert fmt.names(status, data, name), data
    nothing_queued()


def nothing_queued() -> None:
    assert not Job.objects.exists()
    assert not CreditEntry.objects.filter(kind=CreditEntry.Kind.DEBIT).exists()


# (format, the field's wire name, the fields to send around the bad value `V`)
FLOAT_FIELDS = [
    (MODELSLAB, "guidance_scale", {"guidance_scale": "V"}),
    (MODELSLAB, "lora_strength", {"lora_model": "demo-lora-a", "lora_strength": "V"}),
    (MODELSLAB_IMG2IMG, "strength", {"strength": "V"}),
    (MODELSLAB_CONTROLNET, "controlnet_conditioning_scale", {"controlnet_conditioning_scale": "V"}),
    (MODELSLAB_CONTROLNET, "control_guidance_start", {"control_guidance_start": "V"}),
    (MODELSLAB_CONTROLNET, "control_guidance_end", {"control_guidance_end": "V"}),
    (SYNAPSE, "cfg_scale", {"cfg_scale": "V"}),
    (HYPERBOLIC, "cfg_scale", {"cfg_scale": "V"}),
    (HYPERBOLIC, "strength", {"image": "aGVsbG8=", "strength": "V"}),
    (HYPERBOLIC, "loras", {"loras": {"demo-lora-a": "V"}}),
    (DAN, "cfg_scale", {"cfg_scale": "V"}),
    (DAN, "loras", {"loras": [["demo-lora-a", "V"]]}),
    (
        DAN,
        "control_net",
        {"control_net": {"model": "demo-controlnet-canny", "image": "x", "weight": "V"}},
    ),
    (A1111, "cfg_scale", {"cfg_scale": "V"}),
    (A1111, "eta", {"eta": "V"}),
    (A1111, "hr_scale", {"enable_hr": True, "hr_scale": "V"}),
    (A1111, "denoising_strength", {"enable_hr": True, "denoising_strength": "V"}),
    (A1111_IMG2IMG, "denoising_strength", {"denoising_strength": "V"}),
]


def put(fields: Any, value: Any) -> Any:
    """`fields` with every "V" replaced by `value`."""
    if fields == "V":
        return value
    if isinstance(fields, dict):
        return {k: put(v, value) for k, v in fields.items()}
    if isinstance(fields, list):
        return [put(v, value) for v in fields]
    return fields


def case_id(fmt: Format, name: str, value: Any) -> str:
    text = str(value)
    return f"{fmt.name}-{name}-{text if len(text) < 12 else f'{len(text)}chars'}"


@pytest.mark.parametrize(
    ("fmt", "name", "fields", "value"),
    [
        pytest.param(fmt, name, fields, value, id=case_id(fmt, name, value))
        for fmt, name, fields in FLOAT_FIELDS
        for value in BAD_FLOATS
    ],
)
def test_it_refuses_a_float_that_is_not_a_bounded_number(
    api, tenant, demo_model, fmt, name, fields, value
):
    refused(fmt, api, tenant, name, put(fields, value))


@pytest.mark.parametrize(
    ("fmt", "weight"),
    [
        pytest.param(fmt, weight, id=case_id(fmt, "tag", weight))
        for fmt in (MODELSLAB, SYNAPSE, DAN, A1111)
        for weight in BAD_TAG_WEIGHTS
    ],
)
def test_it_refuses_a_lora_tag_weight_that_is_not_finite_or_too_large(
    api, tenant, demo_models, fmt, weight
):
    refused(fmt, api, tenant, "prompt", {"prompt": f"a cat <lora:demo-lora-a:{weight}>"})
    # The ends of the range still pass (504: a blocking format gave up, as nothing runs here).
    status, data = fmt.post(api, tenant, {"prompt": "a cat <lora:demo-lora-a:-2>"})
    assert status in (200, 504), data


# (format, the field's wire name, the fields to send around the bad value `V`)
INTEGER_FIELDS = [
    (MODELSLAB, "width", {"width": "V"}),
    (MODELSLAB, "samples", {"samples": "V"}),
    (MODELSLAB, "num_inference_steps", {"num_inference_steps": "V"}),
    (MODELSLAB, "upscale", {"upscale": "V"}),
    (SYNAPSE, "steps", {"steps": "V"}),
    (HYPERBOLIC, "steps", {"steps": "V"}),
    (HYPERBOLIC, "width", {"width": "V"}),
    (DAN, "steps", {"steps": "V"}),
    (DAN, "batch_size", {"batch_size": "V"}),
    (DAN, "width", {"width": "V"}),
    (DAN, "upscale", {"upscale": "V"}),
    (A1111, "steps", {"steps": "V"}),
    (A1111, "batch_size", {"batch_size": "V"}),
    (A1111, "n_iter", {"n_iter": "V"}),
    (A1111, "width", {"width": "V"}),
    (
        A1111,
        "override_settings.CLIP_stop_at_last_layers",
        {"override_settings": {"CLIP_stop_at_last_layers": "V"}},
    ),
]
SEED_FIELDS = [
    (MODELSLAB, "seed", {"seed": "V"}),
    (MODELSLAB_SUPER_RESOLUTION, "seed", {"seed": "V"}),
    (SYNAPSE, "seed", {"seed": "V"}),
    (HYPERBOLIC, "seed", {"seed": "V"}),
    (DAN, "seed", {"seed": "V"}),
    (A1111, "seed", {"seed": "V"}),
    (A1111, "subseed", {"subseed": "V"}),
]
BAD_INTEGERS = [LONG_DIGITS, HUGE_INT, "1e308", "nan", -(2**70)]


@pytest.mark.parametrize(
    ("fmt", "name", "fields", "value"),
    [
        pytest.param(fmt, name, fields, value, id=case_id(fmt, name, value))
        for fmt, name, fields in INTEGER_FIELDS
        for value in BAD_INTEGERS
    ]
    + [
        pytest.param(fmt, name, fields, value, id=case_id(fmt, name, value))
        for fmt, name, fields in SEED_FIELDS
        for value in [*BAD_INTEGERS, 2**32, -2, 2**63]
    ],
)
def test_it_refuses_an_integer_out_of_range_or_with_too_many_digits(
    api, tenant, demo_model, fmt, name, fields, value
):
    refused(fmt, api, tenant, name, put(fields, value))


# (format, what the error mentions, fields with the text `T` in the named field); a name sent
# as an object key may be refused by the parser as a "field name".
TEXT_FIELDS = [
    (MODELSLAB, ("lora_model",), {"lora_model": "T"}),
    (MODELSLAB, ("lora_model",), {"lora_model": ["demo-lora-b", "T"]}),
    (MODELSLAB, ("embeddings_model",), {"embeddings_model": "T"}),
    (MODELSLAB, ("vae",), {"vae": "T"}),
    (MODELSLAB, ("model_id",), {"model_id": "T"}),
    (HYPERBOLIC, ("loras", "field name"), {"loras": {"T": 1}}),
    (HYPERBOLIC, ("model_name",), {"model_name": "T"}),
    (DAN, ("loras",), {"loras": [["T", 1]]}),
    (DAN, ("model",), {"model": "T"}),
    (A1111, ("override_settings.sd_vae",), {"override_settings": {"sd_vae": "T"}}),
    (
        A1111,
        ("override_settings.sd_model_checkpoint",),
        {"override_settings": {"sd_model_checkpoint": "T"}},
    ),
    (A1111, ("override_settings", "field name"), {"override_settings": {"T": "png"}}),
    (A1111, ("sampler_name",), {"sampler_name": "T"}),
    (A1111_OPTIONS, ("sd_model_checkpoint",), {"sd_model_checkpoint": "T"}),
    (A1111_OPTIONS, ("setting name", "field name"), {"T": "png"}),
]


def put_text(fields: Any, text: str) -> Any:
    """`fields` with every "T" (as a value or a key) replaced by `text`."""
    if fields == "T":
        return text
    if isinstance(fields, dict):
        return {put_text(k, text): put_text(v, text) for k, v in fields.items()}
    if isinstance(fields, list):
        return [put_text(v, text) for v in fields]
    return fields


@pytest.mark.parametrize(
    ("fmt", "names", "fields", "text"),
    [
        pytest.param(fmt, names, fields, text, id=f"{fmt.path}-{names[0]}-{label}")
        for fmt, names, fields in TEXT_FIELDS
        for label, text in (("nul", NUL), ("surrogate", SURROGATE))
    ],
)
def test_it_refuses_a_name_with_a_nul_or_a_lone_surrogate(
    api, tenant, demo_model, fmt, names, fields, text
):
    status, data = fmt.post(api, tenant, put_text(fields, text))
    assert status in (400, 422), (status, data)
    assert fmt.mentions(status, data, *names), data
    nothing_queued()
    assert tenant.org.api_keys.get().default_model_id is None


@pytest.mark.parametrize("text", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_the_named_fields_refuse_unstorable_text_without_the_json_parser(tenant, demo_model, text):
    """Each field checks its own text, whatever parsed the body (form or query data too)."""
    plan = tenant.org.plan
    for name, value in (("lora_model", text), ("lora_model", ["demo-lora-b", text])):
        with pytest.raises(ValidationError) as error:
            modelslab.parse(modelslab.Text2ImgSerializer, {"prompt": "a", name: value}, plan)
        assert list(error.value.detail) == [name]
    with pytest.raises(ValidationError) as error:
        modelslab.parse(
            modelslab.Text2ImgSerializer, {"prompt": "a", "embeddings_model": text}, plan
        )
    assert list(error.value.detail) == ["embeddings_model"]

    serializer = dan.DanTxt2ImgSerializer(
        data={"prompt": "a", "loras": [[text, 1]]}, context={"plan": plan}
    )
    assert not serializer.is_valid()
    assert list(serializer.errors) == ["loras"]

    serializer = hyperbolic.HyperbolicSerializer(
        data={"model_name": "demo-sd15", "prompt": "a", "loras": {text: 1}}, context={"plan": plan}
    )
    assert not serializer.is_valid()
    assert list(serializer.errors) == ["loras"]

    for key in ("sd_vae", "sd_model_checkpoint"):
        with pytest.raises(a1111_errors.Unprocessable) as refusal:
            a1111.read_overrides(tenant.org, {key: text})
        assert list(refusal.value.errors) == [f"override_settings.{key}"]
    with pytest.raises(a1111_errors.Unprocessable):
        a1111.read_overrides(tenant.org, {text: "png"})
    # POST /sdapi/v1/options reads its names the same way.
    with pytest.raises(a1111_errors.Unprocessable) as refusal:
        a1111_checkpoints.find_model(tenant.org, text, "sd_model_checkpoint")
    assert list(refusal.value.errors) == ["sd_model_checkpoint"]
    with pytest.raises(a1111_errors.Unprocessable):
        a1111_errors.refuse_unstorable_names({text: "png"}, "body")

    for prompt in (f"a <lora:{text}:1>", f"a <lora:{text}>"):
        with pytest.raises(PromptError):
            extract_lora_tags(prompt)


# --- combinations the engine cannot run ------------------------------------------------------


@pytest.fixture
def one_step_plan(tenant: Any) -> Any:
    """The tenant's plan lets ModelsLab callers ask for a single step."""
    plan = tenant.org.plan
    plan.steps_list = [1, 21, 31, 41]
    plan.save()
    return plan


@pytest.mark.parametrize(
    ("fmt", "name", "fields"),
    [
        (MODELSLAB, "highres_fix", {"highres_fix": "yes", "num_inference_steps": 1}),
        (MODELSLAB, "upscale", {"upscale": 2, "num_inference_steps": 1}),
        (A1111, "denoising_strength", {"enable_hr": True, "steps": 1, "denoising_strength": 0.5}),
    ],
)
def test_it_refuses_a_hires_fix_whose_second_pass_has_no_step(
    api, tenant, demo_model, one_step_plan, fmt, name, fields
):
    refused(fmt, api, tenant, name, {"width": 64, "height": 64, **fields})


@pytest.mark.parametrize(
    "fields", [{"strength": 0.01}, {"strength": 0}, {"strength": 0.5, "steps": 1}]
)
def test_hyperbolic_refuses_an_img2img_with_no_step(api, tenant, demo_model, fields):
    image = png_base64(noise_image(64, 64))
    refused(HYPERBOLIC, api, tenant, "strength", {"image": image, **fields})


@pytest.mark.parametrize(
    ("fmt", "name", "fields", "too_deep"),
    [
        (MODELSLAB, "clip_skip", {"clip_skip": "V"}, 8),
        (
            A1111,
            "override_settings.CLIP_stop_at_last_layers",
            {"override_settings": {"CLIP_stop_at_last_layers": "V"}},
            12,
        ),
    ],
)
def test_it_refuses_a_clip_skip_deeper_than_the_text_encoder(
    api, tenant, demo_model, fmt, name, fields, too_deep
):
    """The demo checkpoint's text encoder has 4 layers: skipping more fails in the worker."""
    refused(fmt, api, tenant, name, put(fields, too_deep))
    status, data = fmt.post(api, tenant, put(fields, 4))
    assert status in (200, 504), data


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"steps": 1, "hires_scale": 2}, "second pass"),
        ({"kind": "img2img", "init_image": "x.png", "strength": 0.01}, "no denoising step"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"loras": (("demo-lora-a", float("inf")),)}, "weight of LoRA demo-lora-a"),
        ({"seed": 2**64}, "seed must be between"),
    ],
)
def test_the_engine_refuses_a_request_it_could_not_run(fields, message):
    """A job queued before these checks (or built by hand) fails with the reason, not mid-run."""
    request = GenerationRequest(prompt="a cat", model_id="demo-sd15", **fields)
    with pytest.raises(ValueError, match=message):
        runner.validate(request)
