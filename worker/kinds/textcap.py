"""Text cut to a length: `clip` for any value that enters a prompt or a stored summary, `cap`
for an explanation, which is cut on a paragraph break, line break or sentence end near the
limit instead of in the middle of a sentence.
"""

from __future__ import annotations

import re

LIMIT = 1200
WINDOW = 200
ELLIPSIS = "…"

# Where an explanation may be cut, most preferred first: the first kind found near the limit
# wins, even if a boundary of a later kind sits closer to it. A period after a digit is a
# list number or a decimal ("1. ", "3.5"), not the end of a sentence.
_BOUNDARIES = [re.compile(pattern) for pattern in (
    r"\n\n", r"\n", r"(?<![0-9])\. ", r"다\.", r"요\.", r"다 ", r"요 ",
    # other sentence ends: ! ? and the full-width forms, before whitespace or the end
    r"[!?\u3002\uff01\uff1f](?=\s|$)")]


def clip(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters ending with `…`."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def cap(text: str, limit: int = LIMIT, window: int = WINDOW) -> tuple[str, bool]:
    """`text` unchanged if it fits, else cut at a boundary within the last `window`
    characters before the limit (a hard cut if there is none) and ended with `…`, so the
    result is at most `limit` characters. Returns (text, whether it was cut)."""
    if len(text) <= limit:
        return text, False
    room = limit - len(ELLIPSIS)
    head = text[:room]
    floor = max(room - window, 0)
    for boundary in _BOUNDARIES:
        ends = [match.end() for match in boundary.finditer(head, floor)]
        if ends:
            return head[:ends[-1]].rstrip() + ELLIPSIS, True
    return head.rstrip() + ELLIPSIS, True
