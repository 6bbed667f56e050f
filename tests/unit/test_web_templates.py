"""The templates hold no inline script, event handler or style attribute: the CSP
(script-src 'self', style-src 'self') would block them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.webclient import inline_code

TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates"
INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\son[a-z]+\s*=|\sstyle\s*=|javascript:", re.IGNORECASE
)


@pytest.mark.parametrize(
    "path", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_template_has_no_inline_code(path: Path) -> None:
    assert INLINE.findall(path.read_text(encoding="utf-8")) == []


def test_the_checks_see_inline_code() -> None:
    bad = (
        '<script>alert(1)</script><form onsubmit="return x()"><img style="width:1px">'
        '<a href="javascript:void(0)">x</a><script src="/static/page.js"></script>'
    )
    assert len(INLINE.findall(bad)) == 4
    assert inline_code(bad) == [
        "<script> without src",
        "<script> with inline code",
        "<form onsubmit=...>",
        "<img style=...>",
        "<a href=javascript:...>",
    ]
    assert inline_code('<script src="/static/page.js"></script><p data-confirm="x?">') == []
