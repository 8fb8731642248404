"""The built book read as a student would, mechanically: no raw TeX in the navigation, no machine
path on any page, every "chapter N" a link, no table cut off, and exercises with solutions.

The checks are functions of an HTML page, tested first on hand-written pages (so each can fail),
then run over every page of the smoke book."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

bs4 = pytest.importorskip("bs4")

MACHINE_PATH = re.compile(r"(?<![\w.])(/(?:work|tmp|home|root|Users|var/folders)/\S+|\.cupl-cache\S*|[A-Z]:\\\S+)")
CHAPTER = re.compile(r"\b[Cc]hapters? \d+")
CUT = re.compile(r"(\.\.\.|…)$")
PANDAS_COLWIDTH = 50  # pandas cuts a cell's text to this many characters, the last three "..."


def pages(html_root: Path) -> list[Path]:
    return [p for p in sorted(html_root.rglob("*.html"))
            if not ({"_static", "_sources", "_images"} & set(p.relative_to(html_root).parts))
            and p.name not in ("search.html", "genindex.html")]


def _soup(html: str):
    return bs4.BeautifulSoup(html, "html.parser")


def tex_in_navigation(html: str) -> list[str]:
    """Link texts of the navigation (sidebar and page table of contents) that hold raw TeX."""
    soup = _soup(html)
    navs = soup.select("nav") + soup.select(".bd-sidebar") + soup.select(".bd-toc")
    texts = {a.get_text(" ", strip=True) for nav in navs for a in nav.find_all("a")}
    return sorted(t for t in texts if "$" in t or "\\" in t)


def machine_paths(html: str) -> list[str]:
    """Absolute paths of the machine the book was built on, in the visible text of a page."""
    soup = _soup(html)
    for tag in soup(["script", "style", "head"]):
        tag.decompose()
    return sorted(set(m.group(0) for m in MACHINE_PATH.finditer(soup.get_text(" "))))


def unlinked_chapters(html: str) -> list[str]:
    """'chapter N' in the text of the page's article that is not inside a link."""
    soup = _soup(html)
    article = soup.select_one("article") or soup
    found = []
    for text in article.find_all(string=CHAPTER):
        if text.find_parent("a") is None and text.find_parent(["code", "pre", "script"]) is None:
            found += CHAPTER.findall(str(text))
    return found


def cut_table_cells(html: str) -> list[str]:
    """Table cells whose text pandas cut off: exactly its column width long, ending in '...'
    (a text that ends in an ellipsis of its own is left alone)."""
    soup = _soup(html)
    texts = (td.get_text(strip=True) for td in soup.select("table td, table th"))
    return [t for t in texts if len(t) == PANDAS_COLWIDTH and CUT.search(t)]


# ---------------------------------------------------------------- the checks can fail


def test_checks_find_what_they_look_for():
    page = """<html><head><script>var p = "/tmp/x";</script></head><body>
      <nav class="bd-links"><a href="a.html">Heads $K$</a><a href="b.html">Plain</a></nav>
      <article><p>See chapter 3 and <a href="c.html">chapter 4</a>; bank /work/main/.cupl-cache/banks/x.h5.</p>
      <pre>chapter 9 in code</pre>
      <table><tr><td>event strength (latent units), the one calibrat...</td><td>whole ...</td></tr></table>
      </article></body></html>"""
    assert tex_in_navigation(page) == ["Heads $K$"]
    assert machine_paths(page) == ["/work/main/.cupl-cache/banks/x.h5."]
    assert unlinked_chapters(page) == ["chapter 3"]
    assert cut_table_cells(page) == ["event strength (latent units), the one calibrat..."]


def test_checks_pass_a_clean_page():
    page = """<html><body><nav><a href="a.html">Heads K</a></nav><article>
      <p>See <a href="c.html">chapter 4</a>; bank ucf-smoke.h5 in the cache.</p>
      <table><tr><td>0.25</td></tr></table></article></body></html>"""
    assert not (tex_in_navigation(page) or machine_paths(page) or unlinked_chapters(page) or cut_table_cells(page))


# ---------------------------------------------------------------- the smoke book


@pytest.mark.slow
def test_smoke_book_pages(smoke_book):
    html_root = smoke_book[0] / "_build" / "html"
    problems = {}
    for page in pages(html_root):
        html = page.read_text(encoding="utf-8")
        found = {"raw TeX in navigation": tex_in_navigation(html), "machine paths": machine_paths(html),
                 "'chapter N' without a link": unlinked_chapters(html), "cut-off table cells": cut_table_cells(html)}
        found = {k: v for k, v in found.items() if v}
        if found:
            problems[str(page.relative_to(html_root))] = found
    assert not problems, problems


@pytest.mark.slow
def test_exercises_are_numbered_with_collapsed_solutions(smoke_book):
    html_root = smoke_book[0] / "_build" / "html"
    chapters = [p for p in sorted((html_root / "_executed" / "notebooks").glob("*.html")) if int(p.name[:2]) < 90]
    assert chapters
    for page in chapters:
        soup = _soup(page.read_text(encoding="utf-8"))
        exercises = soup.select(".exercise")
        solutions = soup.select(".solution")
        assert exercises, f"{page.name} has no exercise"
        assert solutions and all("dropdown" in s.get("class", []) for s in solutions), page.name


@pytest.mark.slow
def test_student_edition_renders_without_solutions(smoke_book):
    from cupl.book.runner import build_book

    root = smoke_book[0]
    build_book(root, progress=False, student=True)
    chapters = [p for p in sorted((root / "_build" / "student" / "_executed" / "notebooks").glob("*.html"))
                if int(p.name[:2]) < 90]
    assert chapters
    for page in chapters:
        soup = _soup(page.read_text(encoding="utf-8"))
        assert soup.select(".exercise"), f"{page.name}: the exercises stay"
        assert not soup.select(".solution"), f"{page.name}: a solution is shown"
