"""Bad bodies, keys and URLs get a 4xx in the caller's wire format, never a 500.

Every case is sent to every endpoint of every format, the endpoints read from the URLconf, and
each answer must be a 4xx in the shape that format's clients parse (generation/api/errors.py
and each format's error body). The chunked and oversize cases also run against gunicorn.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.exceptions import ParseError

from generation.api.parsers import MAX_JSON_DEPTH, loads
from generation.models import Job
from tests.processes import free_port, manage, spawn_web, stop, wait_for_web

# URL prefix → wire format, longest first (Dan's /api/sd/ lies inside ModelsLab's /api/).
FORMATS = (
    ("/api/sd/", "dan"),
    ("/api/v1/", "jobs"),
    ("/api/", "modelslab"),
    ("/sdapi/", "a1111"),
    ("/controlnet/", "a1111"),
    ("/sd/", "synapse"),
    # Hyperbolic's /v1/image/ lies inside OpenAI's /v1/.
    ("/v1/image/", "hyperbolic"),
    ("/v1/", "openai"),
)
# Values for the URLconf's parameters: a job id, a model name, a task id.
PARAMETERS = {"model": "demo-sd15"}


def format_of(path: str) -> str:
    path = re.sub("//+", "/", path)
    return next(name for prefix, name in FORMATS if path.startswith(prefix))


def in_format_shape(path: str, status: int, body: Any) -> bool:
    """Whether `body` is an error as the format of `path` writes one."""
    if not isinstance(body, dict):
        return False
    name = format_of(path)
    if name == "modelslab":
        return body.get("status") == "error" and bool(body.get("message"))
    if name == "synapse":
        return isinstance(body.get("error"), str) and bool(body["error"])
    if name == "hyperbolic":
        return body.get("object") == "error" and body.get("code") == status and body["message"]
    if name == "dan":
        return body.get("code") == status and body.get("data") is None and body.get("message")
    if name == "openai":
        error = body.get("error")
        return isinstance(error, dict) and bool(error.get("message")) and bool(error.get("type"))
    if name == "jobs":
        error = body.get("error")
        return isinstance(error, dict) and bool(error.get("message")) and bool(error.get("code"))
    # AUTOMATIC1111 (FastAPI): {"detail": ...}, or webui's {"error", "detail", ...}.
    return bool(body.get("detail"))


def api_routes() -> list[tuple[str, tuple[str, ...], str]]:
    """(path, methods, route) of every endpoint of every wire format, from the URLconf."""

    def walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern

    routes = []
    for route, pattern in walk(get_resolver().url_patterns):
        view = getattr(pattern.callback, "view_class", None)
        if view is None or not view.__module__.startswith("generation.api."):
            continue
        methods = tuple(
            m for m in ("post", "get", "delete") if hasattr(view, m) and m in view.http_method_names
        )
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: PARAMETERS.get(m.group(1), "1"), route)
        routes.append((path, methods, route))
    return routes


ROUTES = api_routes()
POST_PATHS = [path for path, methods, _route in ROUTES if "post" in methods]
ALL = [(path, methods[0]) for path, methods, _route in ROUTES]
# Routes whose id the URLconf reads as an integer, and Dan's task id (read by the view).
ID_ROUTES = [route for _path, _methods, route in ROUTES if "<int:" in route] + [
    "api/sd/txt2img/<str:task_id>"
]
UNKNOWN_PATHS = [
    "/api//v1/jobs",
    "/api/v3/nowhere",
    "/api/v9/images/text2img",
    "/api/sd/nowhere/at/all",
    "/sdapi/v1/nowhere",
    "/sd/demo-sd15/nowhere",
    "/v1/nowhere",  # OpenAI's shape: an OpenAI SDK's base URL ends in /v1
    "/v1/embeddings",
    "/v1/images/nowhere",
    "/v1/image/nowhere",  # Hyperbolic's
]

# JSON escapes of what PostgreSQL cannot store (NUL) and UTF-8 cannot encode (a lone surrogate).
BAD_ESCAPES = {"nul": "\\u0000", "surrogate": "\\ud800"}
BAD_CHARACTERS = {"nul": "\x00", "surrogate": "\ud800"}


def text_body(path: str, escape: str) -> str:
    """A body whose one text field (the ones the review found reaching the database) is bad."""
    value = f'"demo-lora-a{escape}"'
    if path == "/sdapi/v1/options":
        return f'{{"sd_model_checkpoint": {value}}}'
    by_format = {
        "modelslab": f'{{"prompt": "a lighthouse", "lora_model": {value}, "model_id": {value}}}',
        "synapse": f'{{"prompt": "a lighthouse", "sampler": {value}}}',
        "hyperbolic": f'{{"prompt": "a lighthouse", "loras": {{{value}: 0.5}}}}',
        "dan": f'{{"prompt": "a lighthouse", "loras": [[{value}, 0.5]], "taskId": {value}}}',
        "a1111": f'{{"prompt": "a lighthouse", "override_settings": {{"sd_vae": {value}}}}}',
        "openai": f'{{"prompt": "a lighthouse", "model": {value}}}',
        "jobs": f'{{"key": {value}}}',
    }
    return by_format[format_of(path)]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def send(client: Any, method: str, path: str, body: str | bytes | None = None, **extra: Any):
    """(status, JSON body or raw bytes) of one request through Django's test client."""
    if method == "post":
        response = client.post(
            path, data=body if body is not None else b"", content_type="application/json", **extra
        )
    else:
        response = getattr(client, method)(path, **extra)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.content


def parse_error_status(path: str) -> int:
    """A body that is not acceptable JSON: 400, or FastAPI's 422 on AUTOMATIC1111's routes."""
    return 422 if format_of(path) == "a1111" else 400


def test_the_endpoint_list_covers_every_format():
    covered = {format_of(path) for path, _methods in ALL}
    assert covered == {"modelslab", "synapse", "hyperbolic", "dan", "a1111", "openai", "jobs"}
    assert {"/sdapi/v1/options", "/sdapi/v1/progress", "/sdapi/v1/interrupt"} <= {
        path for path, _methods in ALL
    }
    assert len(POST_PATHS) > 30


@pytest.mark.django_db
@pytest.mark.parametrize("path", POST_PATHS)
def test_it_refuses_deep_nesting_before_authentication_without_a_traceback(client, caplog, path):
    deep = "[" * 1000 + "]" * 1000
    status, body = send(client, "post", path, f'{{"prompt": "a lighthouse", "extra": {deep}}}')
    assert status == parse_error_status(path), body
    assert in_format_shape(path, status, body), body
    assert "32 levels" in json.dumps(body)
    assert not [record for record in caplog.records if record.exc_info]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_it_still_reads_bodies_nested_up_to_the_limit():
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    data = loads(f'{{"prompt": "[[[{{{{ \\" ]]", "x": {at_limit[2:-2]}}}'.encode())
    assert data["prompt"] == '[[[{{ " ]]'
    assert loads(at_limit.encode())
    with pytest.raises(ParseError, match="deeper than 32 levels"):
        loads(f"[{at_limit}]".encode())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("literal", "says"),
    [
        ("NaN", "NaN is not a valid JSON value"),
        ("Infinity", "Infinity is not a valid JSON value"),
        ("-Infinity", "-Infinity is not a valid JSON value"),
        # Valid JSON that Python reads as infinity; in a field no format knows, too, since
        # A1111's answer echoes the body's fields and json.dumps cannot write it.
        ("1e999", "too large"),
        ("-1e999", "too large"),
        ("[1e999]", "too large"),
        ('{"a": 1.5e400}', "too large"),
    ],
)
@pytest.mark.parametrize("path", POST_PATHS)
def test_it_refuses_numbers_that_are_not_finite(client, tenant, path, literal, says):
    fields = ("guidance_scale", "cfg_scale", "unknown_field")
    raw = (
        "{" + ", ".join(['"prompt": "a lighthouse"', *(f'"{f}": {literal}' for f in fields)]) + "}"
    )
    status, body = send(client, "post", path, raw, headers=bearer(tenant.key))
    assert status == parse_error_status(path), body
    assert in_format_shape(path, status, body), body
    assert says in json.dumps(body)
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("bad", sorted(BAD_ESCAPES))
@pytest.mark.parametrize("path", POST_PATHS)
def test_it_refuses_nul_and_lone_surrogates_in_text(client, tenant, demo_models, path, bad):
    raw = text_body(path, BAD_ESCAPES[bad])
    status, body = send(client, "post", path, raw, headers=bearer(tenant.key))
    assert status == parse_error_status(path), body
    assert in_format_shape(path, status, body), body
    assert "NUL character or an unpaired surrogate" in json.dumps(body)
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("bad", sorted(BAD_ESCAPES))
@pytest.mark.parametrize("path", POST_PATHS)
def test_a_bad_character_in_a_body_key_is_a_400_before_any_lookup(client, path, bad):
    raw = f'{{"key": "pct_{BAD_ESCAPES[bad]}{"A" * 40}", "prompt": "a lighthouse"}}'
    status, body = send(client, "post", path, raw)
    assert status == parse_error_status(path), body
    assert in_format_shape(path, status, body), body


def bad_key_headers(where: str, bad: str) -> dict[str, str]:
    """A key with a NUL or a lone surrogate in its first 12 characters, sent in `where`."""
    key = f"pct_{BAD_CHARACTERS[bad]}{'A' * 40}"
    if where == "header":
        return {"key": key}
    if where == "bearer":
        return bearer(key)
    token = base64.b64encode(f"webui:{key}".encode("utf-8", "surrogatepass")).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.django_db
@pytest.mark.parametrize("bad", sorted(BAD_CHARACTERS))
@pytest.mark.parametrize("where", ["header", "bearer", "basic"])
@pytest.mark.parametrize(("path", "method"), ALL)
def test_a_bad_character_in_a_sent_key_is_a_401(client, tenant, path, method, where, bad):
    body = "{}" if method == "post" else None
    status, answer = send(client, method, path, body, headers=bad_key_headers(where, bad))
    assert status == 401, answer
    assert in_format_shape(path, status, answer), answer


@pytest.mark.django_db
@pytest.mark.parametrize("path", POST_PATHS)
def test_an_oversize_body_is_a_413_in_the_format(client, settings, tenant, path):
    settings.PICTOR_MAX_BODY_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    raw = json.dumps({"key": tenant.key, "prompt": "a lighthouse " * 1000})
    status, body = send(client, "post", path, raw)
    assert status == 413, body
    assert in_format_shape(path, status, body), body
    assert "at most 4.0 KiB" in json.dumps(body)


@pytest.mark.django_db
@pytest.mark.parametrize("path", POST_PATHS)
def test_a_chunked_body_the_server_cannot_read_is_a_411(client, tenant, path):
    """Without gunicorn's de-chunking (wsgi.input_terminated) the body would read as empty."""
    raw = json.dumps({"key": tenant.key, "prompt": "a lighthouse"})
    status, body = send(
        client, "post", path, raw, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )
    assert status == 411, body
    assert in_format_shape(path, status, body), body


@pytest.mark.django_db
@pytest.mark.parametrize("route", ID_ROUTES)
@pytest.mark.parametrize("job_id", ["abc", "1.5", "-1", "１"])
def test_a_non_integer_id_on_a_fetch_route_is_a_404_in_the_format(client, tenant, route, job_id):
    path = "/" + re.sub(r"<\w+:\w+>", job_id, route)
    for method in ("get", "post"):
        status, body = send(client, method, path, "{}", headers=bearer(tenant.key))
        if status == 405:
            continue
        assert status == 404, (method, body)
        assert in_format_shape(path, status, body), body


@pytest.mark.django_db
@pytest.mark.parametrize("path", UNKNOWN_PATHS)
def test_an_unknown_api_path_is_a_404_in_the_format(client, path):
    for method in ("get", "post"):
        status, body = send(client, method, path, "{}")
        assert status == 404, body
        assert in_format_shape(path, status, body), body


@pytest.mark.parametrize(
    "path", ["//api/v3/text2img", "//sdapi/v1/options", "//v1/images/generations"]
)
def test_a_doubled_first_slash_is_a_404_in_the_format(client, path):
    # A base URL with a trailing slash doubles it. (The test client would read //host/… as a
    # host, so the path goes in as the server hands it over.)
    status, body = send(client, "post", "/", "{}", PATH_INFO=path)
    assert status == 404, body
    assert in_format_shape(path, status, body), body


@pytest.mark.django_db
def test_pages_keep_their_html_error_pages(client):
    response = client.get("/app/nowhere/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_api_routes_answer_json_even_with_debug_on(client, settings):
    """DEBUG's pages show settings (DATABASE_URL, REDIS_URL): never on an API route."""
    settings.DEBUG = True
    status, body = send(client, "get", "/api/v3/fetch/abc")
    assert status == 404 and body == {"status": "error", "message": "Not Found"}
    status, body = send(client, "post", "/sdapi/v1/nowhere", "{}")
    assert status == 404 and body == {"detail": "Not Found"}


@pytest.mark.django_db
def test_a_nul_in_the_url_is_a_400_before_any_lookup(client, tenant, demo_models):
    raw = json.dumps({"prompt": "a lighthouse"})
    status, body = send(client, "post", "/sd/demo-sd15%00", raw, headers=bearer(tenant.key))
    assert status == 400 and in_format_shape("/sd/", status, body), body
    status, body = send(client, "get", "/sdapi/v1/progress?skip_current_image=%00")
    assert status == 400 and in_format_shape("/sdapi/", status, body), body
    response = client.get("/app/history/?q=%00")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_crash_on_an_api_route_is_a_json_500_in_the_format(client, tenant):
    """A failure nobody foresaw (here: a missing table) still answers the format's JSON."""
    client.raise_request_exception = False
    # Inside the test's transaction: SQLite undoes the DROP when the test rolls back.
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE generation_job")
    for path, expected in (
        ("/api/v3/fetch/1", {"status": "error", "message": "Internal server error"}),
        ("/api/sd/txt2img/1", {"code": 500, "data": None, "message": "Internal server error"}),
    ):
        status, body = send(client, "get", path, headers=bearer(tenant.key))
        assert (status, body) == (500, expected)


# --- a real server: gunicorn de-chunks bodies, and sizes come from the socket -----------------

SERVER_LIMIT = 65536


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """gunicorn with Pictor's config on an SQLite file, its body limit 64 KiB: (base URL, key)."""
    tmp = tmp_path_factory.mktemp("bodies")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sdplatform.settings",
        "PICTOR_VAR_DIR": str(tmp / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "PICTOR_BIND": f"127.0.0.1:{port}",
        "PICTOR_MAX_BODY_BYTES": str(SERVER_LIMIT),
        "WEB_CONCURRENCY": "1",
        "PICTOR_WEB_THREADS": "4",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "S3_BUCKET"):
        env.pop(name, None)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "createcachetable")
    key = manage(env, "apikey", "create", "--org", "bodies", "--plan", "premium").strip()
    log = tmp / "web.log"
    web = spawn_web(env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_web(base + "/healthz", web, log)
        yield base, key
        assert "Traceback" not in log.read_text()
    finally:
        stop([web], grace=10)


JSON = {"Content-Type": "application/json"}


def chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    """The body as a generator: requests then sends it chunked, without a Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# One generation endpoint per format, where the body decides the answer.
SERVER_PATHS = [
    "/api/v3/text2img",
    "/api/v6/images/text2img",
    "/sd/demo-sd15",
    "/v1/image/generation",
    "/v1/images/generations",
    "/api/sd/txt2img",
    "/sdapi/v1/txt2img",
]


def test_a_chunked_body_is_read_whole_by_the_real_server(server):
    base, key = server
    body = json.dumps({"key": key}).encode()
    response = requests.post(
        base + "/api/v3/system_load", data=chunks(body, 7), headers=JSON, timeout=30
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("path", SERVER_PATHS)
def test_a_chunked_bad_body_gets_the_formats_400_from_the_real_server(server, path):
    base, key = server
    deep = "[" * 1000 + "]" * 1000
    body = f'{{"prompt": "a lighthouse", "extra": {deep}}}'.encode()
    headers = {**JSON, **bearer(key)}
    response = requests.post(base + path, data=chunks(body), headers=headers, timeout=30)
    assert response.status_code == parse_error_status(path), response.text
    assert in_format_shape(path, response.status_code, response.json()), response.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", SERVER_PATHS)
def test_an_oversize_body_gets_the_formats_413_from_the_real_server(server, path, chunked):
    base, key = server
    body = json.dumps({"key": key, "prompt": "a lighthouse " * (4 * SERVER_LIMIT // 13)}).encode()
    data = chunks(body, 8192) if chunked else body
    response = requests.post(base + path, data=data, headers={**JSON, **bearer(key)}, timeout=30)
    assert response.status_code == 413, response.text
    assert in_format_shape(path, 413, response.json()), response.text
    assert "at most 64.0 KiB" in response.text


@pytest.mark.parametrize("path", ["/api/v1/models", "/v1/images/edits"])
def test_a_chunked_upload_over_the_limit_is_a_413_not_a_missing_file(server, path):
    base, key = server
    boundary = "pictor-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n'
    part = (
        f"--{boundary}\r\nContent-Disposition: form-data; "
        'name="file"; filename="big.safetensors"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = (head + part).encode() + b"\0" * (2 * SERVER_LIMIT) + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", **bearer(key)}
    response = requests.post(base + path, data=chunks(body, 8192), headers=headers, timeout=30)
    assert response.status_code == 413, response.text
    assert "at most 64.0 KiB" in response.text and "Content-Length" in response.text


def raw_post(base: str, path: str, head: dict[str, str], body: bytes, *, half_close: bool = False):
    """(status, JSON) of a POST written byte by byte: headers and body exactly as given.

    `half_close` ends the client's sending after the body, as a client that gave up would.
    """
    host, port = base.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in head.items()]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


@pytest.mark.parametrize(
    "chunks_sent",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXY0\r\n\r\n", b"10\r\nabc"],
    ids=["bad-size", "no-terminator", "cut-short"],
)
@pytest.mark.parametrize("path", SERVER_PATHS)
def test_a_broken_chunked_body_gets_the_formats_400_from_the_real_server(server, path, chunks_sent):
    base, key = server
    head = {**JSON, **bearer(key), "Transfer-Encoding": "chunked"}
    status, body = raw_post(base, path, head, chunks_sent, half_close=True)
    assert status == 400, body
    assert in_format_shape(path, 400, body), body
    assert "ended early or its chunks are malformed" in json.dumps(body)


@pytest.mark.parametrize("path", SERVER_PATHS)
def test_a_body_shorter_than_its_content_length_is_refused_from_the_real_server(server, path):
    base, key = server
    sent = json.dumps({"key": key, "prompt": "a lighthouse", "width": 64, "height": 64}).encode()
    head = {**JSON, **bearer(key), "Content-Length": str(len(sent) + 100)}
    status, body = raw_post(base, path, head, sent, half_close=True)
    # Refused as the body, before any job: the whole of it never came.
    assert status == parse_error_status(path), body
    assert in_format_shape(path, status, body), body
    assert "ended early or its chunks are malformed" in json.dumps(body)
