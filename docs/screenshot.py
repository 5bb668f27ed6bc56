"""Retake docs/screenshot.png: an account's overview after three jobs, on a throwaway stack.

Run from the repository root with `.venv/bin/python docs/screenshot.py`. It needs Debian's
chromium at /usr/bin/chromium (never a downloaded browser) and nothing else running: SQLite, the
ORM broker and jobs run inside their request (PICTOR_Q_SYNC), all under a temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshot.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EMAIL, PASSWORD = "ada@example.com", "a-long-screenshot-password-7"


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def main() -> None:
    with tempfile.TemporaryDirectory() as var:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env |= {
            "PICTOR_VAR_DIR": var,
            "PICTOR_Q_SYNC": "true",
            "PICTOR_WARM_WORKERS": "false",
            "PICTOR_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": "1",
        }
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "createcachetable")
        manage(env, "build_demo_models")
        key = manage(env, "apikey", "create", "--org", "acme", "--plan", "premium").splitlines()[-1]
        manage(
            env,
            "shell",
            "-c",
            (
                "from accounts.models import User, Membership, Organization; "
                "from django.utils import timezone; "
                f"u = User.objects.create_user({EMAIL!r}, {PASSWORD!r}, "
                "email_verified_at=timezone.now()); "
                "Membership.objects.create(user=u, role='owner', "
                "organization=Organization.objects.get(slug='acme'))"
            ),
        )
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:sdplatform.gunicorn",
                "sdplatform.wsgi",
            ],
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    requests.get(base + "/healthz", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.5)
            for prompt in ("a paper lantern", "a red fox in snow"):
                requests.post(
                    base + "/api/v3/text2img",
                    timeout=120,
                    json={"key": key, "prompt": prompt, "width": 128, "height": 128},
                )
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
                )
                page = browser.new_page(base_url=base, viewport={"width": 1000, "height": 700})
                page.goto("/accounts/login/")
                page.fill("#id_username", EMAIL)
                page.fill("#id_password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_load_state("networkidle")
                page.goto("/app/playground/")
                page.fill("#prompt", "a lighthouse at dusk")
                page.select_option("#width", "128")
                page.select_option("#height", "128")
                page.fill("#seed", "42")
                page.click("#generate")
                page.wait_for_selector("#images img", timeout=120_000)
                page.goto("/app/")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=OUT)
                browser.close()
        finally:
            web.terminate()
            web.wait(30)
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
