"""Sample images of checkpoints on the models page: queued once, made once, private."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from PIL import Image

from billing.models import CreditEntry
from generation import model_samples
from generation.models import AIModel, Job
from tests.helpers import private_copy

pytestmark = pytest.mark.django_db(transaction=True)

CHECKPOINTS = {"demo-sd15": 128, "demo-sd15-inpaint": 128, "demo-sd15-lcm": 128, "demo-sdxl": 256}


def models_page(client: Any, user: Any) -> str:
    client.force_login(user)
    response = client.get("/app/models/")
    assert response.status_code == 200
    return response.content.decode()


def row(page: str, model_id: str) -> str:
    """The table row of one model on the page."""
    found = re.search(rf'<tr data-model="{re.escape(model_id)}">(.*?)</tr>', page, re.DOTALL)
    assert found, f"no row for {model_id}"
    return found.group(1)


def sample_src(page: str, model_id: str) -> str:
    found = re.search(r'<img class="sample" src="([^"]+)"', row(page, model_id))
    assert found, f"no sample image for {model_id}"
    return found.group(1).replace("&amp;", "&")


def queued_tasks() -> list[dict[str, Any]]:
    return [entry.task for entry in OrmQ.objects.all()]


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_the_first_view_queues_each_sample_once_and_a_worker_makes_it(
    client, people, demo_models, media_dir
):
    credits = CreditEntry.objects.count()
    page = models_page(client, people.owner)
    tasks = queued_tasks()
    assert sorted(t["func"] for t in tasks) == [model_samples.SAMPLE_TASK] * len(CHECKPOINTS)
    ids = {AIModel.objects.get(pk=t["args"][0]).model_id for t in tasks}
    assert ids == set(CHECKPOINTS)
    for model_id in CHECKPOINTS:
        assert "sample pending" in row(page, model_id)
    # An add-on has no sample, not even a placeholder.
    assert "sample" not in row(page, "demo-lora-a")

    # Claimed: neither a second view nor another member's queues anything more.
    models_page(client, people.owner)
    models_page(client, people.member)
    assert len(queued_tasks()) == len(CHECKPOINTS)

    # The worker's side: each queued task makes its model's sample with the engine.
    for task in tasks:
        assert model_samples.make_sample(*task["args"]) == "ready"
    OrmQ.objects.all().delete()  # taken by the worker

    page = models_page(client, people.member)
    assert not OrmQ.objects.exists()
    for model_id, side in CHECKPOINTS.items():
        model = AIModel.objects.get(model_id=model_id)
        assert model.sample_state == AIModel.SampleState.READY
        stored = (media_dir / model.sample_path).read_bytes()
        assert png(stored).size == (side, side)
        response = client.get(sample_src(page, model_id))
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png"
        assert response.getvalue() == stored
    assert 'alt="Sample image made with demo-sd15"' in page
    # Nobody's job, nobody's credits.
    assert not Job.objects.exists()
    assert CreditEntry.objects.count() == credits


def test_a_failed_sample_is_recorded_and_not_tried_again(
    client, people, demo_model, media_dir, sync_queue
):
    AIModel.objects.create(model_id="broken", name="broken", path="no-such-folder")
    # Tasks run inline: the view queues, the worker's task runs, the page shows the result.
    page = models_page(client, people.owner)
    broken = AIModel.objects.get(model_id="broken")
    assert broken.sample_state == AIModel.SampleState.FAILED
    assert broken.sample_error and broken.sample_attempts == 1
    assert "no sample" in row(page, "broken")
    assert png(client.get(sample_src(page, "demo-sd15")).getvalue()).size == (128, 128)

    page = models_page(client, people.owner)
    again = AIModel.objects.get(model_id="broken")
    assert (again.sample_state, again.sample_attempts, again.sample_at) == (
        AIModel.SampleState.FAILED,
        1,
        broken.sample_at,
    )
    assert "no sample" in row(page, "broken")
    # A task of that claim delivered twice does nothing either.
    assert model_samples.make_sample(broken.pk, 1) == "gone"


def test_a_claim_whose_task_was_lost_is_queued_again_then_given_up(
    client, people, demo_model, media_dir
):
    long_ago = timezone.now() - model_samples.stale_after() - timedelta(minutes=1)
    AIModel.objects.filter(pk=demo_model.pk).update(
        sample_state=AIModel.SampleState.PENDING, sample_attempts=1, sample_at=long_ago
    )
    models_page(client, people.owner)
    [task] = queued_tasks()
    assert tuple(task["args"]) == (demo_model.pk, 2)
    # The first claim's task, run late, is fenced off; the second one makes the sample.
    assert model_samples.make_sample(demo_model.pk, 1) == "gone"
    assert model_samples.make_sample(demo_model.pk, 2) == "ready"

    OrmQ.objects.all().delete()
    AIModel.objects.filter(pk=demo_model.pk).update(
        sample_state=AIModel.SampleState.PENDING,
        sample_attempts=model_samples.MAX_ATTEMPTS,
        sample_at=long_ago,
    )
    page = models_page(client, people.owner)
    assert not OrmQ.objects.exists()
    assert "no sample" in row(page, "demo-sd15")
    demo_model.refresh_from_db()
    assert demo_model.sample_state == AIModel.SampleState.FAILED
    assert "lost" in demo_model.sample_error


def test_another_organization_never_sees_a_private_models_sample(
    client, people, demo_model, media_dir, sync_queue, settings, tmp_path
):
    settings.PICTOR_MODEL_CACHE_DIR = tmp_path / "model-cache"  # the delete below clears it
    private = private_copy("demo-sd15", people.acme)
    page = models_page(client, people.owner)
    src = sample_src(page, private)
    model = AIModel.objects.get(model_id=private)
    assert model.sample_path == f"samples/{people.acme.pk}/{model.pk}.png"
    assert png(client.get(src).getvalue()).size == (128, 128)

    page = models_page(client, people.outsider)
    assert private not in page
    assert f"samples/{people.acme.pk}/" not in page
    assert f"samples%2F{people.acme.pk}" not in page
    sample_src(page, "demo-sd15")  # the shared model's sample is everyone's
    # Without its signature the stored name leads nowhere.
    assert client.get(f"/files/{model.sample_path}").status_code == 403

    # Deleting the model deletes its sample.
    client.force_login(people.owner)
    assert client.post(f"/app/models/{private}/delete/").status_code == 302
    assert not (media_dir / model.sample_path).exists()


def test_the_page_renders_while_redis_is_down_and_claims_nothing(
    client, people, demo_model, media_dir, dead_redis
):
    page = models_page(client, people.owner)
    assert "sample pending" in row(page, "demo-sd15")
    demo_model.refresh_from_db()
    assert (demo_model.sample_state, demo_model.sample_attempts) == (AIModel.SampleState.NONE, 0)


def test_samples_keep_their_size_on_a_phone(
    client, live_server, people, demo_models, media_dir, sync_queue, tmp_path: Path
):
    from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS, PHONE

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    AIModel.objects.create(model_id="broken", name="broken", path="no-such-folder")
    client.force_login(people.owner)
    session = client.cookies["sessionid"].value
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=live_server.url, viewport=PHONE)
            context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto("/app/models/")  # queues and (inline) makes the samples
            page.goto("/app/models/")
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"the models page scrolls sideways by {overflow}px"
            image = page.locator('tr[data-model="demo-sd15"] img.sample')
            image.scroll_into_view_if_needed()  # it loads lazily
            page.wait_for_function("i => i.complete", arg=image.element_handle())
            assert image.evaluate("i => i.naturalWidth") == 128
            page.screenshot(path=tmp_path / "models-phone.png", full_page=True)
            assert image.bounding_box()["width"] == 64
            none = page.locator('tr[data-model="broken"] .sample')
            assert none.inner_text() == "no sample"
            box = none.bounding_box()
            assert (box["width"], box["height"]) == (64, 64)
            assert not errors, errors
        finally:
            browser.close()
