"""How the dashboard shows values: Markdown made safe, ages, timestamps and stored JSON.

Markdown goes through markdown-it-py with raw HTML off and images off, so a model's text can
neither run script in an operator's browser nor make it fetch anything.
"""

from __future__ import annotations

import datetime
import json
from functools import cache
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup


@cache
def _markdown() -> MarkdownIt:
    # commonmark with raw HTML off: `<script>` is shown as text; markdown-it's validateLink
    # already refuses javascript:, vbscript:, file: and data: links
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")
    return md


def markdown(text: str | None) -> Markup:
    """`text` as sanitized HTML (an empty string for None)."""
    if not text:
        return Markup("")
    return Markup(_markdown().render(text))  # safe: rendered with raw HTML off


def age(value: datetime.timedelta | float | None) -> str:
    """A duration as an operator reads it: 45s, 3m 12s, 2h 05m, 3d 4h."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else value
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d {seconds % 86_400 // 3600}h"


def when(value: datetime.datetime | None) -> str:
    """A timestamp in UTC to the second."""
    if value is None:
        return ""
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def pretty(value: Any) -> str:
    """Stored JSON, indented, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return ""
    return f"{value:,.{digits}f}"


FILTERS = {"markdown": markdown, "age": age, "when": when, "pretty": pretty, "number": number}
