"""The history gallery in a real browser (Debian's chromium via Playwright) on a real stack.

gunicorn, a worker, PostgreSQL, Redis and S3 (moto) run as in test_stack.py. Jobs are
generated through the API; a member opens the history, walks the lightbox with the keyboard,
copies a seed, downloads a job's zip and a selection's zip (the PNGs are counted), and copies a
new key. Then every page is photographed at 1280 and 390 px: no page may log a browser error,
and at 390 px none may be wider than the screen. Screenshots go to the test's temporary folder
(copied to PICTOR_SCREENSHOT_DIR when set).
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import dump_logs
from tests.integration.test_browser import (  # noqa: F401  (browser and shots are fixtures)
    PHONE,
    Visitor,
    browser,
    shots,
)

pytestmark = pytest.mark.integration

PASSWORD = "a-long-gallery-password-7"
# Every page a member of an organization sees, and those a visitor sees before logging in.
MEMBER_PAGES = (
    ("/app/", "overview"),
    ("/app/playground/", "playground"),
    ("/app/history/", "history"),
    ("/app/usage/", "usage"),
    ("/app/keys/", "keys"),
    ("/app/team/", "team"),
    ("/app/settings/", "settings"),
    ("/app/billing/", "billing"),
    ("/accounts/", "account"),
    ("/accounts/password/", "password-change"),
)
VISITOR_PAGES = (
    ("/accounts/login/", "login"),
    ("/accounts/signup/", "signup"),
    ("/accounts/password/reset/", "password-reset"),
)


class GalleryVisitor(Visitor):
    """A visitor whose downloads are kept and whose page may read the clipboard."""

    def __init__(self, chromium: Any, base_url: str, folder: Path) -> None:
        super().__init__(chromium, base_url, folder, "gallery", accept_downloads=True)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)

    def clipboard(self) -> str:
        return self.page.evaluate("navigator.clipboard.readText()")


def wait_for_success(stack: Any, job_id: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        data = stack.post(f"/api/v3/fetch/{job_id}", {}).json()
        if data["status"] == "success":
            return
        assert data["status"] in ("processing", "queued"), data
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish")


def zip_pngs(download: Any) -> list[str]:
    """The PNG files in a downloaded zip (each one opened to check it is a PNG)."""
    from PIL import Image

    data = Path(download.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        for name in names:
            assert Image.open(io.BytesIO(archive.read(name))).format == "PNG"
    return [n for n in names if n.endswith(".png")]


def test_the_gallery_lightbox_downloads_and_copy_buttons(make_stack, browser, shots):  # noqa: F811
    stack = make_stack()
    visitor = GalleryVisitor(browser, stack.base_url, shots)
    try:
        gallery_journey(stack, visitor)
    except Exception:
        print(dump_logs(stack))
        raise
    finally:
        visitor.close()


def gallery_journey(stack: Any, visitor: Visitor) -> None:
    page = visitor.page
    # Two jobs of two images each, through the API.
    jobs = []
    for prompt, seed in (("a red kite over dunes", 1000), ("a blue heron at dawn", 2000)):
        response = stack.post(
            "/api/v3/text2img",
            {"prompt": prompt, "width": 64, "height": 64, "samples": 2, "seed": seed},
        )
        assert response.status_code == 200, response.text
        jobs.append(response.json()["id"])
    for job_id in jobs:
        wait_for_success(stack, job_id)

    # A member of the stack's organization logs in.
    stack.manage(
        "shell",
        "-c",
        "from django.utils import timezone; from accounts.models import Membership, User; "
        "from accounts.models import Organization; "
        f"u = User.objects.create_user('gil@example.com', '{PASSWORD}', "
        "email_verified_at=timezone.now()); "
        "Membership.objects.create(user=u, organization=Organization.objects.get(slug='it'), "
        "role=Membership.Role.OWNER)",
    )
    for path, label in VISITOR_PAGES:
        assert visitor.open(path).status == 200
        visitor.photograph(label)
    visitor.open("/accounts/login/")
    page.fill("#id_username", "gil@example.com")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")

    # The gallery: four thumbnails, newest job first.
    visitor.open("/app/history/")
    assert page.locator("button.open").count() == 4
    page.wait_for_function(
        "[...document.querySelectorAll('button.open img')].every(i => i.naturalWidth > 0)"
    )
    title = page.locator("#lb-title")
    page.click('button.open[data-position="0"]')
    page.wait_for_selector("#lightbox[open]")
    assert re.search(rf"Job {jobs[1]} · image 1 \(1 of 4\)", title.inner_text())
    assert "a blue heron at dawn" in page.inner_text("#lb-prompt")
    assert page.inner_text("#lb-seed") == "2000"
    page.wait_for_function("document.getElementById('lb-img').naturalWidth === 64")
    visitor.photograph("lightbox")
    page.keyboard.press("ArrowRight")
    assert "(2 of 4)" in title.inner_text()
    assert page.inner_text("#lb-seed") == "2001"
    page.keyboard.press("ArrowRight")
    assert "a red kite over dunes" in page.inner_text("#lb-prompt")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert "(4 of 4)" in title.inner_text()  # it wraps around
    assert page.inner_text("#lb-seed") == "1001"
    params = page.inner_text("#lb-params")
    assert "demo-sd15" in params and "64×64" in params
    assert page.get_attribute("#lb-use", "href") == f"/app/playground/?from={jobs[0]}"

    # The seed's copy button: the clipboard holds the seed, the button says so.
    page.click("#lb-seed-copy")
    page.wait_for_selector("#lb-seed-copy[data-copied=true]")
    assert page.inner_text("#lb-seed-copy") == "Copied"
    assert visitor.clipboard() == "1001"

    # Escape closes it.
    page.keyboard.press("Escape")
    page.wait_for_selector("#lightbox:not([open])", state="attached")
    assert not page.evaluate("document.getElementById('lightbox').open")

    # A job's zip, then a selection of three images across both jobs.
    with page.expect_download() as info:
        page.click(f'article[data-job="{jobs[0]}"] a:has-text("Zip")')
    assert info.value.suggested_filename == f"pictor-job-{jobs[0]}.zip"
    assert len(zip_pngs(info.value)) == 2
    boxes = page.locator('input[type=checkbox][form="selection"]')
    for n in (0, 1, 3):
        boxes.nth(n).check()
    assert page.inner_text("#selection-count") == "3 images selected."
    with page.expect_download() as info:
        page.click("#zip-selection")
    names = zip_pngs(info.value)
    assert len(names) == 3
    assert sum(name.startswith(f"job-{jobs[1]}-") for name in names) == 2

    # "Use these settings" opens the playground with the job's prompt.
    page.click('button.open[data-position="2"]')
    page.click("#lb-use")
    page.wait_for_url(f"**/app/playground/?from={jobs[0]}")
    assert page.input_value("#prompt") == "a red kite over dunes"

    # A new key: its copy button puts the key itself on the clipboard.
    visitor.open("/app/keys/")
    page.fill("#key-name", "gallery")
    page.click("text=Create key")
    page.wait_for_selector("[data-testid=new-key]")
    key = page.inner_text("[data-testid=new-key]").strip()
    page.click('button[data-copy-target="new-key"]')
    page.wait_for_selector('button[data-copy-target="new-key"][data-copied=true]')
    assert visitor.clipboard() == key
    assert requests.post(
        stack.base_url + "/api/v1/account", json={"key": key}, timeout=30
    ).status_code in (200, 405)
    visitor.photograph("keys-new")

    # Every page, at desktop and phone width: the list above and whatever the menu links to.
    pages = dict(MEMBER_PAGES)
    for href in page.eval_on_selector_all("header nav a", "els => els.map(a => a.pathname)"):
        pages.setdefault(href, href.strip("/").replace("/", "-") or "home")
    for path, label in pages.items():
        assert visitor.open(path).status == 200, path
        visitor.photograph(label)
    assert visitor.errors == [], visitor.errors
