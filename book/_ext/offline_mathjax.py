"""Serve MathJax 3 from the book itself, so equations render without a network.

The book is read on laptops in courses and checked in a headless browser with no network;
the default MathJax from a CDN would leave raw TeX there. When the `mathjax` package
(PyPI: django-static-mathjax, a plain copy of MathJax 3) is installed, its CHTML bundle and
the pieces that bundle loads on demand are copied into `_static/mathjax/`; otherwise the
Sphinx default (CDN) stays.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# tex-chtml.js loads TeX extensions, fonts, the menu and its accessibility hooks lazily.
BUNDLE = "tex-chtml.js"
LAZY_PARTS = ("input/tex/extensions", "output/chtml", "ui", "a11y")


def _mathjax_es5() -> Path | None:
    try:
        import mathjax
    except ImportError:
        return None
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    return es5 if (es5 / BUNDLE).is_file() else None


def _use_local_mathjax(app, config):
    if _mathjax_es5() is not None:
        config.mathjax_path = f"mathjax/{BUNDLE}"


def _copy_mathjax(app, exception):
    es5 = _mathjax_es5()
    if exception is not None or es5 is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / BUNDLE, target / BUNDLE)
    for part in LAZY_PARTS:
        shutil.copytree(es5 / part, target / part, dirs_exist_ok=True)


def setup(app):
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
