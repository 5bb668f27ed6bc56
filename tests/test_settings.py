"""Settings come from the environment; production refuses unsafe defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from sdplatform.env import envbool, envfloat, envint

ROOT = Path(__file__).resolve().parent.parent


SETUP = (
    "import django, json, os, sys; "
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'sdplatform.settings'); django.setup(); "
    "from django.conf import settings; "
)
PRINT_DEBUG = SETUP + "print(settings.DEBUG)"
# Names this file's tests set themselves; anything else comes from the test run's environment.
CHOSEN = {"SECRET_KEY", "DEBUG", "DJANGO_ENV", "ALLOWED_HOSTS", "PICTOR_BASE_URL"}
CHOSEN_PREFIXES = ("PICTOR_TRUSTED_PROXY", "PICTOR_SSL_", "PICTOR_HSTS_", "EMAIL_")
# What production needs to start.
PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "s" * 50,
    "ALLOWED_HOSTS": "pictor.example.com",
    "PICTOR_BASE_URL": "https://pictor.example.com",
}


def django_check(
    code: str = PRINT_DEBUG, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in CHOSEN and not k.startswith(CHOSEN_PREFIXES)
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# Ask the site for each (path, headers) over plain HTTP, or https with "secure": answers
# (status, Location, Strict-Transport-Security), as the site's own middleware gives them.
ASK = SETUP + (
    "from django.test import Client; answers = []\n"
    "for path, headers in json.loads(sys.argv[1]):\n"
    "    secure = headers.pop('secure', False)\n"
    "    r = Client(raise_request_exception=False).get(path, secure=secure, headers=headers)\n"
    "    answers.append([r.status_code, r.get('Location', ''), "
    "r.get('Strict-Transport-Security', '')])\n"
    "print(json.dumps(answers))"
)


def ask(tmp_path: Path, requests: list[tuple[str, dict[str, Any]]], **env: str) -> list[Any]:
    result = django_check(ASK, json.dumps(requests), PICTOR_VAR_DIR=str(tmp_path), **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_production_refuses_to_start_without_a_secret_key():
    result = django_check(DJANGO_ENV="production")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_debug():
    result = django_check(DJANGO_ENV="production", SECRET_KEY="s" * 50, DEBUG="true")
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr


def test_an_unknown_log_format_is_refused():
    result = django_check(PICTOR_LOG_FORMAT="yaml")
    assert result.returncode != 0
    assert "PICTOR_LOG_FORMAT must be text or json" in result.stderr


def test_a_worker_metrics_port_needs_a_token():
    result = django_check(PICTOR_METRICS_PORT="9100")
    assert result.returncode != 0
    assert "PICTOR_METRICS_PORT needs PICTOR_METRICS_TOKEN" in result.stderr
    assert django_check(PICTOR_METRICS_PORT="9100", PICTOR_METRICS_TOKEN="t").returncode == 0


def test_production_starts_with_its_required_settings():
    result = django_check(**PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_production_refuses_to_start_without_allowed_hosts():
    result = django_check(**{**PRODUCTION, "ALLOWED_HOSTS": ""})
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set" in result.stderr


def test_production_refuses_to_start_without_a_base_url():
    result = django_check(**{**PRODUCTION, "PICTOR_BASE_URL": ""})
    assert result.returncode != 0
    assert "PICTOR_BASE_URL must be set" in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "pictor.example.com",
        "ftp://pictor.example.com",
        "https://",
        "https://pictor.example.com/app",
        "https://pictor.example.com/?next=/",
        "https://user@pictor.example.com",
        "https://pictor.example.com:http",
    ],
)
def test_a_base_url_that_is_not_a_site_root_is_refused(url):
    result = django_check(PICTOR_BASE_URL=url)
    assert result.returncode != 0
    assert "PICTOR_BASE_URL must be an http(s) URL with a host and no path" in result.stderr


def test_a_base_url_is_kept_as_scheme_and_host():
    print_base = SETUP + "print(settings.PICTOR_BASE_URL)"
    result = django_check(print_base, PICTOR_BASE_URL="HTTPS://pictor.example.com:8443/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "https://pictor.example.com:8443"


def test_mail_goes_to_the_console_unless_an_smtp_host_is_set():
    print_backend = (
        SETUP + "print(settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT)"
    )
    result = django_check(print_backend)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "django.core.mail.backends.console.EmailBackend"
    smtp = django_check(print_backend, EMAIL_HOST="mail.example.com", EMAIL_PORT="2525")
    assert smtp.returncode == 0, smtp.stderr
    assert smtp.stdout.split() == [
        "django.core.mail.backends.smtp.EmailBackend",
        "mail.example.com",
        "2525",
    ]


def test_development_starts_with_no_configuration_and_debug_off():
    result = django_check()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert django_check(DEBUG="true").stdout.strip() == "True"


def test_production_refuses_a_host_it_does_not_name(tmp_path):
    [(status, _, _)] = ask(
        tmp_path, [("/api/docs/", {"Host": "evil.example", "secure": True})], **PRODUCTION
    )
    assert status == 400


def test_production_redirects_plain_http_to_https_but_not_the_probes(tmp_path):
    host = {"Host": "pictor.example.com"}
    answers = ask(
        tmp_path,
        [("/api/docs/?x=1", host), ("/healthz", host), ("/readyz", host), ("/metrics", host)],
        **PRODUCTION,
    )
    assert answers[0][:2] == [301, "https://pictor.example.com/api/docs/?x=1"]
    assert answers[1][0] == 200
    for status, location, _ in answers[1:]:
        assert status != 301 and not location
    off = ask(tmp_path, [("/api/docs/", host)], **PRODUCTION, PICTOR_SSL_REDIRECT="false")
    assert off[0][0] == 200


def test_production_sends_hsts_on_https(tmp_path):
    https = {"Host": "pictor.example.com", "secure": True}
    [(status, _, hsts)] = ask(tmp_path, [("/api/docs/", https)], **PRODUCTION)
    assert status == 200
    assert hsts == "max-age=31536000; includeSubDomains"
    [(_, _, hsts)] = ask(
        tmp_path,
        [("/api/docs/", https)],
        **PRODUCTION,
        PICTOR_HSTS_SECONDS="600",
        PICTOR_HSTS_INCLUDE_SUBDOMAINS="false",
        PICTOR_HSTS_PRELOAD="true",
    )
    assert hsts == "max-age=600; preload"


def test_development_neither_redirects_nor_sends_hsts(tmp_path):
    https = {"Host": "localhost", "secure": True}
    assert ask(tmp_path, [("/api/docs/", {"Host": "localhost"}), ("/api/docs/", https)]) == [
        [200, "", ""],
        [200, "", ""],
    ]


def test_x_forwarded_proto_is_believed_only_from_a_trusted_proxy(tmp_path):
    forwarded = [("/api/docs/", {"Host": "pictor.example.com", "X-Forwarded-Proto": "https"})]
    # A client that reaches gunicorn directly cannot claim https and dodge the redirect.
    [(status, location, hsts)] = ask(tmp_path, forwarded, **PRODUCTION)
    assert (status, location, hsts) == (301, "https://pictor.example.com/api/docs/", "")
    [(status, location, hsts)] = ask(tmp_path, forwarded, **PRODUCTION, PICTOR_TRUSTED_PROXY="true")
    assert (status, location) == (200, "")
    assert hsts.startswith("max-age=31536000")


@pytest.mark.django_db
def test_the_default_plans_are_seeded():
    from billing.models import Plan

    rows = {
        p.slug: (
            p.requests_per_minute,
            p.concurrent_jobs,
            p.images_per_day,
            p.max_samples,
            p.max_side,
            p.steps_list,
            p.priority,
            p.retention_days,
            p.monthly_credits,
        )
        for p in Plan.objects.all()
    }
    assert rows == {
        "free": (10, 1, 50, 1, 512, [21], 0, 1, 100),
        "basic": (60, 2, 1000, 4, 768, [21, 31], 1, 7, 3000),
        "premium": (300, 4, 10000, 4, 1024, [21, 31, 41], 2, 30, 20000),
        "enterprise": (1200, 16, None, 4, 1024, [21, 31, 41, 51], 3, 90, 100000),
    }


def test_the_web_tier_does_not_import_torch():
    code = (
        "import os, sys, django; os.environ['DJANGO_SETTINGS_MODULE']='sdplatform.settings';"
        "django.setup(); import sdplatform.urls, generation.api.modelslab.views, generation.tasks;"
        "print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False False"


# The readers: a value that is set but cannot be read stops the start, naming the variable.


def test_envbool_reads_the_yes_and_no_words_in_any_case(monkeypatch: pytest.MonkeyPatch):
    for value in ("1", "true", "YES", " On "):
        monkeypatch.setenv("PICTOR_TEST_SWITCH", value)
        assert envbool("PICTOR_TEST_SWITCH", False) is True, value
    for value in ("0", "False", "no", "OFF "):
        monkeypatch.setenv("PICTOR_TEST_SWITCH", value)
        assert envbool("PICTOR_TEST_SWITCH", True) is False, value


def test_envbool_gives_the_default_when_unset_or_empty(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PICTOR_TEST_SWITCH", raising=False)
    assert envbool("PICTOR_TEST_SWITCH", True) is True
    monkeypatch.setenv("PICTOR_TEST_SWITCH", "  ")
    assert envbool("PICTOR_TEST_SWITCH", False) is False


def test_envbool_refuses_a_word_it_does_not_know(monkeypatch: pytest.MonkeyPatch):
    for value in ("ture", "enabled", "2", "y"):
        monkeypatch.setenv("PICTOR_TEST_SWITCH", value)
        with pytest.raises(ImproperlyConfigured) as refused:
            envbool("PICTOR_TEST_SWITCH", False)
        message = str(refused.value)
        assert "PICTOR_TEST_SWITCH" in message and repr(value) in message
        assert all(word in message for word in ("1", "true", "yes", "on", "0", "false", "no"))


def test_envint_and_envfloat_read_numbers_or_give_the_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PICTOR_TEST_NUMBER", " 42 ")
    assert envint("PICTOR_TEST_NUMBER", 7) == 42
    assert envfloat("PICTOR_TEST_NUMBER", 0.5) == 42.0
    monkeypatch.setenv("PICTOR_TEST_NUMBER", "2.5")
    assert envfloat("PICTOR_TEST_NUMBER", 0.5) == 2.5
    monkeypatch.setenv("PICTOR_TEST_NUMBER", "")
    assert envint("PICTOR_TEST_NUMBER", 7) == 7
    assert envint("PICTOR_TEST_NUMBER", default=None) is None
    assert envfloat("PICTOR_TEST_NUMBER", 0.5) == 0.5


def test_envint_and_envfloat_refuse_what_does_not_parse(monkeypatch: pytest.MonkeyPatch):
    for reader, value in ((envint, "2.5"), (envint, "ten"), (envfloat, "1,5"), (envfloat, "x")):
        monkeypatch.setenv("PICTOR_TEST_NUMBER", value)
        with pytest.raises(ImproperlyConfigured, match=f"PICTOR_TEST_NUMBER.*{value}"):
            reader("PICTOR_TEST_NUMBER", 1)


def test_a_misspelt_switch_stops_the_start():
    result = django_check(DEBUG="ture")
    assert result.returncode != 0
    assert "ImproperlyConfigured: DEBUG must be one of" in result.stderr
    assert "'ture'" in result.stderr


# The engine's knobs: read by the settings, handed to the engine by the app.

ENGINE = SETUP + (
    "from generation.engine import config; from generation.engine.cache import PipelineCache; "
    "c = config.current(); "
    "print(json.dumps([c.cache_size, c.cache_bytes, c.torch_threads, PipelineCache().max_models, "
    "c.on_cache_event is not None]))"
)
ENGINE_NAMES = ("PICTOR_TORCH_THREADS", "PICTOR_PIPELINE_CACHE_SIZE", "PICTOR_PIPELINE_CACHE_BYTES")


def engine_settings(**env: str) -> list[Any]:
    unset = {name: "" for name in ENGINE_NAMES}
    result = django_check(ENGINE, **{**unset, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_engine_gets_its_knobs_from_the_environment():
    assert engine_settings(
        PICTOR_TORCH_THREADS="3",
        PICTOR_PIPELINE_CACHE_SIZE="4",
        PICTOR_PIPELINE_CACHE_BYTES="1000000",
    ) == [4, 1000000, 3, 4, True]


def test_the_engine_knobs_default_to_two_models_and_automatic_bytes_and_threads():
    assert engine_settings() == [2, None, None, 2, True]


def test_impossible_engine_knobs_stop_the_start():
    for name, value, says in (
        ("PICTOR_TORCH_THREADS", "0", "PICTOR_TORCH_THREADS must be a positive integer"),
        ("PICTOR_TORCH_THREADS", "two", "PICTOR_TORCH_THREADS must be an integer"),
        ("PICTOR_PIPELINE_CACHE_SIZE", "0", "PICTOR_PIPELINE_CACHE_SIZE must be at least 1"),
        ("PICTOR_PIPELINE_CACHE_BYTES", "1e9", "PICTOR_PIPELINE_CACHE_BYTES must be an integer"),
    ):
        result = django_check(**{name: value})
        assert result.returncode != 0, name
        assert says in result.stderr, result.stderr[-500:]


def test_the_tests_run_torch_on_two_threads_unless_told_otherwise():
    # tests/conftest.py sets the default after the settings were read, then reconfigures.
    from generation.engine import config

    expected = int(os.environ["PICTOR_TORCH_THREADS"])
    assert config.current().torch_threads == expected


def test_the_engine_imports_without_django():
    code = (
        "import sys, generation.engine.runner, generation.engine.demo_addons; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'sdplatform'}))"
    )
    clean = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
