"""Every route of the web app is exercised by some test (a guard for new routes)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.webclient import Web

HERE = Path(__file__).resolve().parent
INTEROP = HERE.parents[1] / "interop" / "test_web_browser.py"


def test_every_route_is_requested_by_a_test(web: Web) -> None:
    sources = "\n".join(p.read_text(encoding="utf-8") for p in [*HERE.glob("test_*.py"), INTEROP])
    missing = []
    for rule in web.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        pattern = re.sub(
            r"<(?:int:)?\w+>",
            "[^\"'/?]+",
            re.escape(rule.rule).replace("\\<", "<").replace("\\>", ">"),
        )
        pattern = pattern.replace(r"\:", ":")
        if not re.search(f"[\"'f]{pattern}(?:[\"'?]|$)", sources, re.MULTILINE):
            missing.append(rule.rule)
    assert missing == []
