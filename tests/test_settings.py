"""Settings come from the environment; production refuses unsafe defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


PRINT_DEBUG = (
    "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'sdplatform.settings');"
    "django.setup(); from django.conf import settings; print(settings.DEBUG)"
)


def django_check(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DJANGO_ENV")}
    return subprocess.run(
        [sys.executable, "-c", PRINT_DEBUG],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


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


def test_production_starts_with_a_secret_key():
    result = django_check(DJANGO_ENV="production", SECRET_KEY="s" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


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
        "django.setup(); import sdplatform.urls, generation.api.modelslab, generation.tasks;"
        "print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False False"
