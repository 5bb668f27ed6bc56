"""OpenAPI descriptions drf-spectacular cannot read off the code (how keys travel)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """accounts.auth.ApiKeyAuthentication: a key in a header, a Bearer token or HTTP Basic."""

    target_class = "accounts.auth.ApiKeyAuthentication"
    name = ["bearerKey", "headerKey", "basicKey"]

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
