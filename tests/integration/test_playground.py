"""The playground in a real browser (Debian's chromium via Playwright) on a real stack.

A Free-plan member (10 requests a minute) watches a job for more polls than that budget and
sees it succeed. Then one journey: the member inpaints with a mask painted by dragging the mouse
over the picture, finds the job in the history gallery, opens it in the lightbox, downloads its
zip (the PNGs are counted), copies the webhook secret on the settings page and sends a test ping
to a receiver on 127.0.0.1, which the delivery log shows delivered and the receiver got signed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from standardwebhooks.webhooks import Webhook

from tests.integration.cluster import WebhookReceiver
from tests.integration.conftest import dump_logs
from tests.integration.test_browser import browser, signed_up_member  # noqa: F401  (a fixture)
from tests.integration.test_gallery_browser import GalleryVisitor, zip_pngs
from tests.processes import wait_until

pytestmark = pytest.mark.integration

FREE_REQUESTS_PER_MINUTE = 10
JOB_POLL = "/app/playground/jobs/"
# A worker sends the test ping; on a busy machine it may take a while to get to it.
PING_BOUND_S = 60


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1 that answers 200 and records every request."""
    listener = WebhookReceiver("127.0.0.1")
    yield listener
    listener.close()


@pytest.fixture
def member(make_stack: Any, browser: Any, tmp_path: Path, receiver: WebhookReceiver) -> Any:  # noqa: F811
    """A stack whose webhooks may reach `receiver`, and a signed-up Free-plan member's browser."""
    shots = tmp_path / "shots"
    shots.mkdir()
    polls: list[tuple[str, int]] = []

    def visitor_on(base_url: str) -> GalleryVisitor:
        visitor = GalleryVisitor(browser, base_url, shots)
        visitor.page.on(
            "response",
            lambda response: (
                polls.append((response.url, response.status)) if JOB_POLL in response.url else None
            ),
        )
        return visitor

    with signed_up_member(
        make_stack,
        visitor_on,
        tmp_path / "mail",
        "grace@example.com",
        "Hopper Labs",
        PICTOR_FETCH_ALLOWED_NETWORKS="127.0.0.1/32",
        PICTOR_FETCH_ALLOWED_PORTS=f"80,443,{receiver.port}",
    ) as (stack, visitor):
        assert "Free plan" in visitor.page.inner_text("ul.messages")
        yield stack, visitor, polls


def stop_worker(stack: Any) -> None:
    worker = stack.processes.pop("worker")
    worker.terminate()
    worker.wait(timeout=60)


def test_a_free_member_watches_a_job_past_the_minutes_requests_and_sees_it_succeed(member):
    stack, visitor, polls = member
    page = visitor.page
    # No worker for now: the job waits in the queue while the page polls it.
    stop_worker(stack)
    visitor.open("/app/playground/")
    page.fill("#prompt", "a lighthouse at dusk")
    page.select_option("#width", "128")
    page.select_option("#height", "128")
    page.fill("#seed", "7")
    assert '"seed":7' in page.inner_text("#curl")
    assert "requests.post(" in page.inner_text("#python")
    assert "/sdapi/v1/txt2img" in page.inner_text("#other-formats")
    page.click("#generate")
    page.wait_for_selector("#result[data-state=queued]", timeout=30_000)
    assert "Queued" in page.inner_text("#status")
    enough = FREE_REQUESTS_PER_MINUTE + 5
    page.wait_for_selector(f"#job-line:has-text('· {enough} polls')", timeout=60_000)
    stack.start_worker()
    page.wait_for_selector("#images img", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#images img').naturalWidth > 0")
    assert page.evaluate("document.querySelector('#images img').naturalWidth") == 128
    assert "Succeeded" in page.inner_text("#status")
    assert len(polls) > FREE_REQUESTS_PER_MINUTE
    assert {status for _url, status in polls} == {200}, polls

    # The member can still generate: the polls used none of the minute's requests.
    page.fill("#seed", "8")
    page.click("#generate")
    page.wait_for_selector("#result[data-state=success]", timeout=120_000)


def test_a_member_inpaints_finds_it_in_the_gallery_downloads_it_and_pings_a_webhook(
    member, receiver, tmp_path
):
    stack, visitor, _polls = member
    page = visitor.page
    picture = tmp_path / "picture.png"
    buffer = io.BytesIO()
    Image.new("RGB", (128, 128), (40, 120, 200)).save(buffer, format="PNG")
    picture.write_bytes(buffer.getvalue())

    visitor.open("/app/playground/")
    page.check("input[name=kind][value=inpaint]")
    assert page.is_visible("#mask-editor")
    assert not page.is_visible("#upscaler")
    page.set_input_files("#init_file", str(picture))
    page.wait_for_selector("#mask-canvas[width='128']")
    page.fill("#prompt", "a red door")
    page.select_option("#width", "128")
    page.select_option("#height", "128")

    # Submitting without a mask is stopped in the page.
    page.click("#generate")
    assert "Paint the area" in page.inner_text("#status")

    canvas = page.locator("#mask-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.7, steps=8)
    page.mouse.up()
    mask = page.input_value("#mask_image")
    assert mask.startswith("data:image/png;base64,")
    assert "/api/v3/inpaint" in page.inner_text("#curl")
    assert "your-mask.png" in page.inner_text("#curl")

    page.click("#generate")
    page.wait_for_selector(
        "#result[data-state=success], #result[data-state=failed], #result[data-state=error]",
        timeout=120_000,
    )
    assert "Succeeded" in page.inner_text("#status"), page.inner_text("#status")
    page.wait_for_function("() => document.querySelector('#images img').naturalWidth > 0")
    job_id = int(page.inner_text("#job-line").split()[1])
    kind = stack.sql("SELECT kind FROM generation_job WHERE id = %s", job_id)
    assert kind == ("inpaint",)
    (images,) = stack.sql("SELECT count(*) FROM generation_outputimage WHERE job_id = %s", job_id)
    assert images == page.locator("#images img").count() >= 1

    # The history gallery has the job; the lightbox shows its prompt and kind.
    visitor.open("/app/history/")
    job = page.locator(f'article[data-job="{job_id}"]')
    assert job.locator("button.open").count() == images
    assert "a red door" in job.inner_text()
    job.locator("button.open").first.click()
    page.wait_for_selector("#lightbox[open]")
    assert page.inner_text("#lb-title").startswith(f"Job {job_id} · image 1")
    assert page.inner_text("#lb-prompt") == "a red door"
    names = page.locator("#lb-params dt").all_inner_texts()
    values = page.locator("#lb-params dd").all_inner_texts()
    shown = dict(zip(names, values, strict=True))
    assert (shown["kind"], shown["size"]) == ("inpaint", "128×128"), shown
    page.wait_for_function("document.getElementById('lb-img').naturalWidth === 128")
    page.keyboard.press("Escape")
    page.wait_for_selector("#lightbox:not([open])", state="attached")

    # The job's zip holds exactly its images, as PNGs.
    with page.expect_download() as info:
        job.locator('a:has-text("Zip")').click()
    assert info.value.suggested_filename == f"pictor-job-{job_id}.zip"
    assert len(zip_pngs(info.value)) == images

    # Settings: the secret's copy button puts the secret itself on the clipboard.
    visitor.open("/app/settings/")
    secret = page.inner_text("[data-testid=webhook-secret]").strip()
    page.click('button[data-copy-target="webhook-secret"]')
    page.wait_for_selector('button[data-copy-target="webhook-secret"][data-copied=true]')
    assert visitor.clipboard() == secret

    # A test ping to the receiver; a worker sends it, so the page is reloaded until it is done.
    page.fill("#ping-url", receiver.url("journey"))
    page.click("[data-testid=ping-form] button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "Test ping sent" in page.inner_text("ul.messages")
    row = page.locator("[data-testid=webhook-log] tr[data-delivery]")

    def delivered() -> bool:
        visitor.open("/app/settings/")
        return row.first.locator("[data-testid=delivery-status]").inner_text() == "delivered"

    wait_until(delivered, PING_BOUND_S, "the test ping", logs=lambda: dump_logs(stack))
    assert row.count() == 1
    assert "test ping" in row.inner_text()
    assert row.locator("[data-testid=delivery-attempts]").inner_text() == "1"
    assert row.locator("[data-testid=delivery-code]").inner_text() == "HTTP 200"

    # The receiver got one request, signed with the secret the page showed.
    [delivery] = receiver.by_path()["journey"]
    payload = Webhook(secret).verify(delivery.body, delivery.headers)
    assert payload["event"] == "ping"
    (slug,) = stack.sql(
        "SELECT o.slug FROM generation_job j JOIN accounts_organization o"
        " ON o.id = j.organization_id WHERE j.id = %s",
        job_id,
    )
    assert payload["organization"] == slug
    assert delivery.headers["webhook-id"] in row.inner_text()
