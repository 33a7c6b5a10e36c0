"""Prompt versions: latest and pinned selection, start-up errors, and safe rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import PromptSettings, load_settings
from worker.errors import ConfigError
from worker.prompts import (
    Budget,
    Prompt,
    ResponseFormat,
    available_versions,
    load_prompt,
    prompt_for,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "prompts"

VALUES = {"question_text": "1+1?", "correct_choice": 2, "choice_1": "1", "choice_2": "2"}


def test_versions_are_numbers_and_other_files_are_ignored() -> None:
    assert available_versions("explain", FIXTURES) == [1, 2, 10]


def test_latest_picks_the_highest_number() -> None:
    prompt = load_prompt("explain", "latest", directory=FIXTURES)
    assert prompt.version == 10
    assert "(v10)" in prompt.system


def test_a_pinned_version_is_used() -> None:
    prompt = load_prompt("explain", 2, directory=FIXTURES)
    assert prompt.version == 2
    assert "(v2)" in prompt.system


def test_the_environment_selects_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPT_VERSION_EXPLAIN", raising=False)
    monkeypatch.setenv("WORKER_PROMPTS_DIR", str(FIXTURES))
    monkeypatch.setenv("PROMPT_VERSION", "2")
    assert prompt_for("explain", load_settings().prompts).version == 2
    monkeypatch.setenv("PROMPT_VERSION", "latest")
    assert prompt_for("explain", load_settings().prompts).version == 10
    monkeypatch.delenv("PROMPT_VERSION")
    assert prompt_for("explain", load_settings().prompts).version == 10


def test_a_per_kind_variable_overrides_the_global_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPT_VERSION", "latest")
    monkeypatch.setenv("PROMPT_VERSION_EXPLAIN", "1")
    prompts = load_settings().prompts
    assert prompts.version_for("explain") == "1"
    assert prompts.version_for("weakness") == "latest"
    assert PromptSettings().version_for("weakness") == "latest"
    # an empty variable counts as unset
    assert PromptSettings(version="", per_kind={"explain": ""}).version_for("explain") == "latest"


def test_a_missing_pinned_version_is_a_config_error_naming_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"v3\.yaml does not exist \(available: v1, v2, v10\)"):
        load_prompt("explain", 3, directory=FIXTURES)


def test_a_kind_without_prompts_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no prompt files"):
        load_prompt("nothing_here", directory=FIXTURES)


@pytest.mark.parametrize("selector", ["v2", "0", "-1", "newest", "2.0"])
def test_a_bad_version_selector_is_a_config_error(selector: str) -> None:
    with pytest.raises(ConfigError, match="use 'latest' or a number"):
        load_prompt("explain", selector, directory=FIXTURES)


def test_a_kind_name_cannot_leave_the_prompts_directory() -> None:
    with pytest.raises(ConfigError, match="plain lower-case name"):
        load_prompt("../explain", directory=FIXTURES)


def _write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "kind"
    folder.mkdir()
    (folder / "v1.yaml").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("system: [unclosed\nuser: x\n", "cannot read prompt file"),
        ("- just\n- a list\n", "is a mapping"),
        ("system: only a system prompt\n", r"malformed prompt file(.|\n)*user"),
        ("system: s\nuser: u\nextra: field\n", r"malformed prompt file(.|\n)*extra"),
        ("system: s\nuser: u\nresponse_format:\n  max_tokens: -5\n", "malformed prompt file"),
        ("system: s\nuser: 'Hello {name'\n", "expected '}'"),
        ("system: s\nuser: 'Hello name}'\n", "Single '}'"),
        ("system: s\nuser: '{q.__class__}'\n", "not a plain"),
        ("system: s\nuser: '{q[0]}'\n", "not a plain"),
        ("system: s\nuser: '{q!r}'\n", "not a plain"),
        ("system: s\nuser: '{}'\n", "not a plain"),
    ],
)
def test_a_malformed_file_is_a_config_error_at_load(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_prompt("kind", directory=_write(tmp_path, text))


def test_undeclared_placeholders_are_caught_at_load() -> None:
    with pytest.raises(ConfigError, match=r"unknown placeholder.*choice_1"):
        load_prompt("explain", 2, directory=FIXTURES,
                    variables={"question_text", "correct_choice"})
    prompt = load_prompt("explain", 2, directory=FIXTURES, variables=VALUES)
    assert prompt.fields == set(VALUES)


def test_rendering_inserts_values_as_text() -> None:
    prompt = load_prompt("explain", 2, directory=FIXTURES)
    system, user = prompt.render(VALUES)
    assert (system.role, user.role) == ("system", "user")
    assert "문제: 1+1?" in user.content
    assert "정답: 2" in user.content
    assert 'Literal braces stay: {"answer_choice": 1}' in user.content


def test_user_text_with_braces_is_never_evaluated() -> None:
    prompt = load_prompt("explain", 1, directory=FIXTURES)
    hostile = "{correct_choice} {0} {question_text.__class__} {{ }} ${HOME} %(x)s"
    _, user = prompt.render({"question_text": hostile, "correct_choice": 3})
    assert f"문제: {hostile}\n" in user.content
    assert "정답: 3" in user.content


def test_a_missing_value_names_the_placeholder() -> None:
    prompt = load_prompt("explain", 1, directory=FIXTURES)
    with pytest.raises(ConfigError, match="correct_choice"):
        prompt.render({"question_text": "q"})


def test_none_renders_empty_and_structures_render_as_json() -> None:
    prompt = load_prompt("weakness", directory=FIXTURES)
    _, user = prompt.render({"wrong_answers": [{"q": "광합성", "score": 0}]})
    assert user.content == 'Wrong answers: [{"q": "광합성", "score": 0}]'
    _, user = prompt.render({"wrong_answers": None})
    assert user.content == "Wrong answers: "


def test_response_format_section_is_appended_unformatted_and_keeps_its_budget() -> None:
    prompt = load_prompt("explain", directory=FIXTURES)
    assert prompt.response_format is not None
    assert prompt.response_format.max_tokens == 800
    assert prompt.response_format.temperature == 0.2
    system, _ = prompt.render(VALUES)
    # braces in the instructions are not placeholders: the section is not a template
    assert system.content.endswith('"confidence": "high|medium|low"}\n')
    assert system.content.startswith("You explain multiple-choice exam questions. (v10)")


def test_a_string_response_format_is_taken_as_instructions() -> None:
    prompt = load_prompt("weakness", directory=FIXTURES)
    assert prompt.response_format is not None
    assert prompt.response_format.instructions == "Reply with JSON: weaknesses, suggestions."
    assert prompt.response_format.max_tokens is None
    system, _ = prompt.render({"wrong_answers": "x"})
    assert system.content.endswith("Reply with JSON: weaknesses, suggestions.")


def _with_budget(**given: float | None) -> Prompt:
    prompt = load_prompt("explain", 1, directory=FIXTURES)
    return prompt.model_copy(update={"response_format": ResponseFormat(**given)})


def test_the_budget_takes_the_files_values_and_a_temperature_of_zero_is_zero() -> None:
    default = Budget(max_tokens=900, temperature=0.2)
    assert _with_budget(temperature=0.0).budget(default) == Budget(max_tokens=900,
                                                                   temperature=0.0)
    assert _with_budget(max_tokens=50).budget(default) == Budget(max_tokens=50, temperature=0.2)
    assert _with_budget().budget(default) == default
    assert load_prompt("explain", 1, directory=FIXTURES).budget(default) == default


def test_the_request_carries_the_rendered_messages_and_the_budget() -> None:
    prompt = _with_budget(max_tokens=50, temperature=0.0)
    request = prompt.request({"question_text": "q", "correct_choice": 1}, ResponseFormat,
                             Budget(max_tokens=900, temperature=0.2))
    assert (request.max_tokens, request.temperature) == (50, 0.0)
    assert request.messages == prompt.render({"question_text": "q", "correct_choice": 1})
    assert request.output is ResponseFormat


def test_a_prompt_over_its_budget_fails_the_job_before_any_call() -> None:
    from worker.errors import FinalFailure

    prompt = _with_budget()
    budget = Budget(max_tokens=50, temperature=0.0, prompt_chars=500)
    prompt.request({"question_text": "q" * 100, "correct_choice": 1}, ResponseFormat, budget)
    with pytest.raises(FinalFailure) as caught:
        prompt.request({"question_text": "q" * 1000, "correct_choice": 1}, ResponseFormat,
                       budget)
    assert caught.value.code == "input_too_large"
    assert "budget of 500" in caught.value.message
