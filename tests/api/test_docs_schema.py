"""The OpenAPI schema at /api/schema/ and Swagger UI at /api/docs/, served without the internet."""

from __future__ import annotations

import re
from importlib import import_module

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver

FORMAT_URLCONFS = (
    "generation.api.modelslab.urls",
    "generation.api.synapse.urls",
    "generation.api.hyperbolic.urls",
    "generation.api.dan.urls",
    "generation.api.a1111.urls",
    "generation.api.jobs.urls",
    "generation.api.openai.urls",
)


def api_paths() -> set[str]:
    """Every path of every wire format, written the way OpenAPI writes it."""
    paths = set()
    for name in FORMAT_URLCONFS:
        for pattern in import_module(name).urlpatterns:
            assert isinstance(pattern, URLPattern | URLResolver)
            route = str(pattern.pattern)
            paths.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return paths


def test_the_schema_covers_every_endpoint_of_every_format(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    expected = api_paths()
    assert len(expected) > 30
    assert expected <= set(schema["paths"]), expected - set(schema["paths"])
    # Each format's operations carry its tag, so the docs group them.
    tags = {
        tag
        for operations in schema["paths"].values()
        for operation in operations.values()
        for tag in operation.get("tags", [])
    }
    assert {"ModelsLab", "Synapse", "Hyperbolic", "Dan", "AUTOMATIC1111", "Jobs", "OpenAI"} <= tags


def test_the_schema_says_how_keys_travel(client):
    schemes = client.get("/api/schema/?format=json").json()["components"]["securitySchemes"]
    assert schemes["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <key>",
    }
    assert schemes["basicKey"]["scheme"] == "basic"
    assert schemes["headerKey"]["name"] == "key"


def test_the_schema_builds_without_warnings(tmp_path):
    # A view drf-spectacular cannot read ends up undocumented or wrong: fail on any warning.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )
    assert (tmp_path / "schema.yml").read_text().startswith("openapi: 3")


def test_swagger_ui_is_served_from_this_host(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    # The page's own script (no inline script, so a strict CSP holds) loads the schema.
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert "/api/schema/" in script.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts, page
    for asset in assets:
        # No CDN: every asset comes from this server, and it is there.
        assert asset.startswith("/"), asset
        if asset.startswith("/static/"):
            assert client.get(asset).status_code == 200, asset


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_the_docs_need_no_key(client, path):
    assert client.get(path).status_code == 200
