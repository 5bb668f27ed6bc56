"""Log lines: JSON for collectors, the request and job ids on each, API keys never written."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from generation.models import Job
from sdplatform.logs import REDACTED, ContextFilter, JsonFormatter, TextFormatter

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"time", "level", "logger", "message", "request_id", "job_id"}


class Captured:
    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(ContextFilter())

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def entries(self) -> list[dict]:
        """Every line parsed: each must be one JSON object."""
        return [json.loads(line) for line in self.text.splitlines()]


def capture(formatter: logging.Formatter) -> Iterator[Captured]:
    captured = Captured(formatter)
    root = logging.getLogger()
    root.addHandler(captured.handler)
    try:
        yield captured
    finally:
        root.removeHandler(captured.handler)


@pytest.fixture
def json_log() -> Iterator[Captured]:
    yield from capture(JsonFormatter())


@pytest.fixture
def text_log() -> Iterator[Captured]:
    yield from capture(TextFormatter())


@pytest.mark.django_db
def test_a_request_logs_json_lines_with_its_id(client, json_log):
    response = client.get("/no-such-page", headers={"X-Request-ID": "edge-7f3a.1:2"})
    assert response.status_code == 404
    assert response["X-Request-ID"] == "edge-7f3a.1:2"

    (entry,) = [e for e in json_log.entries() if e["logger"] == "django.request"]
    assert set(entry) == FIELDS
    assert entry["level"] == "WARNING"
    assert entry["message"] == "Not Found: /no-such-page"
    assert entry["request_id"] == "edge-7f3a.1:2"
    assert entry["job_id"] is None
    assert entry["time"].endswith("+00:00")


@pytest.mark.django_db
def test_a_forged_host_is_one_warning_line_without_a_traceback(client, json_log):
    response = client.get("/api/v3/nowhere", headers={"Host": "evil.example:abc"})
    assert response.status_code == 400

    (entry,) = [e for e in json_log.entries() if e["logger"].startswith("django.security.")]
    assert (entry["logger"], entry["level"]) == ("django.security.DisallowedHost", "WARNING")
    assert "evil.example:abc" in entry["message"]
    assert "Traceback" not in json_log.text


@pytest.mark.django_db
def test_a_4xx_logged_after_the_middleware_still_has_the_id(api, tenant, json_log):
    status, _ = api.post("/api/v3/text2img", {"key": tenant.key}, **{"X-Request-ID": "r-400"})
    assert status == 400
    (entry,) = [e for e in json_log.entries() if e["message"].startswith("Bad Request")]
    assert entry["request_id"] == "r-400"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sent",
    [None, "", "x" * 65, "two words", "line\nbreak", "<script>", "-leading-dash", "é"],
)
def test_an_unusable_request_id_is_replaced(client, sent):
    headers = {} if sent is None else {"X-Request-ID": sent}
    first = client.get("/healthz", headers=headers)["X-Request-ID"]
    second = client.get("/healthz", headers=headers)["X-Request-ID"]
    assert first != sent
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second


@pytest.mark.django_db
def test_the_longest_sane_request_id_is_kept(client):
    sent = "a" * 64
    assert client.get("/healthz", headers={"X-Request-ID": sent})["X-Request-ID"] == sent


@pytest.mark.django_db(transaction=True)
def test_worker_lines_carry_the_job_and_its_request(api, tenant, demo_model, sync_queue, json_log):
    status, data = api.post(
        "/api/v3/text2img",
        {"key": tenant.key, "prompt": "a fox", "width": 64, "height": 64},
        **{"X-Request-ID": "submit-42"},
    )
    assert status == 200 and data["status"] == "success", data
    job_id = data["id"]
    assert Job.objects.get(pk=job_id).http_request_id == "submit-42"

    lines = [e for e in json_log.entries() if e["message"].startswith(f"job {job_id} ")]
    messages = [e["message"] for e in lines]
    assert f"job {job_id} started (attempt 1)" in messages
    assert any(m.startswith(f"job {job_id} done in ") for m in messages)
    for entry in lines:
        assert (entry["job_id"], entry["request_id"]) == (job_id, "submit-42")


def test_api_keys_are_redacted_from_messages_args_and_tracebacks(tenant, json_log):
    log = logging.getLogger("pictor.test")
    log.warning("key in the message: %s", tenant.key)
    log.warning(f"key formatted in: {tenant.key}")
    try:
        raise ValueError(f"bad key {tenant.key}")
    except ValueError:
        log.exception("failed")

    assert tenant.key not in json_log.text
    first, second, third = json_log.entries()
    shown = tenant.key[:12] + REDACTED
    assert first["message"] == f"key in the message: {shown}"
    assert second["message"] == f"key formatted in: {shown}"
    assert third["message"] == "failed"
    assert f"ValueError: bad key {shown}" in third["exc_info"]


def test_other_secrets_keep_only_their_kind(json_log):
    logging.getLogger("pictor.test").warning(
        "whsec_c2VjcmV0c2VjcmV0 sk_live_51Habc rk_test_9zz and pct_short"
    )
    (entry,) = json_log.entries()
    assert entry["message"] == (
        f"whsec_{REDACTED} sk_live_{REDACTED} rk_test_{REDACTED} and pct_short"
    )


@pytest.mark.django_db
def test_text_lines_carry_the_ids_too(client, tenant, text_log):
    client.get("/no-such-page", headers={"X-Request-ID": "abc123"})
    logging.getLogger("pictor.test").warning("key %s", tenant.key)
    request_line, other_line = text_log.text.splitlines()
    assert request_line.endswith(
        " WARNING django.request [request_id=abc123] Not Found: /no-such-page"
    )
    assert other_line.endswith(f" WARNING pictor.test key {tenant.key[:12]}{REDACTED}")


def run_django(code: str, **env: str) -> subprocess.CompletedProcess:
    """Python in a fresh process that loads the real settings from the environment."""
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "sdplatform.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_json_format_makes_every_line_json():
    result = run_django(
        "import logging; "
        "logging.getLogger('django.request').warning('Bad Request: %s', '/x'); "
        "logging.getLogger('django.server').info('GET / 200'); "
        "logging.getLogger('django-q').info('Process-1 ready'); "
        "logging.getLogger('generation.tasks').error("
        "'with pct_0123456789abcdefghijklmnopqrstuvwxyz')",
        PICTOR_LOG_FORMAT="json",
        DEBUG="1",
    )
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("django.request", "Bad Request: /x"),
        ("django.server", "GET / 200"),
        ("django-q", "Process-1 ready"),
        ("generation.tasks", f"with pct_01234567{REDACTED}"),
    ]


def test_django_logs_a_bad_request_once_in_debug():
    # Django's own console handler printed it too, before LOGGING took it away.
    result = run_django(
        "import logging; logging.getLogger('django.request').warning('Bad Request: /once')",
        DEBUG="1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Bad Request: /once") == 1
