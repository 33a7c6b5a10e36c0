"""Text cut to a length: `clip` for any value that enters a prompt or a stored summary, `cap`
for an explanation, which is cut on the last paragraph break, line break or sentence end
near the limit instead of in the middle of a sentence.
"""

from __future__ import annotations

import re

LIMIT = 1200
WINDOW = 200
ELLIPSIS = "…"

# A sentence ends with . ! ? (Korean endings such as 다. 요. included) or their full-width
# forms, followed by whitespace or the end. A period after a digit is a list number or a
# decimal ("1. ", "3.5"), not the end of a sentence.
_SENTENCE_END = re.compile(r"(?<![0-9])[.!?\u3002\uff01\uff1f](?=\s|$)")


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
    best = -1
    for boundary in ("\n\n", "\n"):
        at = head.rfind(boundary, floor)
        if at >= 0:
            best = max(best, at)
    for match in _SENTENCE_END.finditer(head, floor):
        best = max(best, match.end())
    cut = head[:best].rstrip() if best > floor else head.rstrip()
    return cut + ELLIPSIS, True
