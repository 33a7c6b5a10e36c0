"""Versioned prompt templates, `prompts/<kind>/v{N}.yaml`, loaded and checked at start-up.

Version `latest` takes the highest N, `2` pins one (the settings say which: PROMPT_VERSION);
a missing or malformed file is a ConfigError before any job runs, never a job failure.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.errors import ConfigError, FinalFailure
from worker.models.types import CompletionRequest, Message, OutT
from worker.paths import PROMPTS_DIR

if TYPE_CHECKING:
    from worker.config import PromptSettings

_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.yaml$")
_SELECTOR = re.compile(r"^(latest|[1-9][0-9]*)$")
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


class ResponseFormat(BaseModel):
    """The optional `response_format` section: output instructions appended to the system
    prompt, and per-prompt defaults for the completion budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instructions: str | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)


class Budget(BaseModel):
    """What one completion may spend: its token limit and its temperature, and the most
    characters its rendered prompt may have (every value is clipped by its kind; this is the
    check that the clipped whole still fits, made before any call)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(gt=0)
    temperature: float = Field(ge=0.0, le=2.0)
    prompt_chars: int = Field(default=100_000, gt=0)


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str = Field(min_length=1)
    user: str = Field(min_length=1)
    response_format: ResponseFormat | str | None = None


def template_fields(template: str) -> frozenset[str]:
    """The placeholders of a template; ValueError for anything but plain `{name}` fields."""
    names: set[str] = set()
    for _literal, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        # attribute and index lookups ({x.__class__}, {x[0]}) would let a template reach
        # into the objects it is given; specs and conversions have no use on text
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{field}}} is not a plain {{name}}")
        names.add(field)
    return frozenset(names)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


class Prompt(BaseModel):
    """One prompt version, ready to render."""

    model_config = ConfigDict(frozen=True)

    kind: str
    version: int
    path: Path
    system: str
    user: str
    response_format: ResponseFormat | None = None

    @property
    def fields(self) -> frozenset[str]:
        return template_fields(self.system) | template_fields(self.user)

    def budget(self, default: Budget) -> Budget:
        """The file's `response_format` limits where it sets them, the kind's elsewhere; a
        temperature of 0 in the file is 0."""
        given = self.response_format
        if given is None:
            return default
        return default.model_copy(update={
            "max_tokens": default.max_tokens if given.max_tokens is None else given.max_tokens,
            "temperature": (default.temperature if given.temperature is None
                            else given.temperature),
        })

    def request(self, values: Mapping[str, object], output: type[OutT],
                default: Budget) -> CompletionRequest[OutT]:
        """The completion this prompt asks for with `values`, within its budget."""
        budget = self.budget(default)
        messages = self.render(values)
        size = prompt_chars(messages)
        if size > budget.prompt_chars:
            raise FinalFailure(
                "input_too_large", f"the {self.kind} prompt (v{self.version}) is {size} "
                f"characters with every value clipped, over its budget of {budget.prompt_chars}; "
                "lower the evidence settings or shorten the prompt file")
        return CompletionRequest(messages=messages, output=output,
                                 max_tokens=budget.max_tokens, temperature=budget.temperature)

    def render(self, values: Mapping[str, object]) -> tuple[Message, ...]:
        """System and user messages with `values` inserted as text. Values are never parsed
        as templates, so user text containing braces is inserted as it is."""
        missing = self.fields - set(values)
        if missing:
            raise ConfigError(
                f"{self.path}: no value for placeholder(s) {', '.join(sorted(missing))}"
            )
        texts = {name: _text(values[name]) for name in self.fields}
        system = self.system.format_map(texts)
        if self.response_format and self.response_format.instructions:
            system = f"{system}\n\n{self.response_format.instructions}"
        return (
            Message(role="system", content=system),
            Message(role="user", content=self.user.format_map(texts)),
        )


def prompt_chars(messages: tuple[Message, ...]) -> int:
    """A rendered prompt's size in characters, as its budget counts it."""
    return sum(len(message.content) for message in messages)


def available_versions(kind: str, directory: Path = PROMPTS_DIR) -> list[int]:
    folder = directory / kind
    if not folder.is_dir():
        return []
    found = (_VERSION_FILE.match(p.name) for p in folder.iterdir() if p.is_file())
    return sorted(int(m.group(1)) for m in found if m)


def _read(path: Path) -> _File:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read prompt file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a prompt file is a mapping with `system` and `user`")
    try:
        return _File.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: malformed prompt file:\n{exc}") from exc


def prompt_for(kind: str, settings: PromptSettings,
               variables: Iterable[str] | None = None) -> Prompt:
    """The prompt the settings select for `kind` (PROMPT_VERSION_<KIND>, else PROMPT_VERSION,
    else the latest), from their prompt directory."""
    return load_prompt(kind, settings.version_for(kind), directory=settings.directory,
                       variables=variables)


def load_prompt(
    kind: str,
    version: str | int = "latest",
    *,
    directory: Path = PROMPTS_DIR,
    variables: Iterable[str] | None = None,
) -> Prompt:
    """Load and check one prompt; `variables`, when given, are the only placeholders the
    template may use."""
    if not _KIND.match(kind):
        raise ConfigError(f"prompt kind {kind!r} is not a plain lower-case name")
    selector = str(version)
    if not _SELECTOR.match(selector):
        raise ConfigError(f"prompt version {selector!r} for {kind}: use 'latest' or a number")
    versions = available_versions(kind, directory)
    if not versions:
        raise ConfigError(f"no prompt files {directory / kind}/v<N>.yaml for job kind {kind!r}")
    number = versions[-1] if selector == "latest" else int(selector)
    if number not in versions:
        raise ConfigError(
            f"{directory / kind}/v{number}.yaml does not exist "
            f"(available: {', '.join(f'v{n}' for n in versions)})"
        )
    path = directory / kind / f"v{number}.yaml"
    file = _read(path)
    response_format = (
        ResponseFormat(instructions=file.response_format)
        if isinstance(file.response_format, str)
        else file.response_format
    )
    prompt = Prompt(kind=kind, version=number, path=path, system=file.system, user=file.user,
                    response_format=response_format)
    try:
        fields = prompt.fields
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if variables is not None:
        unknown = fields - set(variables)
        if unknown:
            raise ConfigError(
                f"{path}: unknown placeholder(s) {', '.join(sorted(unknown))}; "
                f"this job kind supplies {', '.join(sorted(variables))}"
            )
    return prompt
