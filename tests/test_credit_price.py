"""PICTOR_CREDIT_PRICE and PICTOR_CURRENCY: money beside credits on pages, checked at start."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.template import Context, Template
from django.utils import timezone

from accounts.models import ApiKey, Membership, User
from accounts.services import get_or_create_organization
from billing import ledger
from billing.prices import money
from generation.models import AIModel, Job

ROOT = Path(__file__).resolve().parent.parent
PRINT_PRICE = (
    "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'sdplatform.settings'); "
    "django.setup(); from django.conf import settings; "
    "print(settings.PICTOR_CREDIT_PRICE, settings.PICTOR_CURRENCY)"
)


def start(**env: str) -> subprocess.CompletedProcess[str]:
    """Load the settings in a fresh process with these variables."""
    clean = {
        k: v for k, v in os.environ.items() if k not in ("PICTOR_CREDIT_PRICE", "PICTOR_CURRENCY")
    }
    return subprocess.run(
        [sys.executable, "-c", PRINT_PRICE],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def render(text: str, **context: object) -> str:
    return Template("{% load credits %}" + text).render(Context(context))


@pytest.mark.parametrize(
    ("amount", "currency", "written"),
    [
        ("1.2", "USD", "$1.20"),
        ("0.005", "USD", "$0.01"),
        ("0.004", "USD", "< $0.01"),
        ("0", "USD", "$0.00"),
        ("1234.5", "EUR", "€1,234.50"),
        ("120.4", "JPY", "¥120"),
        ("9.999", "CHF", "10.00 CHF"),
    ],
)
def test_money_is_written_for_people(amount, currency, written):
    assert money(Decimal(amount), currency) == written


def test_without_a_price_credits_are_counted_alone(settings):
    settings.PICTOR_CREDIT_PRICE = None
    assert render("{{ n|credits }}", n=1) == "1 credit"
    assert render("{{ n|credits }}", n=120) == "120 credits"
    assert render("{{ n|credit_price }}", n=120) == ""


def test_with_a_price_credits_show_their_money(settings):
    settings.PICTOR_CREDIT_PRICE = Decimal("0.01")
    settings.PICTOR_CURRENCY = "USD"
    assert render("{{ n|credits }}", n=120) == "120 credits (≈ $1.20)"
    assert render("{{ n|credits }}", n=1) == "1 credit (≈ $0.01)"
    assert render("{{ n|credit_price }}", n=0) == "≈ $0.00"
    settings.PICTOR_CURRENCY = "SEK"
    settings.PICTOR_CREDIT_PRICE = Decimal("0.25")
    assert render("{{ n|credits }}", n=3) == "3 credits (≈ 0.75 SEK)"


def test_counted_words(settings):
    assert render('{{ n|counted:"job" }}', n=1) == "1 job"
    assert render('{{ n|counted:"job" }}', n=0) == "0 jobs"
    assert render('{{ n|counted:"image" }}', n=2) == "2 images"
    assert render('{{ n|counted:"image" }}', n="x") == "x images"


@pytest.mark.django_db
def test_the_pages_show_money_next_to_credits(client, settings):
    settings.PICTOR_CREDIT_PRICE = Decimal("0.01")
    settings.PICTOR_CURRENCY = "USD"
    org = get_or_create_organization("acme", "basic")
    ledger.set_balance(org, 120)
    user = User.objects.create_user("owner@acme.example", "pw-123456789")
    user.email_verified_at = timezone.now()
    user.save()
    Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)
    key, _ = ApiKey.objects.issue(org, name="server")
    model = AIModel.objects.create(model_id="price-model", name="price-model", path="price-model")
    job = Job.objects.create(
        organization=org,
        api_key=key,
        model=model,
        status=Job.Status.SUCCESS,
        params={"prompt": "a lighthouse", "samples": 1},
        cost=20,
    )
    ledger.debit_for_job(job)  # 100 left
    client.force_login(user)

    overview = client.get("/app/").content.decode()
    assert 'data-testid="credits-worth">≈ $1.00<' in overview
    assert "3000 credits (≈ $30.00) a month" in overview
    assert "20 credits (≈ $0.20)" in overview  # the job's cost
    billing = client.get("/app/billing/").content.decode()
    assert 'data-testid="credits-worth">≈ $1.00<' in billing
    assert "costs 1 credit (≈ $0.01)." in billing
    usage = client.get("/app/usage/").content.decode()
    assert 'data-testid="credits-worth">≈ $0.20<' in usage
    keys = client.get("/app/keys/").content.decode()
    assert 'data-testid="key-credits">20 credits (≈ $0.20)<' in keys

    settings.PICTOR_CREDIT_PRICE = None
    assert "≈" not in client.get("/app/").content.decode()
    assert "≈" not in client.get("/app/keys/").content.decode()


def test_a_valid_price_and_currency_are_read():
    done = start(PICTOR_CREDIT_PRICE="0.004", PICTOR_CURRENCY="eur")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.004", "EUR"]
    unset = start()
    assert unset.returncode == 0, unset.stderr
    assert unset.stdout.split() == ["None", "USD"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PICTOR_CREDIT_PRICE", "abc"),
        ("PICTOR_CREDIT_PRICE", "-0.01"),
        ("PICTOR_CREDIT_PRICE", "0"),
        ("PICTOR_CREDIT_PRICE", "NaN"),
        ("PICTOR_CREDIT_PRICE", "Infinity"),
        ("PICTOR_CURRENCY", "US"),
        ("PICTOR_CURRENCY", "dollars"),
    ],
)
def test_a_bad_price_or_currency_stops_the_start(name, value):
    done = start(**{name: value})
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert name in done.stderr
