"""Paging on the web pages: the page asked for in the query string (``size``, ``after``,
``before``), and links to the first, previous, next and last pages that keep every other
query parameter (the filters)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import url_for
from werkzeug.datastructures import MultiDict

from appliance import paging
from appliance.errors import ValidationError

SIZES = (25, 50, 100, 200, 500)  # offered in the page-size menus
CURSOR_ARGS = ("after", "before")


def page_request(
    args: Mapping[str, str], default_size: int = paging.DEFAULT_SIZE
) -> paging.PageRequest:
    """The page the query string asks for; ValidationError naming the bad parameter."""
    raw = (args.get("size") or "").strip()
    size = default_size
    if raw:
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
            raise ValidationError("size", paging.BAD_SIZE)
        size = int(raw)
    after, before = (args.get(k) or "" for k in CURSOR_ARGS)
    return paging.PageRequest(size, after.strip(), before.strip())


def links(
    page: paging.Page, endpoint: str, args: MultiDict[str, str], **view_args: Any
) -> dict[str, str | None]:
    """URLs of the first, previous, next and last pages (None where there is none)."""
    keep = {k: v for k, v in args.to_dict(flat=False).items() if k not in CURSOR_ARGS}

    def url(**cursor: str) -> str:
        values: dict[str, Any] = {**view_args, **keep, **cursor}
        return url_for(endpoint, **values)

    back, more = page.has_previous, page.has_next
    # Previous: the rows before this page's first row; past the end, the last page.
    previous = url(before=page.first or paging.END)
    return {
        "first": url() if back else None,
        "previous": previous if back else None,
        "next": url(after=page.last) if more else None,
        "last": url(before=paging.END) if more else None,
    }
