"""Turning a model's text into a validated pydantic object, the same way for every backend.

json-repair fixes fences, surrounding prose and broken escapes; pydantic decides validity.
"""

from __future__ import annotations

import json
from typing import Any

import json_repair
from openai import pydantic_function_tool
from pydantic import BaseModel, ValidationError

from worker.models.types import Message, OutT


class InvalidOutput(Exception):
    """The reply could not be turned into the output model; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(text: str | None) -> tuple[Any, bool]:
    """The JSON value in `text` and whether it needed repair."""
    if text is None or not text.strip():
        raise InvalidOutput("the reply was empty")
    try:
        return json.loads(text), False
    except ValueError:
        pass
    value = json_repair.loads(text)
    # json-repair answers "" when it finds no JSON at all (plain prose, a bare refusal)
    if value == "" or value is None:
        raise InvalidOutput("the reply contains no JSON value")
    return value, True


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse(text: str | None, output: type[OutT]) -> tuple[OutT, bool]:
    """Validate the reply against `output`; returns the object and whether it was repaired.

    Several JSON objects in one reply (a model that "corrects itself") come back from
    json-repair as a list; the first object that validates is taken.
    """
    value, repaired = decode(text)
    candidates = [value]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        candidates, repaired = value, True
    first_error: ValidationError | None = None
    for candidate in candidates:
        try:
            return output.model_validate(candidate), repaired
        except ValidationError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise InvalidOutput(f"the reply does not match {output.__name__}: {_errors(first_error)}")


def strict_schema(output: type[BaseModel]) -> dict[str, Any]:
    """The schema OpenAI strict mode accepts (every property required, no extras).

    The SDK's own converter is used, through its public function-tool helper whose
    parameters it is, because the strict-mode rules change with the API.
    """
    return dict(pydantic_function_tool(output)["function"]["parameters"])


def json_schema_format(output: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": output.__name__, "schema": strict_schema(output), "strict": True},
    }


def json_object_schema_format(output: type[BaseModel]) -> dict[str, Any]:
    # llama.cpp turns this schema into a grammar; it rejects the json_schema form
    return {"type": "json_object", "schema": output.model_json_schema()}


def schema_instruction(output: type[BaseModel]) -> str:
    schema = json.dumps(output.model_json_schema(), ensure_ascii=False)
    return (
        "Reply with a single JSON object and nothing else: no prose, no code fences. "
        f"It must validate against this JSON Schema:\n{schema}"
    )


def with_schema_prompt(messages: list[Message], output: type[BaseModel]) -> list[Message]:
    """For servers that ignore response_format: the schema joins the system message."""
    instruction = schema_instruction(output)
    if messages and messages[0].role == "system":
        first = Message(role="system", content=f"{messages[0].content}\n\n{instruction}")
        return [first, *messages[1:]]
    return [Message(role="system", content=instruction), *messages]


def correction(raw: str | None, reason: str) -> list[Message]:
    """The two messages of the one retry: the model's own reply, then what was wrong."""
    return [
        Message(role="assistant", content=raw or ""),
        Message(
            role="user",
            content=(
                f"That reply could not be used: {reason}. Reply again with only the "
                "corrected JSON object."
            ),
        ),
    ]
