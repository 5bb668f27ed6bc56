"""OpenAPI descriptions drf-spectacular cannot read off the code: how keys travel, answers."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers

# The job answer's one serializer, named here too for code that reaches it as schema.ModelsLabJob.
from generation.answers import ModelsLabJob as ModelsLabJob


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
