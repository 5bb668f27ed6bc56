"""Every status an API route answers is listed for that route in the OpenAPI schema.

A catalogue of requests (a good one, no key, a bad key, a suspended tenant, over a limit, a bad
body, a bad id, ...) goes to every operation the schema lists. Each answer's status must be
documented for its path and method, and its body must have the documented shape.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.http import HttpResponse
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import Resolver404, resolve
from django.utils import timezone
from django_q.conf import Conf

from accounts.models import Organization
from billing.models import Plan
from generation.models import AIModel, Job
from tests.helpers import Tenant, make_tenant
from tests.images import centre_mask, noise_image, png_base64, shapes_image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # A request that does queue a job runs it inline, so a blocking format never hangs.
    pytest.mark.usefixtures("sync_queue", "demo_models"),
]

FORMATS = ("ModelsLab", "Synapse", "Hyperbolic", "Dan", "AUTOMATIC1111", "Jobs", "OpenAI")
# The error bodies each format answers with (its components in the schema).
ERROR_SHAPES = {
    "ModelsLab": {"ModelsLabError"},
    "Synapse": {"SynapseError"},
    "Hyperbolic": {"HyperbolicError"},
    "Dan": {"DanError"},
    "AUTOMATIC1111": {"A1111Error", "A1111Detail", "A1111ValidationError"},
    "Jobs": {"JobsError"},
    "OpenAI": {"OpenAIError"},
}
METHODS = ("get", "post", "put", "patch", "delete")
BODY_METHODS = ("post", "put", "patch")
BAD_KEY = "pct_" + "x" * 40
MISSING_ID = "999999999"
MAX_BODY = 64 * 1024
SMALL = {"width": 64, "height": 64}
IMAGE = png_base64(noise_image(64, 64))
MASK = png_base64(centre_mask(64, 64))
EDGES = png_base64(shapes_image(64, 64))
TINY = png_base64(noise_image(16, 16))


def prompt() -> str:
    # A new body each time: the spam filter refuses the same body within 30 s.
    return f"a lighthouse at dusk {uuid.uuid4().hex[:8]}"


@dataclass
class Good:
    """A request an operation answers 200: its path parameters and JSON body."""

    body: Callable[[str], dict[str, Any]] | None = None  # of the job id
    params: Callable[[str], dict[str, str]] = lambda job: {}
    # Queues a job, so it is also what a tenant without credits is refused (402).
    submits: bool = False
    # The same request asking for what is not there (404); None: its path parameters do.
    missing: Callable[[], dict[str, Any]] | None = None
    # Sent as multipart/form-data (file values are file objects), not JSON.
    form: bool = False
    # The status the good request gets (an upload is accepted for validation: 202).
    ok: int = 200
    # Queues a task other than a job (an own model's validation): a 503 while Redis is down.
    queues: bool = False


def modelslab_submit(model: bool = True, **fields: Any) -> Good:
    def body(job: str) -> dict[str, Any]:
        chosen = {"model_id": "demo-sd15"} if model else {}
        return {"prompt": prompt(), **SMALL, **chosen, **fields}

    missing = (lambda: {**body(""), "model_id": "no-such-model"}) if model else None
    return Good(body, submits=True, missing=missing)


TEXT2IMG = modelslab_submit()
IMG2IMG = modelslab_submit(init_image=IMAGE, strength=0.5)
INPAINT = modelslab_submit(init_image=IMAGE, mask_image=MASK, strength=0.5)
CONTROLNET = Good(
    lambda job: {
        "prompt": prompt(),
        **SMALL,
        "controlnet_model": "demo-controlnet-canny",
        "controlnet_type": "canny",
        "init_image": EDGES,
    },
    submits=True,
)
FETCH = Good(lambda job: {}, params=lambda job: {"job_id": job})
LISTING = Good()
ANY_BODY = Good(lambda job: {})


def running_copy(job_id: str) -> str:
    """A processing copy of the job, under a lease no reaper ends: one the job API can cancel."""
    job = Job.objects.get(pk=job_id)
    job.pk = None
    job.status = Job.Status.PROCESSING
    job.lease_expires_at = timezone.now() + timedelta(days=1)
    job.save()
    return str(job.pk)


A1111_SMALL = {"steps": 4, **SMALL}


def png_upload() -> io.BytesIO:
    """A 64x64 PNG as a file for a multipart form."""
    upload = io.BytesIO(base64.b64decode(IMAGE))
    upload.name = "image.png"
    return upload


def safetensors_upload() -> io.BytesIO:
    """A one-tensor .safetensors file (not a model that validates) for a multipart form."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    upload = io.BytesIO(len(header).to_bytes(8, "little") + header + bytes(4))
    upload.name = "own.safetensors"
    return upload


def own_model_id() -> str:
    return f"own-{uuid.uuid4().hex[:8]}"


# The URL of a server on 127.0.0.1 that answers any GET with safetensors_upload()'s bytes.
FILE_SERVER: dict[str, str] = {}
# Each test's tenant has one own model (context), which GET and DELETE name.
OWN_MODEL = "own-schema"
OWN = Good(params=lambda job: {"model_id": OWN_MODEL})


# One good request per operation of the schema; a new route needs a line here.
GOOD: dict[tuple[str, str], Good] = {
    **{
        (path, "post"): TEXT2IMG
        for path in (
            "/api/v3/text2img",
            "/api/v3/dreambooth",
            "/api/v4/dreambooth",
            "/api/v6/images/text2img",
            "/api/v7/images/text-to-image",
        )
    },
    **{
        (path, "post"): IMG2IMG
        for path in (
            "/api/v3/img2img",
            "/api/v3/dreambooth/img2img",
            "/api/v4/dreambooth/img2img",
            "/api/v6/images/img2img",
            "/api/v7/images/image-to-image",
        )
    },
    **{
        (path, "post"): INPAINT
        for path in (
            "/api/v3/inpaint",
            "/api/v4/dreambooth/inpaint",
            "/api/v6/images/inpaint",
            "/api/v7/images/inpaint",
        )
    },
    ("/api/v6/realtime/text2img", "post"): modelslab_submit(model=False),
    ("/api/v6/realtime/img2img", "post"): modelslab_submit(False, init_image=IMAGE, strength=0.5),
    ("/api/v6/realtime/inpaint", "post"): modelslab_submit(
        False, init_image=IMAGE, mask_image=MASK, strength=0.5
    ),
    ("/api/v5/controlnet", "post"): CONTROLNET,
    ("/api/v6/images/controlnet", "post"): CONTROLNET,
    ("/api/v6/image_editing/super_resolution", "post"): Good(
        lambda job: {"init_image": TINY, "scale": 2, "track_id": uuid.uuid4().hex},
        submits=True,
        missing=lambda: {"init_image": TINY, "model_id": "no-such-model"},
    ),
    ("/api/v6/image_editing/outpaint", "post"): Good(
        lambda job: {"prompt": prompt(), "image": IMAGE, "left": 16, "model_id": "demo-sd15"},
        submits=True,
        missing=lambda: {"prompt": prompt(), "image": IMAGE, "left": 16, "model_id": "nope"},
    ),
    ("/api/v6/image_editing/object_removal", "post"): Good(
        lambda job: {"init_image": IMAGE, "mask_image": MASK, "track_id": uuid.uuid4().hex},
        submits=True,
        missing=lambda: {"init_image": IMAGE, "mask_image": MASK, "model_id": "no-such-model"},
    ),
    ("/api/v3/super_resolution", "post"): Good(
        lambda job: {"url": TINY, "scale": 2, "track_id": uuid.uuid4().hex},
        submits=True,
        missing=lambda: {"url": TINY, "model_id": "no-such-model"},
    ),
    **{
        (path, "post"): Good(
            lambda job: {"model_id": "demo-sd15"}, missing=lambda: {"model_id": "no-such-model"}
        )
        for path in ("/api/v4/dreambooth/model_reload", "/api/v6/images/model_reload")
    },
    **{
        (f"/api/{family}/fetch/{{job_id}}", method): FETCH
        for family in (
            "v3",
            "v3/dreambooth",
            "v4/dreambooth",
            "v6/images",
            "v6/image_editing",
            "v6/realtime",
            "v7/images",
        )
        for method in ("get", "post")
    },
    **{
        (path, "post"): Good(
            lambda job: {"request_id": job}, missing=lambda: {"request_id": MISSING_ID}
        )
        for path in ("/api/v4/dreambooth/fetch", "/api/v6/images/fetch")
    },
    ("/api/v3/system_load", "get"): LISTING,
    ("/api/v3/system_load", "post"): ANY_BODY,
    ("/api/v3/dreambooth/model_list", "get"): LISTING,
    ("/api/v3/dreambooth/model_list", "post"): ANY_BODY,
    ("/api/v4/dreambooth/model_list", "get"): LISTING,
    ("/api/v4/dreambooth/model_list", "post"): ANY_BODY,
    # Synapse.
    ("/sd/{model}", "post"): Good(
        lambda job: {"prompt": prompt(), "steps": 4, **SMALL},
        params=lambda job: {"model": "demo-sd15"},
        submits=True,
    ),
    **{(f"/sd/{name}", "get"): LISTING for name in ("list", "sampler", "loras", "embeddings")},
    # Hyperbolic.
    ("/v1/image/generation", "post"): Good(
        lambda job: {"model_name": "demo-sd15", "prompt": prompt(), "steps": 4, **SMALL},
        submits=True,
        missing=lambda: {"model_name": "no-such-model", "prompt": prompt()},
    ),
    # Dan.
    ("/api/sd/txt2img", "post"): Good(
        lambda job: {"prompt": prompt(), **SMALL},
        submits=True,
        missing=lambda: {"prompt": prompt(), "model": "no-such-model"},
    ),
    ("/api/sd/txt2img/{task_id}", "get"): Good(params=lambda job: {"task_id": job}),
    ("/api/sd/task/status", "post"): Good(
        lambda job: {"taskId": job}, missing=lambda: {"taskId": MISSING_ID}
    ),
    # AUTOMATIC1111.
    ("/sdapi/v1/txt2img", "post"): Good(
        lambda job: {"prompt": prompt(), **A1111_SMALL},
        submits=True,
        missing=lambda: {
            "prompt": prompt(),
            "override_settings": {"sd_model_checkpoint": "no-such-model"},
        },
    ),
    ("/sdapi/v1/img2img", "post"): Good(
        lambda job: {"prompt": prompt(), "init_images": [IMAGE], **A1111_SMALL}, submits=True
    ),
    ("/sdapi/v1/options", "post"): Good(
        lambda job: {"sd_model_checkpoint": "demo-sd15"},
        missing=lambda: {"sd_model_checkpoint": "no-such-model"},
    ),
    ("/sdapi/v1/interrupt", "post"): Good(),
    ("/sdapi/v1/skip", "post"): Good(),
    **{
        (f"/sdapi/v1/{name}", "get"): LISTING
        for name in (
            "sd-models",
            "samplers",
            "schedulers",
            "loras",
            "embeddings",
            "options",
            "progress",
            "upscalers",
            "latent-upscale-modes",
            "sd-vae",
            "prompt-styles",
            "face-restorers",
            "scripts",
            "script-info",
            "cmd-flags",
            "memory",
        )
    },
    **{
        (f"/sdapi/v1/{name}", "post"): Good()
        for name in (
            "refresh-checkpoints",
            "refresh-vae",
            "refresh-loras",
            "unload-checkpoint",
            "reload-checkpoint",
        )
    },
    # The ControlNet extension's lists.
    **{
        (f"/controlnet/{name}", "get"): LISTING for name in ("model_list", "module_list", "version")
    },
    ("/sdapi/v1/png-info", "post"): Good(lambda job: {"image": IMAGE}),
    # PIL's upscalers: no job (a charged upscaler model's answers are in test_routes.py).
    ("/sdapi/v1/extra-single-image", "post"): Good(
        lambda job: {"image": TINY, "upscaler_1": "Lanczos"}
    ),
    ("/sdapi/v1/extra-batch-images", "post"): Good(
        lambda job: {"imageList": [{"data": TINY, "name": "a.png"}], "upscaler_1": "Lanczos"}
    ),
    # Pictor's job API, and the ModelsLab general routes it answers.
    ("/api/v1/jobs", "get"): LISTING,
    ("/api/v1/jobs/{job_id}", "get"): FETCH,
    ("/api/v1/jobs/{job_id}/cancel", "post"): Good(
        lambda job: {}, params=lambda job: {"job_id": running_copy(job)}
    ),
    ("/api/v1/jobs/{job_id}/outputs", "delete"): FETCH,
    ("/api/v1/account", "get"): LISTING,
    # Tenants' own models: an upload is queued for validation; load_model downloads from the
    # test's file server (context allows 127.0.0.1 for it).
    ("/api/v1/models", "get"): LISTING,
    ("/api/v1/models", "post"): Good(
        lambda job: {
            "model_id": own_model_id(),
            "category": "lora",
            "base": "sd15",
            "file": safetensors_upload(),
        },
        form=True,
        ok=202,
        queues=True,
    ),
    ("/api/v1/models/{model_id}", "get"): OWN,
    ("/api/v1/models/{model_id}", "delete"): Good(OWN.body, OWN.params, ok=204),
    ("/api/v3/load_model", "post"): Good(
        lambda job: {
            "url": f"{FILE_SERVER['url']}/own.safetensors",
            "model_id": own_model_id(),
            "model_category": "lora",
        },
        queues=True,
    ),
    ("/api/wallet_balance", "post"): ANY_BODY,
    ("/api/subscribed_plan", "post"): ANY_BODY,
    # OpenAI.
    ("/v1/images/generations", "post"): Good(
        lambda job: {"prompt": prompt(), "size": "64x64", "quality": "low"},
        submits=True,
        missing=lambda: {"prompt": prompt(), "model": "no-such-model"},
    ),
    ("/v1/images/edits", "post"): Good(
        lambda job: {"prompt": prompt(), "image": png_upload(), "quality": "low"},
        submits=True,
        form=True,
    ),
    ("/v1/images/variations", "post"): Good(
        lambda job: {"image": png_upload(), "user": uuid.uuid4().hex}, submits=True, form=True
    ),
    ("/v1/models", "get"): LISTING,
    ("/v1/models/{model_id}", "get"): Good(params=lambda job: {"model_id": "demo-sd15"}),
}


@dataclass
class Operation:
    """One path and method of the schema, with what the test needs to call it."""

    template: str
    method: str
    spec: dict[str, Any]

    @property
    def tag(self) -> str:
        return next(tag for tag in self.spec.get("tags", []) if tag in FORMATS)

    @property
    def needs_key(self) -> bool:
        # An empty requirement ({}) in the list means the key is optional.
        security = self.spec.get("security", [])
        return bool(security) and all(security)

    @property
    def takes_body(self) -> bool:
        return self.method in BODY_METHODS

    def path(self, params: dict[str, str]) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(params[m.group(1)]), self.template)


@dataclass
class Call:
    """One request of the catalogue, and the statuses it must get (None: any documented)."""

    op: Operation
    path: str
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)
    expect: set[int] | None = None
    content_type: str = "application/json"


@dataclass
class Context:
    schema: dict[str, Any]
    tenant: Tenant
    job: str
    client: Any = None


def operations(schema: dict[str, Any]) -> list[Operation]:
    return [
        Operation(template, method, spec)
        for template, specs in schema["paths"].items()
        for method, spec in specs.items()
        if method in METHODS
    ]


def credentials(op: Operation, key: str, body: dict[str, Any] | None) -> dict[str, str]:
    """Send `key` the way the format's clients do; returns the headers (the body may take it)."""
    if op.tag == "ModelsLab" and body is not None:
        body["key"] = key
        return {}
    if op.tag == "AUTOMATIC1111":
        return {"Authorization": "Basic " + base64.b64encode(f"webui:{key}".encode()).decode()}
    return {"Authorization": f"Bearer {key}"}


def good_call(
    op: Operation, ctx: Context, key: str | None, fields: dict | None = None, **overrides: Any
) -> Call:
    """The operation's good request, sent with `key` (None: no key at all), `fields` changed."""
    good = GOOD[(op.template, op.method)]
    body = (good.body(ctx.job) if good.body else {}) if op.takes_body else None
    if body is not None and fields:
        body.update(fields)
    headers = credentials(op, key, body) if key is not None else {}
    data = json.dumps(body).encode() if body is not None and not good.form else b""
    call = Call(op, op.path(good.params(ctx.job)), data, headers)
    if body is not None and good.form:
        call.data, call.content_type = encode_multipart(BOUNDARY, body), MULTIPART_CONTENT
    for name, value in overrides.items():
        setattr(call, name, value)
    return call


def other_tenant(slug: str, plan: str = "premium", **changes: Any) -> str:
    """A new tenant's key, its organization changed by `changes`."""
    tenant = make_tenant(slug, plan)
    Organization.objects.filter(pk=tenant.org.pk).update(**changes)
    return tenant.key


# --- the catalogue: each case gives the call for an operation, or None where it does not apply.


def good(op: Operation, ctx: Context) -> Call:
    return good_call(op, ctx, ctx.tenant.key, expect={GOOD[(op.template, op.method)].ok})


def no_key(op: Operation, ctx: Context) -> Call:
    ok = GOOD[(op.template, op.method)].ok
    return good_call(op, ctx, None, expect={401} if op.needs_key else {ok})


def bad_key(op: Operation, ctx: Context) -> Call:
    return good_call(op, ctx, BAD_KEY, expect={401})


def bad_header_key(op: Operation, ctx: Context) -> Call:
    call = good_call(op, ctx, None, expect={401})
    call.headers = {"Authorization": f"Bearer {BAD_KEY}"}
    return call


def suspended(op: Operation, ctx: Context) -> Call:
    key = other_tenant("suspended-org", suspended_at=timezone.now())
    return good_call(op, ctx, key, expect={403})


def rate_limited(op: Operation, ctx: Context) -> Call:
    key = other_tenant("limited-org", "basic")
    Plan.objects.filter(slug="basic").update(requests_per_minute=0)
    return good_call(op, ctx, key, expect={429})


def no_credits(op: Operation, ctx: Context) -> Call | None:
    if not GOOD[(op.template, op.method)].submits:
        return None
    # OpenAI answers a spent balance with its 429 insufficient_quota.
    expect = {429} if op.tag == "OpenAI" else {402}
    return good_call(op, ctx, other_tenant("broke-org", credit_balance=0), expect=expect)


def missing(op: Operation, ctx: Context) -> Call | None:
    good = GOOD[(op.template, op.method)]
    if good.missing is not None:
        body = good.missing()
        headers = credentials(op, ctx.tenant.key, body)
        return good_call(
            op, ctx, ctx.tenant.key, data=json.dumps(body).encode(), headers=headers, expect={404}
        )
    params = good.params(ctx.job)
    if not params:
        return None
    return good_call(
        op, ctx, ctx.tenant.key, path=op.path(dict.fromkeys(params, MISSING_ID)), expect={404}
    )


def malformed_id(op: Operation, ctx: Context) -> Call | None:
    params = GOOD[(op.template, op.method)].params(ctx.job)
    if not params or op.template == "/sd/{model}":
        return None  # no path id, or a name rather than an id (missing covers it)
    return good_call(
        op, ctx, ctx.tenant.key, path=op.path(dict.fromkeys(params, "abc")), expect={404}
    )


def refused(op: Operation) -> set[int]:
    """The statuses of a body the format cannot read: webui answers FastAPI's 422."""
    return {400, 422} if op.tag == "AUTOMATIC1111" else {400}


def unreadable_body(op: Operation, ctx: Context, data: bytes) -> Call | None:
    if not op.takes_body:
        return None
    return good_call(op, ctx, ctx.tenant.key, data=data, expect=refused(op))


def not_json(op: Operation, ctx: Context) -> Call | None:
    return unreadable_body(op, ctx, b'{"prompt": "a lighthouse", ')


def too_deep(op: Operation, ctx: Context) -> Call | None:
    return unreadable_body(op, ctx, b"[" * 5000 + b"]" * 5000)


def nul_in_key(op: Operation, ctx: Context) -> Call:
    return good_call(op, ctx, "pct_\x00" + "x" * 40, expect={400, 401})


def lone_surrogate_in_key(op: Operation, ctx: Context) -> Call | None:
    if not op.takes_body:
        return None
    data = b'{"prompt": "a lighthouse", "key": "pct_\\ud800xxxxxxxx"}'
    return good_call(op, ctx, None, data=data, expect=refused(op) | {401})


def nul_in_a_field(op: Operation, ctx: Context) -> Call | None:
    if not GOOD[(op.template, op.method)].submits:
        return None
    return good_call(op, ctx, ctx.tenant.key, {"prompt": "a light\x00house"}, expect=refused(op))


def invalid_field(op: Operation, ctx: Context) -> Call | None:
    if not GOOD[(op.template, op.method)].submits:
        return None
    return good_call(op, ctx, ctx.tenant.key, {"seed": "not a number"}, expect=refused(op))


def nul_in_the_url(op: Operation, ctx: Context) -> Call:
    call = good_call(op, ctx, ctx.tenant.key, expect={400})
    call.path += "?name=%00"
    return call


def too_large(op: Operation, ctx: Context) -> Call | None:
    if not op.takes_body:
        return None
    if GOOD[(op.template, op.method)].form:
        # A form's file may be as large as the plan allows; its other fields are bounded.
        call = good_call(op, ctx, ctx.tenant.key, {"name": "a" * (2 * MAX_BODY)}, expect={413})
        return call
    data = json.dumps({"prompt": "a" * (2 * MAX_BODY)}).encode()
    return good_call(op, ctx, ctx.tenant.key, data=data, expect={413})


def chunked_without_length(op: Operation, ctx: Context) -> Call:
    # Whatever the method: the server cannot tell where such a body ends.
    call = good_call(op, ctx, ctx.tenant.key, expect={411})
    call.environ = {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"}
    return call


def with_idempotency_key(call: Call, key: str) -> Call:
    call.headers = {**call.headers, "Idempotency-Key": key}
    return call


def reused_idempotency_key(op: Operation, ctx: Context) -> Call | None:
    if not GOOD[(op.template, op.method)].submits:
        return None
    key = uuid.uuid4().hex
    first = with_idempotency_key(good_call(op, ctx, ctx.tenant.key), key)
    assert send(ctx.client, first).status_code == 200
    # The good request again is another body (a new prompt, track or user): the key is taken.
    return with_idempotency_key(good_call(op, ctx, ctx.tenant.key, expect={422}), key)


def bad_idempotency_key(op: Operation, ctx: Context) -> Call | None:
    if not GOOD[(op.template, op.method)].submits:
        return None
    call = good_call(op, ctx, ctx.tenant.key, expect=refused(op))
    return with_idempotency_key(call, "x" * 256)


CASES: dict[str, Callable[[Operation, Context], Call | None]] = {
    "good": good,
    "no key": no_key,
    "bad key": bad_key,
    "bad key in a header": bad_header_key,
    "suspended organization": suspended,
    "over the rate limit": rate_limited,
    "no credits": no_credits,
    "missing id": missing,
    "malformed id": malformed_id,
    "body not JSON": not_json,
    "body nested too deep": too_deep,
    "NUL in the key": nul_in_key,
    "lone surrogate in the key": lone_surrogate_in_key,
    "NUL in the URL": nul_in_the_url,
    "NUL in a field": nul_in_a_field,
    "invalid field": invalid_field,
    "body too large": too_large,
    "chunked body without length": chunked_without_length,
    "reused Idempotency-Key": reused_idempotency_key,
    "bad Idempotency-Key": bad_idempotency_key,
}


# --- checking answers against the schema


def template_of(path: str, schema: dict[str, Any]) -> str | None:
    """The schema path documenting `path`: Django's route for it, else a template it fits."""
    path = urlsplit(path).path
    try:
        route = resolve(path).route
    except Resolver404:
        route = ""
    templated = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    if templated in schema["paths"]:
        return templated
    fitting = [
        template
        for template in schema["paths"]
        if re.fullmatch(
            "".join(
                "[^/]+" if re.fullmatch(r"\{\w+\}", part) else re.escape(part)
                for part in re.split(r"(\{\w+\})", template)
            ),
            path,
        )
    ]
    # A literal path wins over a template it also fits (/sd/list over /sd/{model}).
    return min(fitting, key=lambda template: template.count("{"), default=None)


def component(ref: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = ref.get("$ref", "").rpartition("/")[2]
    return schema["components"]["schemas"][name] if name else ref


def shape_problem(
    response: HttpResponse, documented: dict[str, Any], schema: dict[str, Any]
) -> str:
    """Why the answer does not match its documented response ('' when it does)."""
    # A header the schema marks optional (Preference-Applied) need not be in every answer.
    for header, spec in documented.get("headers", {}).items():
        if spec.get("required") and not response.has_header(header):
            return f"no {header} header"
    content = documented.get("content", {})
    if not content:
        return ""
    if "application/json" not in response.get("Content-Type", ""):
        return f"{response.get('Content-Type')} body: {response.content[:80]!r}"
    body = response.json()
    expected = component(content["application/json"]["schema"], schema)
    if expected.get("type") == "array":
        return "" if isinstance(body, list) else f"not a list: {body!r:.200}"
    if not isinstance(body, dict):
        return f"not an object: {body!r:.200}"
    absent = [name for name in expected.get("required", []) if name not in body]
    return f"without {absent}: {body!r:.200}" if absent else ""


def send(client: Any, call: Call) -> HttpResponse:
    return client.generic(
        call.op.method.upper(),
        call.path,
        data=call.data,
        content_type=call.content_type,
        headers=call.headers,
        **call.environ,
    )


def check(client: Any, call: Call, schema: dict[str, Any]) -> str:
    """What is wrong with the answer to `call` ('' when it is documented and as expected)."""
    response = send(client, call)
    status = response.status_code
    where = f"{call.op.method.upper()} {call.path} -> {status}"
    template = template_of(call.path, schema)
    if template != call.op.template:
        return f"{where}: {call.path} is documented under {template}, not {call.op.template}"
    documented = schema["paths"][template][call.op.method]["responses"]
    if str(status) not in documented:
        return f"{where}: undocumented (documented: {', '.join(documented)})"
    problem = shape_problem(response, documented[str(status)], schema)
    if problem:
        return f"{where}: {problem}"
    if call.expect is not None and status not in call.expect:
        return f"{where}: expected {sorted(call.expect)}: {response.content[:200]!r}"
    return ""


@pytest.fixture
def schema(client: Any) -> dict[str, Any]:
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = safetensors_upload().getvalue()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FILE_SERVER["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield FILE_SERVER["url"]
    server.shutdown()


@pytest.fixture
def context(
    schema: dict[str, Any],
    tenant: Tenant,
    api: Any,
    settings: Any,
    client: Any,
    file_server: str,
    tmp_path: Any,
) -> Context:
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.PICTOR_FETCH_ALLOWED_PORTS = [int(file_server.rsplit(":", 1)[1])]
    settings.PICTOR_MODEL_CACHE_DIR = str(tmp_path / "model-cache")
    AIModel.objects.create(
        model_id=OWN_MODEL,
        name=OWN_MODEL,
        family=AIModel.Family.LORA,
        base=AIModel.Base.SD15,
        organization=tenant.org,
        status=AIModel.Status.READY,
    )
    settings.PICTOR_MAX_BODY_BYTES = MAX_BODY
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY
    # Should a request queue a job that nothing runs, a blocking format gives up soon.
    settings.PICTOR_BLOCKING_WAIT = 2
    settings.PICTOR_SYNC_WAIT = 1
    status, data = api.post("/api/v3/text2img", {"key": tenant.key, "prompt": prompt(), **SMALL})
    assert status == 200, data
    return Context(schema, tenant, str(data["id"]), client)


def run_case(client: Any, ctx: Context, case: Callable[[Operation, Context], Call | None]) -> None:
    """Send `case` to every operation it applies to; fail listing every wrong answer."""
    # Bad input must show as the status the client gets, not as an exception in the test.
    client.raise_request_exception = False
    problems, sent = [], 0
    for op in operations(ctx.schema):
        call = case(op, ctx)
        if call is None:
            continue
        sent += 1
        problems.append(check(client, call, ctx.schema))
    assert sent > 0
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


def test_the_catalogue_has_a_good_request_for_every_operation(schema):
    ops = {(op.template, op.method) for op in operations(schema)}
    assert len(ops) > 50
    assert ops - set(GOOD) == set(), "add a good request for each new operation"
    assert set(GOOD) - ops == set(), "these catalogue entries are not in the schema"


@pytest.mark.parametrize("case", CASES)
def test_every_answer_of_every_operation_is_documented(client, context, case, settings):
    if case == "over the rate limit":
        # Polls (fetch, status, progress) count against a limit of their own.
        settings.PICTOR_POLL_RATE_PER_MINUTE = 0
    run_case(client, context, CASES[case])


def test_an_outage_of_redis_is_documented(client, context, dead_redis, monkeypatch):
    # Jobs go through the (dead) broker again instead of running inline.
    monkeypatch.setattr(Conf, "SYNC", False)

    def during_outage(op: Operation, ctx: Context) -> Call:
        # Limits count in the database meanwhile; a submit cannot queue its job (503), nor an
        # own model its validation.
        good = GOOD[(op.template, op.method)]
        queues = good.submits or good.queues
        return good_call(op, ctx, ctx.tenant.key, expect={503} if queues else {good.ok})

    run_case(client, context, during_outage)


def test_a_blocking_format_that_gives_up_waiting_is_documented(
    client, context, monkeypatch, settings
):
    # No worker runs the job and nobody waits for it: the blocking formats give up (504).
    monkeypatch.setattr(Conf, "SYNC", False)
    settings.PICTOR_BLOCKING_WAIT = 0
    settings.PICTOR_SYNC_WAIT = 0

    def nobody_waits(op: Operation, ctx: Context) -> Call | None:
        if not GOOD[(op.template, op.method)].submits:
            return None
        blocking = op.tag in ("Synapse", "Hyperbolic", "AUTOMATIC1111", "OpenAI")
        return good_call(op, ctx, ctx.tenant.key, expect={504} if blocking else {200})

    run_case(client, context, nobody_waits)


def test_every_operation_documents_what_any_route_can_answer(schema):
    problems = []
    for op in operations(schema):
        where = f"{op.method.upper()} {op.template}"
        tags = [tag for tag in op.spec.get("tags", []) if tag in FORMATS]
        if len(tags) != 1:
            problems.append(f"{where}: tags {op.spec.get('tags')}, not one wire format")
            continue
        responses = op.spec["responses"]
        required = {"400", "411", "429"}
        if op.needs_key:
            required |= {"401", "403"}
        if op.takes_body:
            required |= {"413"}
        if "402" in responses:
            # It charges, so it queues a job: the queue may be down.
            required |= {"503"}
        if required - set(responses):
            problems.append(f"{where}: does not document {sorted(required - set(responses))}")
        for status, response in responses.items():
            if status in ("429", "503") and "Retry-After" not in response.get("headers", {}):
                problems.append(f"{where}: {status} does not document Retry-After")
            if not status.startswith(("4", "5")):
                continue
            if not response.get("description"):
                problems.append(f"{where}: {status} has no description")
            ref = response.get("content", {}).get("application/json", {}).get("schema", {})
            name = ref.get("$ref", "").rpartition("/")[2]
            if name not in ERROR_SHAPES[tags[0]]:
                problems.append(f"{where}: {status} answers {name or ref}, not a {tags[0]} error")
    assert not problems, "\n".join(problems)
