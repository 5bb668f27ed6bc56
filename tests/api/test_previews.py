"""Live previews: while a job runs, A1111's progress and ModelsLab's fetch carry its picture."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image

from accounts.models import Membership, User
from generation import previews
from generation.engine.preview import build_demo_decoder
from generation.models import Job
from generation.tasks import run_next_job

pytestmark = pytest.mark.django_db(transaction=True)


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"webui:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def image_of(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "PNG"
    return image


def member_page(tenant: Any) -> Client:
    """A browser session of a member of the tenant's organization."""
    user = User.objects.create_user(
        "member@example.com", "pw-123456789", email_verified_at=timezone.now()
    )
    Membership.objects.create(user=user, organization=tenant.org, role=Membership.Role.MEMBER)
    page = Client()
    page.force_login(user)
    return page


def run_polling(
    api: Any, tenant: Any, monkeypatch: pytest.MonkeyPatch, page: Client | None = None
) -> tuple[int, list[dict]]:
    """Submit a 64x64, 21-step job and run it, polling the formats (and the playground's
    JSON, given a `page`) after each step."""
    import generation.tasks as tasks
    from generation.engine import runner

    monkeypatch.setattr(tasks, "PROGRESS_WRITE_INTERVAL", 0)
    status, data = api.post(
        "/api/v3/text2img", {"key": tenant.key, "prompt": "a boat", "width": 64, "height": 64}
    )
    assert status == 200 and data["status"] == "processing", data
    job_id = data["id"]
    real_generate = runner.generate
    polls: list[dict] = []

    def generate_and_poll(req, model, *, progress=None, **kw):
        def progress_then_poll(step: int, total: int) -> None:
            progress(step, total)
            # The clients poll while the worker is between two denoising steps.
            poll = {
                "step": step,
                "fetch": api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})[1],
                "a1111": api.get("/sdapi/v1/progress", **basic(tenant.key))[1],
                "skipped": api.get(
                    "/sdapi/v1/progress?skip_current_image=true", **basic(tenant.key)
                )[1],
            }
            if page is not None:
                poll["playground"] = page.get(f"/app/playground/jobs/{job_id}/").json()
            polls.append(poll)

        return real_generate(req, model, progress=progress_then_poll, **kw)

    monkeypatch.setattr(runner, "generate", generate_and_poll)
    run_next_job()
    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCESS
    return job_id, polls


def test_it_shows_a_preview_every_n_steps_while_the_job_runs(
    api, tenant, demo_model, no_wait, settings, monkeypatch
) -> None:
    settings.PICTOR_PREVIEW_EVERY = 5
    settings.PICTOR_PREVIEW_DECODER = ""
    page = member_page(tenant)
    assert 'id="preview"' in page.get("/app/playground/").content.decode()

    job_id, polls = run_polling(api, tenant, monkeypatch, page)

    assert len(polls) == 21
    before = [p for p in polls if p["step"] < 5]
    assert all("preview" not in p["fetch"] for p in before)
    assert all(p["a1111"]["current_image"] is None for p in before)
    assert all("preview" not in p["playground"] for p in before)
    after = [p for p in polls if 5 <= p["step"]]
    for poll in after:
        assert poll["fetch"]["status"] == "processing"
        # Both formats show the same, latest picture; the linear approximation keeps the
        # latents' size, 64 / 8.
        assert poll["a1111"]["current_image"] == poll["fetch"]["preview"]
        assert poll["playground"]["preview"] == poll["fetch"]["preview"]
        assert image_of(poll["fetch"]["preview"]).size == (8, 8)
        assert poll["skipped"]["current_image"] is None
    # A new picture at steps 5, 10, 15 and 20.
    assert len({p["fetch"]["preview"] for p in after}) == 4

    # The job has ended: its preview is gone, from the cache and from the answers.
    assert previews.latest(job_id) is None
    status, done = api.post(f"/api/v3/fetch/{job_id}", {"key": tenant.key})
    assert done["status"] == "success" and "preview" not in done
    assert api.get("/sdapi/v1/progress", **basic(tenant.key))[1]["current_image"] is None


def test_it_previews_with_the_configured_tiny_decoder(
    api, tenant, demo_model, no_wait, settings, monkeypatch, tmp_path: Path
) -> None:
    decoder = tmp_path / "demo-taesd"
    build_demo_decoder(str(decoder))
    settings.PICTOR_PREVIEW_EVERY = 10
    settings.PICTOR_PREVIEW_DECODER = str(decoder)

    _job_id, polls = run_polling(api, tenant, monkeypatch)

    shown = [p["fetch"]["preview"] for p in polls if "preview" in p["fetch"]]
    # From step 10 (step 21's poll still shows step 20's); the decoder gives the image's size.
    assert len(shown) == 12
    assert image_of(shown[0]).size == (64, 64)


def test_no_preview_when_previews_are_off(
    api, tenant, demo_model, no_wait, settings, monkeypatch
) -> None:
    settings.PICTOR_PREVIEW_EVERY = 0

    job_id, polls = run_polling(api, tenant, monkeypatch)

    assert all("preview" not in p["fetch"] for p in polls)
    assert all(p["a1111"]["current_image"] is None for p in polls)
    assert all(p["a1111"]["state"]["sampling_steps"] == 21 for p in polls)
