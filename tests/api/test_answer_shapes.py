"""Each answer is one serializer: the view renders its body through it and the schema names it.

So a key added to an answer without its serializer fails here (and in every test of that view),
and the OpenAPI schema of each route is the serializer that renders the route's answer.
"""

from __future__ import annotations

import base64
import copy
import io
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from drf_spectacular.drainage import get_override
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from generation import estimates
from generation.answers import ModelsLabJob, UndeclaredAnswerKeys, job_answer, job_body
from generation.api.a1111.answers import EmptyAnswer, ImagesAnswer, OptionsAnswer, ProgressAnswer
from generation.api.a1111.controlnet import ModelListAnswer, ModuleListAnswer, VersionAnswer
from generation.api.a1111.extras import (
    CmdFlagsAnswer,
    ExtraBatchImagesAnswer,
    ExtraSingleImageAnswer,
    MemoryAnswer,
    PngInfoAnswer,
)
from generation.api.a1111.listings import (
    EmbeddingsAnswer,
    FaceRestorerAnswer,
    LatentUpscaleModeAnswer,
    LoraAnswer,
    PromptStyleAnswer,
    SamplerAnswer,
    SchedulerAnswer,
    ScriptInfoAnswer,
    ScriptsAnswer,
    SdModelAnswer,
    SdVaeAnswer,
    UpscalerAnswer,
)
from generation.api.dan.answers import DanTaskAnswer, task_body
from generation.api.hyperbolic.answers import HyperbolicImages, images_body
from generation.api.modelslab.answers import ModelsLabModel, SystemLoad, model_entry
from generation.api.synapse.answers import Names, SynapseImage
from generation.models import AIModel, Job

BASE_URL = "http://testserver"
# Each route's 200 answer and the serializer that renders it.
ROUTES: list[tuple[str, str, type[serializers.BaseSerializer]]] = [
    ("/api/v3/text2img", "post", ModelsLabJob),
    ("/api/v3/img2img", "post", ModelsLabJob),
    ("/api/v6/images/text2img", "post", ModelsLabJob),
    ("/api/v3/fetch/{job_id}", "post", ModelsLabJob),
    ("/api/v6/image_editing/super_resolution", "post", ModelsLabJob),
    ("/api/v3/system_load", "post", SystemLoad),
    ("/sd/{model}", "post", SynapseImage),
    ("/v1/image/generation", "post", HyperbolicImages),
    ("/api/sd/txt2img", "post", DanTaskAnswer),
    ("/api/sd/txt2img/{task_id}", "get", DanTaskAnswer),
    ("/api/sd/task/status", "post", DanTaskAnswer),
    ("/sdapi/v1/txt2img", "post", ImagesAnswer),
    ("/sdapi/v1/img2img", "post", ImagesAnswer),
    ("/sdapi/v1/options", "get", OptionsAnswer),
    ("/sdapi/v1/progress", "get", ProgressAnswer),
    ("/sdapi/v1/embeddings", "get", EmbeddingsAnswer),
    ("/sdapi/v1/scripts", "get", ScriptsAnswer),
    ("/controlnet/model_list", "get", ModelListAnswer),
    ("/controlnet/module_list", "get", ModuleListAnswer),
    ("/controlnet/version", "get", VersionAnswer),
    ("/sdapi/v1/extra-single-image", "post", ExtraSingleImageAnswer),
    ("/sdapi/v1/extra-batch-images", "post", ExtraBatchImagesAnswer),
    ("/sdapi/v1/png-info", "post", PngInfoAnswer),
    ("/sdapi/v1/memory", "get", MemoryAnswer),
    ("/sdapi/v1/cmd-flags", "get", CmdFlagsAnswer),
]
LIST_ROUTES: list[tuple[str, str, type[serializers.BaseSerializer]]] = [
    ("/api/v4/dreambooth/model_list", "post", ModelsLabModel),
    ("/sdapi/v1/sd-models", "get", SdModelAnswer),
    ("/sdapi/v1/samplers", "get", SamplerAnswer),
    ("/sdapi/v1/schedulers", "get", SchedulerAnswer),
    ("/sdapi/v1/loras", "get", LoraAnswer),
    ("/sdapi/v1/upscalers", "get", UpscalerAnswer),
    ("/sdapi/v1/latent-upscale-modes", "get", LatentUpscaleModeAnswer),
    ("/sdapi/v1/sd-vae", "get", SdVaeAnswer),
    ("/sdapi/v1/prompt-styles", "get", PromptStyleAnswer),
    ("/sdapi/v1/face-restorers", "get", FaceRestorerAnswer),
    ("/sdapi/v1/script-info", "get", ScriptInfoAnswer),
]
NAME_ROUTES = ["/sd/list", "/sd/sampler", "/sd/loras", "/sd/embeddings"]


def wire(data: Any) -> bytes:
    return JSONRenderer().render(data)


def component_name(serializer: serializers.Serializer) -> str:
    """The component drf-spectacular names a serializer by (its override, else the class)."""
    return get_override(serializer, "component_name") or type(serializer).__name__.removesuffix(
        "Serializer"
    )


def referenced(schema: dict[str, Any], reference: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = reference["$ref"].removeprefix("#/components/schemas/")
    return name, schema["components"]["schemas"][name]


def assert_component_is(
    schema: dict[str, Any], reference: dict[str, Any], serializer: serializers.Serializer
) -> None:
    """The component is this serializer: its name, its fields in order, nested ones too."""
    name, component = referenced(schema, reference)
    assert name == component_name(serializer)
    properties = component.get("properties", {})
    assert list(properties) == list(serializer.fields), name
    for field_name, field in serializer.fields.items():
        if isinstance(field, serializers.ListSerializer) and isinstance(
            field.child, serializers.Serializer
        ):
            assert_component_is(schema, properties[field_name]["items"], field.child)
        elif isinstance(field, serializers.Serializer):
            assert_component_is(schema, properties[field_name], field)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def answer_schema(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return schema["paths"][path][method]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]


@pytest.mark.parametrize(("path", "method", "answer"), ROUTES)
def test_each_routes_schema_is_the_serializer_its_view_renders_through(
    schema, path, method, answer
):
    assert_component_is(schema, answer_schema(schema, path, method), answer())


@pytest.mark.parametrize(("path", "method", "answer"), LIST_ROUTES)
def test_a_list_answers_schema_is_an_array_of_its_serializer(schema, path, method, answer):
    described = answer_schema(schema, path, method)
    assert described["type"] == "array"
    assert_component_is(schema, described["items"], answer())


@pytest.mark.parametrize("path", NAME_ROUTES)
def test_the_synapse_lists_are_arrays_of_names(schema, path):
    assert answer_schema(schema, path, "get") == {"type": "array", "items": {"type": "string"}}
    assert Names(["b", "a"]).data == ["b", "a"]


@pytest.mark.parametrize(
    "path", ["/sdapi/v1/interrupt", "/sdapi/v1/unload-checkpoint", "/sdapi/v1/reload-checkpoint"]
)
def test_an_empty_answer_is_described_as_one(schema, path):
    response = schema["paths"][path]["post"]["responses"]["200"]
    assert response["description"] == "An empty JSON object."
    assert wire(EmptyAnswer({}).data) == b"{}"


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (SynapseImage, {"data": "iVBOR", "seed": 1}),
        (SystemLoad, {"status": "ok", "queue_num": 0, "queue_time": 0, "eta": 1}),
        # Declared keys, but not in the declared order: the bytes would differ from the body.
        (SystemLoad, {"queue_num": 0, "status": "ok", "queue_time": 0}),
        (DanTaskAnswer, {"code": 200, "data": {"taskId": "1", "extra": True}, "message": ""}),
    ],
)
def test_a_body_with_a_key_its_answer_does_not_declare_is_refused(answer, body):
    with pytest.raises(UndeclaredAnswerKeys):
        answer(body).data  # noqa: B018 (rendering is the act under test)


# The ModelsLab job body, in every state and with every optional parameter ------------------------

in_db = pytest.mark.django_db(transaction=True)

EXTRA_PARAMS: list[dict[str, Any]] = [
    {},
    {"kind": "img2img", "strength": 0.5},
    {"kind": "inpaint", "strength": 1},
    {"loras": [["demo-lora-a", 0.5], ["demo-lora-b", 1]], "embeddings": ["demo-embedding"]},
    {"vae": "demo-vae", "hires_scale": 2, "tomesd": True, "enhance_prompt": True},
    {
        "kind": "controlnet",
        "controlnet_model": "demo-controlnet-canny",
        "controlnet_type": "canny",
        "controlnet_conditioning_scale": 1,
        "control_guidance_start": 0.0,
        "control_guidance_end": 0.75,
    },
    {"kind": "upscale", "scale": 4, "guidance_scale": 1},
]


def job_states(job: Job) -> list[Job]:
    """The job as it would be in each state a body is built for (in memory, not saved)."""
    states = []
    for status, extra in [
        (Job.Status.QUEUED, {}),
        (Job.Status.PROCESSING, {"progress_step": 3, "progress_total": 7}),
        (Job.Status.SUCCESS, {"generation_time": 1.25}),
        (Job.Status.SUCCESS, {"generation_time": 2.0, "expired_at": timezone.now()}),
        (Job.Status.FAILED, {}),
        (Job.Status.CANCELED, {}),
    ]:
        state = copy.copy(job)
        state.status = status
        for name, value in extra.items():
            setattr(state, name, value)
        states.append(state)
    return states


@in_db
@pytest.mark.parametrize("extra", EXTRA_PARAMS)
def test_the_job_answer_is_its_body_byte_for_byte(api, tenant, demo_models, no_wait, extra):
    status, data = api.post(
        "/api/v3/text2img",
        {"key": tenant.key, "prompt": "a fox", "width": 64, "height": 64, "track_id": "t-1"},
    )
    assert status == 200, data
    job = Job.objects.select_related("model").get(pk=data["id"])
    job.params = {**job.params, **extra}
    for state in job_states(job):
        # Built once: its signed links carry an expiry time that a second call could move.
        body = job_body(state, BASE_URL)
        assert wire(ModelsLabJob(body).data) == wire(body)


@in_db
def test_the_other_modelslab_answers_are_their_bodies(tenant, demo_models):
    models = AIModel.objects.visible_to(tenant.org).order_by("model_id")
    entries = [model_entry(m) for m in models]
    assert wire(ModelsLabModel(entries, many=True).data) == wire(entries)
    load = estimates.system_load()
    assert wire(SystemLoad(load).data) == wire(load)


@in_db
def test_every_dan_task_answer_is_its_body(api, tenant, demo_models, no_wait):
    status, data = api.post(
        "/api/sd/txt2img",
        {"prompt": "a harbour", "width": 64, "height": 64},
        Authorization=f"Bearer {tenant.key}",
    )
    assert status == 200, data
    job = Job.objects.get(pk=data["data"]["taskId"])
    for state in job_states(job):
        body = task_body(state)
        assert wire(DanTaskAnswer(body).data) == wire(body)


@in_db
def test_a_finished_jobs_answers_are_their_bodies(api, tenant, demo_models, sync_queue):
    status, data = api.post(
        "/v1/image/generation",
        {"model_name": "demo-sd15", "prompt": "a tower", "width": 64, "height": 64, "steps": 2},
        Authorization=f"Bearer {tenant.key}",
    )
    assert status == 200, data
    job = Job.objects.latest("pk")
    assert job.status == Job.Status.SUCCESS
    body = images_body(job)
    assert wire(HyperbolicImages(body).data) == wire(body)
    assert wire(data) == wire(body)
    # The same job as Dan and ModelsLab answer it, done and after its retention.
    expired = copy.copy(job)
    expired.expired_at = timezone.now() - timedelta(seconds=1)
    for state in (job, expired):
        dan = task_body(state)
        assert wire(DanTaskAnswer(dan).data) == wire(dan)
        modelslab = job_body(state, BASE_URL)
        assert wire(ModelsLabJob(modelslab).data) == wire(modelslab)
    assert task_body(job)["data"]["images"] == [image["image"] for image in data["images"]]
    assert job_answer(expired, BASE_URL)["message"] == "Outputs expired"


# The AUTOMATIC1111 lists, as the views send them ------------------------------------------------

A1111_LISTS = [path for path, _method, _answer in LIST_ROUTES if path.startswith("/sdapi/")] + [
    "/sdapi/v1/embeddings",
    "/sdapi/v1/scripts",
    "/controlnet/model_list",
    "/controlnet/module_list",
    "/controlnet/version",
    "/sdapi/v1/memory",
    "/sdapi/v1/cmd-flags",
]


def basic(key: str) -> dict[str, str]:
    """webui's --api-auth: HTTP Basic with the API key as password."""
    return {"Authorization": "Basic " + base64.b64encode(f"webui:{key}".encode()).decode()}


@in_db
def test_the_a1111_listings_are_their_answers_byte_for_byte(api, tenant, demo_models):
    answers = {path: answer for path, _method, answer in ROUTES + LIST_ROUTES}
    for path in A1111_LISTS:
        status, data = api.get(path, **basic(tenant.key))
        assert status == 200, (path, data)
        many = isinstance(data, list)
        assert wire(answers[path](data, many=many).data) == wire(data), path
    # An integer stays an integer where the schema says number: 4, not 4.0.
    status, data = api.get("/sdapi/v1/upscalers", **basic(tenant.key))
    assert status == 200, data
    assert data[0]["scale"] == 4
    assert b'"scale":4}' in wire(UpscalerAnswer(data, many=True).data)


def png_base64(text: str) -> str:
    """A small PNG carrying webui's `parameters` text chunk, as base64."""
    info = PngInfo()
    info.add_text("parameters", text)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(out, format="PNG", pnginfo=info)
    return base64.b64encode(out.getvalue()).decode()


@in_db
def test_the_a1111_extras_and_png_info_are_their_answers_byte_for_byte(api, tenant, demo_models):
    image = png_base64("a fox\nSteps: 4, Sampler: Euler a, Seed: 7, Size: 8x8")
    for path, body, answer in [
        ("/sdapi/v1/png-info", {"image": image}, PngInfoAnswer),
        (
            "/sdapi/v1/extra-single-image",
            {"image": image, "upscaler_1": "Lanczos", "upscaling_resize": 2},
            ExtraSingleImageAnswer,
        ),
        (
            "/sdapi/v1/extra-batch-images",
            {"imageList": [{"data": image, "name": "a.png"}], "upscaler_1": "Nearest"},
            ExtraBatchImagesAnswer,
        ),
    ]:
        status, data = api.post(path, body, **basic(tenant.key))
        assert status == 200, (path, data)
        assert wire(answer(data).data) == wire(data), path
    assert data["images"] and data["html_info"].startswith("<p>")
