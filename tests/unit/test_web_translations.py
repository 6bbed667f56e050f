"""Every English text the web page shows through the translator has a Japanese entry."""

from __future__ import annotations

import re
from pathlib import Path

from appliance import paging
from appliance.app import ADMIN_MENU
from web import i18n, stepform

ROOT = Path(__file__).resolve().parents[2] / "web"
CALL = re.compile(r"""(?:\b_|gettext)\(\s*(['"])(.+?)\1""")


def texts() -> set[str]:
    found: set[str] = set()
    for path in [*ROOT.rglob("*.html"), *ROOT.glob("*.py")]:
        found.update(m.group(2) for m in CALL.finditer(path.read_text(encoding="utf-8")))
    found.update(label for label, _ in ADMIN_MENU)
    found.update(label for _, label in stepform.NAME_PARTS)
    return found


def test_every_shown_text_has_japanese() -> None:
    found = texts()
    assert len(found) > 100
    missing = sorted(t for t in found if t not in i18n.JA)
    assert missing == []


def test_messages_of_the_form_parser_have_japanese() -> None:
    source = (ROOT / "stepform.py").read_text(encoding="utf-8")
    found = re.findall(r'errors\[[^\]]+\] = "([^"{]+)"', source)
    messages = {m.replace("\\\\", "\\") for m in found}
    assert messages
    missing = sorted(m for m in messages if i18n.translate(m, "ja") == m)
    assert missing == []


def test_paging_reasons_have_japanese() -> None:
    for reason in (paging.BAD_SIZE, paging.BAD_CURSOR, paging.BOTH_WAYS):
        assert i18n.translate(reason, "ja") != reason, reason
