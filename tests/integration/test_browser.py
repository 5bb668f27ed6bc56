"""The pages in a real browser (Debian's chromium via Playwright) on a real stack.

gunicorn, a worker, PostgreSQL, Redis and S3 (moto) run as in test_stack.py; emails are
written to files (Django's file backend) and read back from there. One journey: sign up, verify
the email by its link, create a key (shown once), use it on the API, generate in the playground
with the progress bar moving, find the job in history and usage; then a second tenant and staff.
Every page is photographed at desktop and phone width under the test's temporary folder (and
copied to PICTOR_SCREENSHOT_DIR when set), and must raise no browser error.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import dump_logs

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "a-long-browser-password-7"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Visitor:
    """One person's browser: a context of their own, with every browser error collected."""

    def __init__(self, browser: Any, base_url: str, shots: Path, name: str, **options: Any) -> None:
        self.context = browser.new_context(base_url=base_url, viewport=DESKTOP, **options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        self.shots = shots
        self.name = name

    def open(self, path: str) -> Any:
        response = self.page.goto(path)
        self.page.wait_for_load_state("networkidle")
        return response

    def photograph(self, label: str) -> None:
        """Desktop and phone screenshots; on a phone the page must not scroll sideways."""
        self.page.screenshot(path=self.shots / f"{self.name}-{label}.png", full_page=True)
        self.page.set_viewport_size(PHONE)
        overflow = self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        self.page.screenshot(path=self.shots / f"{self.name}-{label}-phone.png", full_page=True)
        self.page.set_viewport_size(DESKTOP)
        assert overflow <= 0, f"{label} scrolls sideways on a phone by {overflow}px"

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    keep = os.environ.get("PICTOR_SCREENSHOT_DIR")
    if keep:
        shutil.copytree(folder, keep, dirs_exist_ok=True)


def mailed_link(mailbox: Path, to: str, path: str) -> str:
    """The newest link to `path` in an email to `to` that the web server wrote to `mailbox`."""
    links = []
    for file in sorted(mailbox.glob("*.log"), key=lambda f: f.stat().st_mtime):
        for message in file.read_text().split("-" * 79):
            if re.search(rf"^To: {re.escape(to)}$", message, re.MULTILINE):
                links += re.findall(rf"https?://\S+{re.escape(path)}[^\s/]+/", message)
    assert links, f"no email to {to} with a {path} link in {mailbox}"
    return links[-1]


def sign_up(visitor: Visitor, mailbox: Path, email: str, organization: str) -> None:
    """Sign up, land on "check your email", then follow the emailed link to the keys page."""
    visitor.open("/accounts/signup/")
    visitor.page.fill("#id_email", email)
    visitor.page.fill("#id_password", PASSWORD)
    visitor.page.fill("#id_organization", organization)
    visitor.page.click("button[type=submit]")
    visitor.page.wait_for_url("**/accounts/verify/")
    assert "Check your email" in visitor.page.inner_text("main")
    # Before the link: no key can be made, the keys page says to check the email.
    visitor.open("/app/keys/")
    assert visitor.page.locator("#key-name").count() == 0
    assert "Send the link again" in visitor.page.inner_text("main")
    visitor.open(mailed_link(mailbox, email, "/accounts/verify/"))
    visitor.page.wait_for_url("**/app/keys/")


@contextmanager
def signed_up_member(
    make_stack: Callable[..., Any],
    visitor_on: Callable[[str], Visitor],
    mailbox: Path,
    email: str,
    organization: str,
    **settings: str,
) -> Iterator[tuple[Any, Visitor]]:
    """A stack that mails into `mailbox`, and a visitor on it signed up as `email`.

    `settings` go to the stack; its logs are printed when the body fails, and the page must
    have logged no error by the end.
    """
    stack = make_stack(
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(mailbox),
        **settings,
    )
    visitor = visitor_on(stack.base_url)
    try:
        sign_up(visitor, mailbox, email, organization)
        yield stack, visitor
    except Exception:
        print(dump_logs(stack))
        raise
    finally:
        visitor.close()
    assert not visitor.errors, visitor.errors


def test_a_new_tenant_signs_up_generates_and_sees_it(make_stack, browser, shots, tmp_path):
    mailbox = tmp_path / "mail"
    stack = make_stack(
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(mailbox),
    )
    base = stack.base_url
    ada = Visitor(browser, base, shots, "ada")
    try:
        journey(stack, ada, browser, shots, mailbox)
    except Exception:
        print(dump_logs(stack))
        raise
    finally:
        ada.close()


def journey(stack: Any, ada: Visitor, browser: Any, shots: Path, mailbox: Path) -> None:
    base = stack.base_url
    page = ada.page
    ada.open("/accounts/signup/")
    ada.photograph("signup")
    sign_up(ada, mailbox, "ada@example.com", "Analytical Engines")
    assert "Your email is verified" in page.inner_text("ul.messages")
    assert "Free plan with 100 credits" in page.inner_text("ul.messages")

    # A key, shown once.
    page.fill("#key-name", "laptop")
    page.click("text=Create key")
    page.wait_for_selector("[data-testid=new-key]")
    key = page.inner_text("[data-testid=new-key]").strip()
    assert key.startswith("pct_")
    ada.photograph("keys-new")
    ada.open("/app/keys/")
    assert key not in page.content()
    assert key[:12] in page.content()

    # The key works on the API.
    response = requests.post(
        base + "/api/v3/text2img",
        json={"key": key, "prompt": "a paper lantern", "width": 128, "height": 128},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    api_job = response.json()["id"]

    # The playground: progress moves from 0 to 100, then the image shows.
    ada.open("/app/playground/")
    page.fill("#prompt", "a lighthouse in the fog")
    page.select_option("#width", "128")
    page.select_option("#height", "128")
    page.fill("#seed", "42")
    assert '"seed":42' in page.inner_text("#curl")
    page.evaluate(
        """() => {
            window.progressSeen = [];
            const bar = document.getElementById("progress");
            new MutationObserver(() => window.progressSeen.push(bar.value))
                .observe(bar, {attributes: true});
        }"""
    )
    page.click("#generate")
    page.wait_for_selector("#images img", timeout=90_000)
    page.wait_for_function("document.querySelector('#images img').naturalWidth > 0")
    assert page.evaluate("document.querySelector('#images img').naturalWidth") == 128
    seen = page.evaluate("window.progressSeen")
    assert seen and seen[-1] == 100, seen
    assert min(seen) < 100, seen
    assert "Done in" in page.inner_text("#status")
    ada.photograph("playground")
    playground_job = int(re.search(r"/(\d+)/0\.png", page.get_attribute("#images img", "src"))[1])

    # History and usage show both jobs.
    ada.open("/app/history/")
    rows = page.inner_text("[data-testid=gallery]")
    assert "a lighthouse in the fog" in rows and "a paper lantern" in rows
    page.wait_for_function(
        "[...document.querySelectorAll('.thumbs img')].some(i => i.naturalWidth > 0)"
    )
    ada.photograph("history")
    ada.open("/app/usage/")
    assert page.inner_text("[data-testid=images-total]") == "2"
    ada.photograph("usage")
    for path, label in (
        ("/app/", "overview"),
        ("/app/billing/", "billing"),
        ("/app/team/", "team"),
        ("/app/settings/", "settings"),
        ("/accounts/password/", "password-change"),
        ("/accounts/", "account"),
    ):
        ada.open(path)
        ada.photograph(label)
    assert "Analytical Engines" in page.inner_text("main")  # the account page names it

    # Ada invites Carol; the emailed link lets Carol sign up with that address and join, which
    # proves her address without the sign-up's own link.
    ada.open("/app/team/")
    page.fill("#invite-email", "carol@example.com")
    page.click("text=Send invitation")
    page.wait_for_selector("text=Invitation sent to carol@example.com")
    link = mailed_link(mailbox, "carol@example.com", "/accounts/invite/")
    carol = Visitor(browser, base, shots, "carol")
    try:
        carol.open(link)
        carol.photograph("invitation")
        carol.page.click("text=Sign up to accept")
        assert carol.page.input_value("#id_email") == "carol@example.com"
        carol.page.fill("#id_password", PASSWORD)
        carol.page.fill("#id_organization", "Carol Co")
        carol.page.click("button[type=submit]")
        carol.page.wait_for_url("**/accounts/invite/**")
        carol.page.click('button:has-text("Join Analytical Engines")')
        carol.page.wait_for_load_state("networkidle")
        assert carol.page.url.endswith("/app/"), (carol.page.url, carol.page.inner_text("main"))
        assert "Analytical Engines" in carol.page.inner_text("h1")
        carol.open("/app/keys/")
        assert carol.page.locator("#key-name").count() == 1
        carol.open("/app/history/")
        assert "a lighthouse in the fog" in carol.page.content()
        assert carol.errors == [], carol.errors
    finally:
        carol.close()

    # Another tenant sees neither job, and cannot open /ops/.
    bob = Visitor(browser, base, shots, "bob")
    try:
        sign_up(bob, mailbox, "bob@example.com", "Babbage Ltd")
        for job_id in (api_job, playground_job):
            response = bob.open(f"/app/playground/jobs/{job_id}/")
            assert response.status == 404
        bob.open("/app/history/")
        assert "a lighthouse in the fog" not in bob.page.content()
        assert bob.open("/ops/").status == 403
        bob.errors = [e for e in bob.errors if "404" not in e and "403" not in e]
        assert bob.errors == [], bob.errors
        bob.context.clear_cookies()
        bob.open("/accounts/password/reset/")
        bob.photograph("password-reset")
    finally:
        bob.close()

    # Staff see the dashboard: the worker is alive and holds the demo model.
    stack.manage("createsuperuser", "--noinput", "--email", "ops@example.com")
    stack.manage(
        "shell",
        "-c",
        "from accounts.models import User; u = User.objects.get(email='ops@example.com'); "
        f"u.set_password('{PASSWORD}'); u.save()",
    )
    staff = Visitor(browser, base, shots, "staff")
    try:
        staff.open("/accounts/login/")
        staff.photograph("login")
        staff.page.fill("#id_username", "ops@example.com")
        staff.page.fill("#id_password", PASSWORD)
        staff.page.click("button[type=submit]")
        staff.page.wait_for_load_state("networkidle")
        assert staff.open("/ops/").status == 200
        text = staff.page.inner_text("main")
        assert "alive" in text and "demo-sd15" in text
        assert "analytical-engines" in text
        staff.photograph("ops")
        # Staff open any organization's job, in the admin.
        assert staff.open(f"/admin/generation/job/{playground_job}/change/").status == 200
        assert "a lighthouse in the fog" in staff.page.content()
        staff.photograph("admin-job")
        staff.open("/admin/accounts/organization/")
        staff.photograph("admin-organizations")
        assert staff.open("/api/docs/").status == 200
        staff.page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        staff.photograph("api-docs")
        assert staff.errors == [], staff.errors
    finally:
        staff.close()
    assert ada.errors == [], ada.errors
