"""The explanation cap: Korean sentence endings, line and paragraph breaks, hard cuts."""

from __future__ import annotations

import pytest

from worker.kinds.textcap import ELLIPSIS, LIMIT, cap


def test_text_within_the_limit_is_untouched() -> None:
    text = "가" * LIMIT
    assert cap(text) == (text, False)


@pytest.mark.parametrize("ending", ["다.", "요.", "니다.", "!", "?"])
def test_cut_after_a_korean_sentence_end_near_the_limit(ending: str) -> None:
    sentence = "변압기의 철손은 부하와 관계없이 일정" + ending + " "
    text = sentence * 100
    out, capped = cap(text)
    assert capped and out.endswith(ending + ELLIPSIS)
    assert len(out) <= LIMIT
    assert len(out) > LIMIT - 200  # near the end, not early


def test_boundaries_are_preferred_in_the_designs_order() -> None:
    """Paragraph, line, ". ", "다.", "요.", "다 ", "요 ": the first kind found in the window
    wins, even when a boundary of a later kind sits closer to the limit."""
    body = "가" * 1100
    out, _ = cap(body + "\n\n" + "나" * 50 + "\n" + "다" * 300)
    assert out == body + ELLIPSIS  # the paragraph break, not the later line break
    out, _ = cap(body + "\n" + "나" * 50 + "이다. " + "라" * 300)
    assert out == body + ELLIPSIS  # the line break, not the later sentence end
    out, _ = cap(body + "이다." + "나" * 20 + "x. " + "라" * 300)
    assert out == body + "이다." + "나" * 20 + "x." + ELLIPSIS  # ". " before "다."
    out, _ = cap(body + "했다 " + "나" * 20 + "이다." + "라" * 300)
    assert out == body + "했다 " + "나" * 20 + "이다." + ELLIPSIS  # "다." before "다 "


def test_a_list_number_or_a_decimal_is_not_a_sentence_end() -> None:
    text = "가" * 1050 + " 1. 첫째 3.5 배" + "나" * 400
    out, capped = cap(text)
    assert capped
    assert not out.endswith("1." + ELLIPSIS) and not out.endswith("3." + ELLIPSIS)
    assert len(out) == LIMIT  # no boundary in reach: a hard cut at the limit


def test_a_boundary_earlier_than_the_window_is_ignored() -> None:
    text = "첫 문장입니다. " + "가" * 2000
    out, capped = cap(text)
    assert capped and len(out) == LIMIT and out.endswith("가" + ELLIPSIS)


def test_the_result_never_exceeds_the_limit() -> None:
    for n in range(LIMIT - 5, LIMIT + 400, 37):
        out, _ = cap("요. " * (n // 3) + "x" * (n % 3))
        assert len(out) <= LIMIT
