"""What a model's explanation may carry into the app: a conservative Markdown allow-list, and
the answer its text declares.

An explanation is shown to learners and quoted as evidence in later prompts, so anything that
reaches outside the text is taken out before it is stored: images (a tracking pixel can
carry data out in its URL), raw HTML (`<img onerror=…>`), links and bare URLs. Emphasis,
lists, headings, tables, code and math stay. A text that argues for another choice than the
key is refused, even when the reply's `answer_choice` field names the key.
"""

from __future__ import annotations

import re

_CIRCLED = "①②③④"
_CHOICE = r"\(?\s*([1-4①②③④])"
_NUMBER_END = r"\s*\)?\s*번?"
# "… 아니다/아닌/아님": the sentence says the choice is *not* the answer (checked from
# right after the digit, so that a shorter match cannot step around it)
_NOT = r"(?!\s*\)?\s*번?\s*(?:이|가|은|는)?\s*(?:아니|아님|아닌))"

_REMOVALS: list[tuple[str, re.Pattern[str], str]] = [
    ("html_comment", re.compile(r"<!--.*?-->", re.DOTALL), ""),
    ("image", re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),
    ("link", re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),
    ("link", re.compile(r"^[ \t]*\[[^\]]+\]:[ \t]*\S+.*$", re.MULTILINE), ""),
    ("link", re.compile(r"<(?:https?|ftp|mailto):[^>\s]*>", re.IGNORECASE), ""),
    ("html", re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>"), ""),
    ("link", re.compile(r"\b(?:https?://|ftp://|www\.)[^\s)<>\]]+", re.IGNORECASE), ""),
]

_DECLARED = [
    re.compile(rf"(?:정답|(?<![가-힣])답)\s*(?:은|는|:|=)?\s*(?:보기\s*)?{_CHOICE}{_NOT}"),
    re.compile(rf"(?:보기\s*)?{_CHOICE}{_NUMBER_END}\s*(?:이|가)?\s*정답"
               r"(?!\s*(?:이|가|은|는)?\s*(?:아니|아님|아닌))"),
    re.compile(rf"(?i)\b(?:correct\s+)?answer\s*(?:is|:)\s*(?:choice\s*|option\s*)?{_CHOICE}"),
]


def sanitize(markdown: str) -> tuple[str, list[str]]:
    """`markdown` without images, raw HTML, links (their text stays) and URLs; and what was
    taken out, by kind, each named once."""
    removed: list[str] = []
    for name, pattern, replacement in _REMOVALS:
        markdown, count = pattern.subn(replacement, markdown)
        if count and name not in removed:
            removed.append(name)
    return re.sub(r"\n{3,}", "\n\n", markdown).strip(), removed


def declared_answers(markdown: str) -> set[int]:
    """The choices the text declares to be the answer ("정답은 3번", "③이 정답", "the answer
    is 3"), leaving out sentences that say a choice is not the answer."""
    found: set[int] = set()
    for pattern in _DECLARED:
        for match in pattern.finditer(markdown):
            token = match.group(1)
            found.add(_CIRCLED.index(token) + 1 if token in _CIRCLED else int(token))
    return found
