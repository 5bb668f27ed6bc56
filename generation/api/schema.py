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


# Answer bodies, for the schema only: the views build these dicts directly.
class ModelsLabError(serializers.Serializer):
    status = serializers.CharField(default="error")
    message = serializers.JSONField(help_text="A sentence, or {field: [messages]} for a 400")
    tip = serializers.CharField(required=False)
    tips = serializers.CharField(required=False)


class ModelsLabJob(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success", "processing", "failed"])
    id = serializers.IntegerField()
    generationTime = serializers.FloatField(required=False)  # noqa: N815 (the wire name)
    output = serializers.ListField(
        child=serializers.CharField(), help_text="Absolute URLs, or base64 PNGs with base64"
    )
    proxy_links = serializers.ListField(child=serializers.CharField(), required=False)
    nsfw_content_detected = serializers.ListField(child=serializers.BooleanField(), required=False)
    eta = serializers.FloatField(required=False, help_text="Seconds, while processing")
    progress = serializers.FloatField(required=False)
    fetch_result = serializers.URLField(required=False)
    future_links = serializers.ListField(child=serializers.URLField(), required=False)
    message = serializers.CharField(required=False)
    tip = serializers.CharField(required=False)
    track_id = serializers.CharField(required=False)
    meta = serializers.DictField(required=False, help_text="The parameters used, seed included")


class ModelsLabFetch(serializers.Serializer):
    request_id = serializers.IntegerField(help_text="The job id")


class SystemLoad(serializers.Serializer):
    status = serializers.CharField(default="ok")
    queue_num = serializers.IntegerField()
    queue_time = serializers.FloatField(help_text="Seconds a new job would wait")


class ModelsLabModel(serializers.Serializer):
    model_id = serializers.CharField()
    model_name = serializers.CharField()
    model_category = serializers.CharField()
    status = serializers.CharField()
    is_default = serializers.BooleanField()
    is_private = serializers.BooleanField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


def modelslab_errors(*statuses: int) -> dict[int, Any]:
    """The error answers of a ModelsLab endpoint."""
    return {code: ModelsLabError for code in (400, 401, 402, 403, 404, 413, 429, *statuses)}
