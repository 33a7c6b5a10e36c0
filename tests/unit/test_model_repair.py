"""Pure logic of the model layer: repair and validation, reply checks, error data, headers."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from worker.errors import FinalFailure, RetryLater
from worker.models import structured
from worker.models.client import check_reply
from worker.models.errors import RAW_EXCERPT_CHARS, ModelFinal, ModelRetryable
from worker.models.openai_backend import retry_after
from worker.models.types import CompletionRequest, Message, RawReply, Usage


class Envelope(BaseModel):
    answer_choice: int = Field(ge=1, le=4)
    explanation_md: str = Field(min_length=1)
    confidence: Literal["high", "medium", "low"]


GOOD = {"answer_choice": 2, "explanation_md": "**2** 가 맞습니다.", "confidence": "high"}


def test_plain_json_is_not_marked_repaired() -> None:
    value, repaired = structured.parse(json.dumps(GOOD), Envelope)
    assert value == Envelope.model_validate(GOOD)
    assert repaired is False


@pytest.mark.parametrize(
    "text",
    [
        f"```json\n{json.dumps(GOOD)}\n```",
        f"```\n{json.dumps(GOOD)}\n```",
        f"Sure! Here it is:\n{json.dumps(GOOD)}\nHope this helps.",
        '{"answer_choice": 2, "explanation_md": "수식 \\( x^2 \\) 과 \\q", "confidence": "high"}',
        "{'answer_choice': 2, 'explanation_md': 'single quotes', 'confidence': 'high'}",
        '{"answer_choice": 2, "explanation_md": "trailing comma", "confidence": "high",}',
    ],
    ids=["fenced", "bare-fence", "prose-around", "broken-escapes", "single-quotes", "comma"],
)
def test_common_damage_is_repaired(text: str) -> None:
    value, repaired = structured.parse(text, Envelope)
    assert repaired is True
    assert value.answer_choice == 2
    assert value.confidence == "high"


def test_broken_escapes_keep_the_text() -> None:
    text = '{"answer_choice": 1, "explanation_md": "\\( a \\) and \\d", "confidence": "low"}'
    value, _ = structured.parse(text, Envelope)
    assert "\\( a \\)" in value.explanation_md


def test_a_self_correcting_reply_takes_the_first_valid_object() -> None:
    bad = {"answer_choice": 9, "explanation_md": "x", "confidence": "high"}
    text = f"{json.dumps(bad)}\nOops, corrected:\n{json.dumps(GOOD)}"
    value, repaired = structured.parse(text, Envelope)
    assert value.answer_choice == 2
    assert repaired is True


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "empty"),
        ("", "empty"),
        ("   \n", "empty"),
        ("I cannot help with that.", "no JSON"),
        (json.dumps({**GOOD, "answer_choice": 7}), "answer_choice: Input should be less"),
        (json.dumps({**GOOD, "confidence": "very"}), "confidence: Input should be"),
        (json.dumps({"answer_choice": 1}), "explanation_md: Field required"),
        ("[1, 2, 3]", "does not match Envelope"),
    ],
)
def test_unusable_replies_say_why(text: str | None, reason: str) -> None:
    with pytest.raises(structured.InvalidOutput, match=reason):
        structured.parse(text, Envelope)


def _reply(text: str | None, finish: str | None = "stop", refusal: str | None = None) -> RawReply:
    return RawReply(text=text, finish_reason=finish, refusal=refusal, model="m",
                    usage=Usage(prompt_tokens=1, completion_tokens=1))


def test_a_truncated_reply_is_final_and_never_repaired() -> None:
    # this cut-off reply would "repair" into an object; it must not be used
    cut = '{"answer_choice": 2, "explanation_md": "The first half", "confidence": "high"'
    assert structured.parse(cut, Envelope)[1] is True
    with pytest.raises(ModelFinal) as caught:
        check_reply(_reply(cut, "length"), Envelope, "openai")
    assert caught.value.code == "truncated"
    assert caught.value.raw_excerpt == cut


def test_refusal_and_content_filter_are_final() -> None:
    with pytest.raises(ModelFinal) as refused:
        check_reply(_reply(None, refusal="I can't help with that"), Envelope, "openai")
    assert refused.value.code == "refused"
    assert "I can't help with that" in refused.value.reason
    with pytest.raises(ModelFinal) as filtered:
        check_reply(_reply(None, "content_filter"), Envelope, "openai")
    assert filtered.value.code == "content_filter"


def test_a_good_reply_passes_the_checks() -> None:
    value, repaired = check_reply(_reply(json.dumps(GOOD)), Envelope, "openai")
    assert value.answer_choice == 2 and not repaired


def test_model_errors_are_queue_errors_with_their_data() -> None:
    raw = "x" * 5000
    retry = ModelRetryable("parse_fail", "the reply does not match", raw=raw, model="m")
    assert isinstance(retry, RetryLater)
    assert retry.code == "parse_fail" and retry.delay is None
    assert retry.raw_excerpt == "x" * RAW_EXCERPT_CHARS
    assert retry.reason in retry.message and retry.raw_excerpt in retry.message
    assert len(retry.message) < 2000  # fits the job's error_message unclipped
    assert retry.details == {"reason": "the reply does not match",
                             "raw_excerpt": "x" * RAW_EXCERPT_CHARS, "model": "m"}
    final = ModelFinal("quota_exhausted", "no money")
    assert isinstance(final, FinalFailure) and not final.retryable
    assert final.raw_excerpt is None and final.message == "no money"
    assert final.details == {"reason": "no money"}
    assert ModelRetryable("rate_limited", "slow down", 4.5).delay == 4.5


def test_codes_are_checked_against_their_class() -> None:
    with pytest.raises(ValueError, match="not a retryable"):
        ModelRetryable("truncated", "x")
    with pytest.raises(ValueError, match="not a final"):
        ModelFinal("timeout", "x")


def test_retry_after_headers() -> None:
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert retry_after({"retry-after-ms": "soon", "retry-after": "3"}) == 3.0
    assert retry_after({}) is None
    assert retry_after({"retry-after": "not a date"}) is None
    assert retry_after({"retry-after": "-4"}) == 0.0
    future = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 100 < (retry_after({"retry-after": future}) or 0) <= 120


def test_strict_schema_for_openai_requires_every_field() -> None:
    fmt = structured.json_schema_format(Envelope)
    schema = fmt["json_schema"]["schema"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "Envelope"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"answer_choice", "explanation_md", "confidence"}


def test_the_llama_cpp_form_carries_the_schema_in_json_object() -> None:
    fmt = structured.json_object_schema_format(Envelope)
    assert fmt["type"] == "json_object"
    assert fmt["schema"]["properties"]["confidence"]["enum"] == ["high", "medium", "low"]


def test_prompt_mode_puts_the_schema_into_the_system_message() -> None:
    with_system = structured.with_schema_prompt(
        [Message(role="system", content="Be brief."), Message(role="user", content="Q")],
        Envelope)
    assert len(with_system) == 2
    assert with_system[0].content.startswith("Be brief.\n\n")
    assert '"answer_choice"' in with_system[0].content
    without = structured.with_schema_prompt([Message(role="user", content="Q")], Envelope)
    assert [m.role for m in without] == ["system", "user"]


def test_the_correction_shows_the_model_its_reply_and_the_error() -> None:
    assistant, user = structured.correction('{"answer_choice": 9}', "answer_choice: too big")
    assert assistant.role == "assistant" and assistant.content == '{"answer_choice": 9}'
    assert user.role == "user" and "answer_choice: too big" in user.content


def test_max_tokens_is_required_and_positive() -> None:
    messages = (Message(role="user", content="q"),)
    with pytest.raises(ValueError, match="max_tokens"):
        CompletionRequest[Envelope](messages=messages, output=Envelope)  # type: ignore[call-arg]  # the point of the test
    with pytest.raises(ValueError, match="max_tokens"):
        CompletionRequest[Envelope](messages=messages, output=Envelope, max_tokens=0)
    request = CompletionRequest[Envelope](messages=messages, output=Envelope, max_tokens=10)
    assert request.temperature == 0.0 and request.timeout is None


def test_usage_adds_up_and_keeps_unknown_as_none() -> None:
    total = Usage(prompt_tokens=3, completion_tokens=None) + Usage(prompt_tokens=4)
    assert total == Usage(prompt_tokens=7, completion_tokens=None)
