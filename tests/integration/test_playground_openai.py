"""The playground's OpenAI SDK snippets, copied from the page and run with the `openai` package.

A Free-plan member makes a key, fills the playground for text2img and then for inpaint, and runs
each snippet as the page shows it (YOUR_API_KEY replaced, the image and mask files it opens
written beside it) against a real stack: each makes the job the page described, and what the
OpenAI routes cannot carry is named in a comment instead of being sent.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.integration.test_browser import Visitor, browser, signed_up_member  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration

SIDE = 128
SNIPPET = "#python-openai"


@pytest.fixture
def member(make_stack: Any, browser: Any, tmp_path: Path) -> Any:  # noqa: F811
    """A stack, a signed-up Free-plan member's browser on it and the member's new API key."""
    shots = tmp_path / "shots"
    shots.mkdir()
    with signed_up_member(
        make_stack,
        lambda base_url: Visitor(browser, base_url, shots, "member"),
        tmp_path / "mail",
        "katherine@example.com",
        "Johnson Orbits",
    ) as (stack, visitor):
        visitor.page.fill("#key-name", "sdk")
        visitor.page.click("text=Create key")
        visitor.page.wait_for_selector("[data-testid=new-key]")
        key = visitor.page.inner_text("[data-testid=new-key]").strip()
        yield stack, visitor, key


def run_snippet(snippet: str, key: str, folder: Path) -> list[str]:
    """Run a snippet with the `openai` package, as a user would; the URLs it printed."""
    assert "YOUR_API_KEY" in snippet
    script = folder / "snippet.py"
    script.write_text(snippet.replace("YOUR_API_KEY", key))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_openai_sdk_snippets_run_as_shown(member, tmp_path):
    stack, visitor, key = member
    page = visitor.page
    visitor.open("/app/playground/")
    page.fill("#prompt", "a lighthouse at dusk")
    page.select_option("#width", str(SIDE))
    page.select_option("#height", str(SIDE))
    snippet = page.inner_text(SNIPPET)
    assert f'OpenAI(base_url="{stack.base_url}/v1"' in snippet
    assert "client.images.generate(" in snippet
    # The Free plan's one step count is every quality's; the form's other fields all fit.
    assert f'size="{SIDE}x{SIDE}"' in snippet and 'quality="medium"' in snippet
    assert "Not in the OpenAI format" not in snippet
    page.fill("#negative_prompt", "fog")
    page.fill("#seed", "7")
    snippet = page.inner_text(SNIPPET)
    assert "defaults stand in: negative prompt, seed." in snippet

    [url] = run_snippet(snippet, key, tmp_path)
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200
    assert Image.open(io.BytesIO(answer.content)).size == (SIDE, SIDE)
    job = stack.sql(
        "SELECT kind, params->>'prompt', params->>'negative_prompt' FROM generation_job"
        " ORDER BY id DESC LIMIT 1"
    )
    assert job == ("text2img", "a lighthouse at dusk", "")

    # Inpaint: the snippet opens the image and the mask (transparent where to repaint).
    page.check("input[name=kind][value=inpaint]")
    picture = tmp_path / "picture.png"
    picture.write_bytes(png(Image.new("RGB", (SIDE, SIDE), (40, 120, 200))))
    page.set_input_files("#init_file", str(picture))
    page.fill("#prompt", "a red door")
    snippet = page.inner_text(SNIPPET)
    assert "client.images.edit(" in snippet and "strength" in snippet
    (tmp_path / "your-image.png").write_bytes(picture.read_bytes())
    mask = Image.new("RGBA", (SIDE, SIDE), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (32, 32, 96, 96))
    (tmp_path / "your-mask.png").write_bytes(png(mask))

    [url] = run_snippet(snippet, key, tmp_path)
    assert requests.get(url, timeout=30).status_code == 200
    job = stack.sql("SELECT kind, params->>'prompt' FROM generation_job ORDER BY id DESC LIMIT 1")
    assert job == ("inpaint", "a red door")
