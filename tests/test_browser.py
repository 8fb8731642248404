"""The built book in a real browser: headless Debian Chromium opens the index and every
chapter, and the math must be typeset, every figure must load and no cell may show an error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

CHROMIUM = shutil.which("chromium", path="/usr/bin:" + os.environ.get("PATH", ""))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# virtual time, not wall time: lets MathJax load its fonts and typeset before the dump
BUDGET = ["--virtual-time-budget=15000"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None,
                       reason="Chromium is not installed (Debian: apt-get install chromium)"),
]


def chromium(page: Path, profile: Path, *args: str) -> str:
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *BUDGET, *args, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def chapters(root: Path) -> list[Path]:
    names = re.findall(r"file:\s*_executed/notebooks/(\S+)", (root / "_toc.yml").read_text())
    return [root / "_build" / "html" / "_executed" / "notebooks" / f"{n}.html" for n in names]


def assert_no_error_output(dom: str, page: Path):
    assert "Traceback (most recent call last)" not in dom, f"{page.name} shows a traceback"
    error_output = re.search(r'class="[^"]*\boutput (traceback|error)\b', dom)
    assert error_output is None, f"{page.name} shows an error"
    assert "An Exception was encountered" not in dom, f"{page.name} is a failed papermill run"


def local_images(html: str, page: Path) -> list[Path]:
    sources = re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', html)
    return [(page.parent / unquote(urlparse(s).path)).resolve()
            for s in sources if not s.startswith(("data:", "http:", "https:"))]


def test_index_opens(smoke_book, tmp_path):
    root = smoke_book[0]
    page = root / "_build" / "html" / "index.html"  # redirects to the root page of the toc
    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert "Completeness and uncertainty of pseudo labels" in dom
    for chapter in chapters(root):
        assert chapter.name in dom, f"the index does not link {chapter.name}"
    assert_no_error_output(dom, page)


def test_chapters_render_math_figures_and_no_errors(smoke_book, tmp_path):
    root = smoke_book[0]
    pages = chapters(root)
    assert pages, "the toc lists no chapter"
    for i, page in enumerate(pages):
        dom = chromium(page, tmp_path / f"profile-{i}", "--dump-dom")
        html = page.read_text()
        if 'class="math' in html:
            remote = re.search(r'<script[^>]*src="https?://[^"]*mathjax', html)
            hint = (" (MathJax comes from a CDN, unreachable offline: install the book's "
                    "bundled MathJax, the `mathjax` package of django-static-mathjax)") if remote else ""
            assert "<mjx-container" in dom, f"MathJax did not typeset the math of {page.name}{hint}"
        assert "<mjx-merror" not in dom, f"MathJax reports a TeX error in {page.name}"
        for image in local_images(html, page):
            assert image.is_file(), f"{page.name}: missing image {image}"
        assert_no_error_output(dom, page)
    shot = tmp_path / "chapter.png"
    chromium(pages[0], tmp_path / "profile-shot", "--window-size=1280,2000", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
