"""The documentation holds together: links resolve, the README stays short and names every page.

The README is the front door and docs/ holds the rest; these checks keep a moved or renamed
page from leaving a dead link behind, and the README from growing back into a manual.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 9_000
SCREENSHOT_MAX_BYTES = 150_000

# [text](target) and ![alt](target), with an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# Written in two parts so that this file does not match itself.
STALE_POINTERS = ("DESIGN" + " section", "../" + "shared")


def markdown_pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def links(page: Path) -> list[str]:
    """The link targets of a Markdown page, code blocks and inline code left out."""
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    return LINK.findall(text)


def local_target(page: Path, target: str) -> Path | None:
    """The file a relative link points at (its #anchor dropped); None for URLs and anchors."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
        return None
    path = target.split("#", 1)[0].split("?", 1)[0]
    return (page.parent / path).resolve()


def repository_files() -> list[Path]:
    """Tracked files and new ones git does not ignore; every file but local state without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        return [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        skipped = {".git", ".venv", "var", "node_modules"}
        return [
            path
            for path in ROOT.rglob("*")
            if path.is_file() and not skipped & set(path.relative_to(ROOT).parts)
        ]


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page: Path):
    broken = []
    for target in links(page):
        path = local_target(page, target)
        if path is not None and not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_the_readme_stays_short():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes (at most {README_MAX_BYTES}); move detail to a page in docs/"
    )


def test_the_readme_links_every_page_of_the_docs():
    linked = {local_target(README, target) for target in links(README)}
    pages = [*sorted(DOCS.glob("*.md")), DOCS / "api" / "README.md"]
    missing = [str(page.relative_to(ROOT)) for page in pages if page.resolve() not in linked]
    assert not missing, f"add these pages to the README's Documentation list: {missing}"


def test_no_file_points_at_design_notes_outside_the_repository():
    found = []
    for path in repository_files():
        if path.suffix not in (".py", ".md") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found += [f"{path.relative_to(ROOT)}: {p!r}" for p in STALE_POINTERS if p in text]
    assert not found, f"decisions live in docs/architecture.md; point there instead: {found}"


def test_the_readme_images_exist_and_stay_small():
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", README.read_text())
    assert images, "the README shows a screenshot"
    for target in images:
        path = local_target(README, target)
        assert path is not None and path.is_file(), target
        assert path.stat().st_size <= SCREENSHOT_MAX_BYTES, f"{target} is over 150 KB"
