"""The playground in a real browser (Debian's chromium via Playwright) on a real stack.

A Free-plan member (10 requests a minute) watches a job for more polls than that budget and
sees it succeed; then inpaints with a mask painted by dragging the mouse over the picture.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.integration.conftest import dump_logs
from tests.integration.test_browser import Visitor, browser, sign_up  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration

FREE_REQUESTS_PER_MINUTE = 10
JOB_POLL = "/app/playground/jobs/"


@pytest.fixture
def member(make_stack: Any, browser: Any, tmp_path: Path) -> Any:  # noqa: F811
    """A stack and a signed-up Free-plan member's browser on it."""
    mailbox = tmp_path / "mail"
    stack = make_stack(
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(mailbox),
    )
    shots = tmp_path / "shots"
    shots.mkdir()
    visitor = Visitor(browser, stack.base_url, shots, "member")
    polls: list[tuple[str, int]] = []
    visitor.page.on(
        "response",
        lambda response: (
            polls.append((response.url, response.status)) if JOB_POLL in response.url else None
        ),
    )
    try:
        sign_up(visitor, mailbox, "grace@example.com", "Hopper Labs")
        assert "Free plan" in visitor.page.inner_text("ul.messages")
        yield stack, visitor, polls
    except Exception:
        print(dump_logs(stack))
        raise
    finally:
        visitor.close()
    assert not visitor.errors, visitor.errors


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


def test_a_member_inpaints_with_a_mask_drawn_on_the_picture(member, tmp_path):
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
