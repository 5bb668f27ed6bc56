"""OpenAPI descriptions drf-spectacular cannot read off the code: how keys travel, answers."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """accounts.auth.ApiKeyAuthentication: a key in a header, a Bearer token or HTTP Basic."""

    target_class = "accounts.auth.ApiKeyAuthentication"
    name = ["bearerKey", "headerKey", "basicKey"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        # Alternatives (any one of them), not a requirement to send all three at once.
        return [{name: []} for name in self.name]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
            {
                "type": "apiKey",
                "in": "header",
                "name": "key",
                "description": "ModelsLab formats also read `key` from the JSON body.",
            },
            {
                "type": "http",
                "scheme": "basic",
                "description": "AUTOMATIC1111 clients: any user name, the key as password.",
            },
        ]


class AnonymousKeyScheme(OpenApiAuthenticationExtension):
    """accounts.auth.AnonymousKeyAuthentication: a Bearer key, or the public anonymous key."""

    target_class = "accounts.auth.AnonymousKeyAuthentication"
    name = "danBearerKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "Authorization: Bearer <key>. Where the server enables it, the public key "
                "sk-000000000000000000000000000000000000000000000000 acts for a shared, "
                "rate-limited anonymous account."
            ),
        }


# Error bodies and request shapes the schema names. A success answer's serializer lives next to
# the view that renders its answer through it (generation/answers.py: ModelsLabJob for a job;
# generation/api/<format>/answers.py), so the schema and the bytes sent cannot drift apart.
class ModelsLabError(serializers.Serializer):
    status = serializers.CharField(default="error")
    message = serializers.JSONField(help_text="A sentence, or {field: [messages]} for a 400")
    tip = serializers.CharField(required=False)
    tips = serializers.CharField(required=False)


class ModelsLabFetch(serializers.Serializer):
    request_id = serializers.IntegerField(help_text="The job id")


def modelslab_errors(*statuses: int) -> dict[int, Any]:
    """A ModelsLab endpoint's own error answers (document_common_statuses adds the rest)."""
    return {code: ModelsLabError for code in statuses}


# What each status means, for every operation that answers it (OpenAPI wants a description).
STATUS_MEANINGS = {
    400: "The body is not JSON or is nested too deeply, the body or URL holds a NUL character, "
    "or a field is invalid (the message names it).",
    401: "No API key, or an invalid or revoked one.",
    402: "Not enough credits for this request.",
    403: "The organization is suspended.",
    404: "No such job, task or model for this organization.",
    411: "A chunked body without Content-Length that the server in front did not de-chunk.",
    413: "The body is larger than this server accepts.",
    422: "A field is not valid input for this format (one entry per field).",
    429: "A plan limit or the duplicate-request filter: retry after Retry-After seconds.",
    500: "The generation itself failed; the credits were refunded.",
    503: "The job queue is down; nothing was queued or charged: retry after Retry-After seconds.",
    504: "The image was not ready in time; the job was canceled and not charged.",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer"},
    }
}
# Statuses any operation can answer before its view runs: an unreadable body or URL (400), a
# chunked body without a length (411, checked for every method) and the plan's rate limit (429).
# A submit's own ones (402, 404, 503 when the job queue is down) are in its decorator.
EVERY_OPERATION = (400, 411, 429)
# Where the operation needs a key: a missing or bad one, a suspended organization.
AUTHENTICATED = (401, 403)
# Where the body is read: too long.
WITH_BODY = (413,)
BODY_METHODS = ("post", "put", "patch")
# Each wire format's error body, by the tag its operations carry; `None` is the usual shape.
ERROR_COMPONENTS: dict[str, dict[int | None, str]] = {
    "ModelsLab": {None: "ModelsLabError"},
    "Synapse": {None: "SynapseError"},
    "Hyperbolic": {None: "HyperbolicError"},
    "Dan": {None: "DanError"},
    "Jobs": {None: "JobsError"},
    "OpenAI": {None: "OpenAIError"},
    "AUTOMATIC1111": {
        None: "A1111Error",
        401: "A1111Detail",
        404: "A1111Detail",
        422: "A1111ValidationError",
    },
}
# webui answers a body it cannot read with FastAPI's 422, not a 400.
BODY_STATUSES_BY_FORMAT = {"AUTOMATIC1111": (422,)}


def common_statuses(method: str, operation: dict[str, Any], tag: str) -> tuple[int, ...]:
    """The statuses `operation` can answer whatever its view does."""
    statuses = list(EVERY_OPERATION)
    if any(requirement for requirement in operation.get("security", [])):
        statuses += AUTHENTICATED
    if method in BODY_METHODS:
        statuses += [*WITH_BODY, *BODY_STATUSES_BY_FORMAT.get(tag, ())]
    return tuple(statuses)


def document_common_statuses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: add the statuses every operation can answer, in its format's shape."""
    components = result.get("components", {}).get("schemas", {})
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            tags = [tag for tag in operation.get("tags", []) if tag in ERROR_COMPONENTS]
            responses = operation.setdefault("responses", {})
            # Without one wire format's tag the error shape is unknown: left as the view says
            # (tests/api/test_schema_statuses.py fails on it rather than the schema on a client).
            shapes = ERROR_COMPONENTS[tags[0]] if len(tags) == 1 else {}
            for status in common_statuses(method, operation, tags[0]) if shapes else ():
                name = shapes.get(status, shapes[None])
                if str(status) in responses or name not in components:
                    continue
                responses[str(status)] = {
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    },
                    "description": "",
                }
            for code, response in responses.items():
                meaning = STATUS_MEANINGS.get(int(code)) if code.isdigit() else None
                if meaning and not response.get("description"):
                    response["description"] = meaning
                if code in ("429", "503"):
                    response.setdefault("headers", {}).update(RETRY_AFTER)
            operation["responses"] = dict(sorted(responses.items()))
    return result


# The operations that create jobs (generation/submission.py): they take the submit headers.
# Listed by operation id so a new route is a deliberate choice; tests/api/test_schema_headers.py
# fails when a charged operation is missing here or an id here names no operation.
SUBMIT_OPERATIONS = frozenset(
    {
        *(
            f"api_{family}_{kind}_create"
            for family, kinds in (
                ("v3", ("text2img", "img2img", "inpaint", "super_resolution")),
                ("v3", ("dreambooth", "dreambooth_img2img")),
                ("v4", ("dreambooth", "dreambooth_img2img", "dreambooth_inpaint")),
                ("v5", ("controlnet",)),
                ("v6", ("images_text2img", "images_img2img", "images_inpaint")),
                ("v6", ("images_controlnet", "image_editing_super_resolution")),
                ("v6", ("image_editing_outpaint", "image_editing_object_removal")),
                ("v6", ("realtime_text2img", "realtime_img2img", "realtime_inpaint")),
                ("v7", ("images_text_to_image", "images_image_to_image", "images_inpaint")),
            )
            for kind in kinds
        ),
        "sd_create",
        "v1_image_generation_create",
        "api_sd_txt2img_create",
        "sdapi_v1_txt2img_create",
        "sdapi_v1_img2img_create",
        "sdapi_v1_extra_single_image_create",
        "sdapi_v1_extra_batch_images_create",
        "v1_images_generations_create",
        "v1_images_edits_create",
        "v1_images_variations_create",
    }
)
SUBMIT_PARAMETERS = [
    {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "1 to 255 printable ASCII characters (a UUID, say). A retry with the same "
        "key and body answers the job the first request made, charged once; the same key with "
        "another body or endpoint is a 422, a key out of bounds a 400. Needs your own API key.",
    },
    {
        "in": "header",
        "name": "Prefer",
        "required": False,
        "schema": {"type": "string", "example": "wait=10"},
        "description": "`wait=N` (RFC 7240): how many seconds, 0 up to the server's blocking "
        "wait, the request may hold for the image. ModelsLab and Dan then answer `processing`; "
        "the formats that need the image (at least 1 s) cancel the job uncharged and answer "
        "their 504. The value applied is answered in Preference-Applied; one that is not whole "
        "seconds is ignored and the default applies.",
    },
]
PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "The `wait=N` applied, when the request sent `Prefer: wait=N`",
        "required": False,
        "schema": {"type": "string"},
    }
}
IDEMPOTENCY_REUSED = (
    "This Idempotency-Key was used for a different request (another body or endpoint)."
)


def document_submit_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: add Idempotency-Key and Prefer (and their answers) to each submit."""
    components = result.get("components", {}).get("schemas", {})
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if operation.get("operationId") not in SUBMIT_OPERATIONS:
                continue
            parameters = operation.setdefault("parameters", [])
            named = {(p.get("in"), p.get("name")) for p in parameters}
            parameters += [p for p in SUBMIT_PARAMETERS if ("header", p["name"]) not in named]
            responses = operation.setdefault("responses", {})
            if "200" in responses:
                responses["200"].setdefault("headers", {}).update(PREFERENCE_APPLIED)
            tags = [tag for tag in operation.get("tags", []) if tag in ERROR_COMPONENTS]
            if len(tags) != 1:
                continue
            shapes = ERROR_COMPONENTS[tags[0]]
            name = shapes.get(422, shapes[None])
            if "422" in responses or name not in components:
                # A1111's 422 (its validation shape) is there already; its meaning gains the key.
                if "422" in responses:
                    meaning = responses["422"].get("description") or STATUS_MEANINGS[422]
                    if IDEMPOTENCY_REUSED not in meaning:
                        responses["422"]["description"] = f"{meaning} {IDEMPOTENCY_REUSED}"
                continue
            responses["422"] = {
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                },
                "description": IDEMPOTENCY_REUSED,
            }
            operation["responses"] = dict(sorted(responses.items()))
    return result
