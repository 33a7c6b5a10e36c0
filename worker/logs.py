"""structlog set-up: JSON lines for journald when not on a terminal, console on one.

Values that look like credentials are masked before any record is written. The standard
library's records (psycopg's pool, the HTTP client) take the same path, and on the journal's
stream every line starts with its syslog priority (`<4>` …) so `journalctl -p` filters.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_PATTERNS = [
    # passwords inside connection URIs: scheme://user:password@host, up to the token's last
    # "@" (a password may hold "@" or ":"), and with the scheme's colon mistyped away
    (re.compile(r"(//[^:/@\s]+:)(\S+)(@)"), r"\1***\3"),
    # password=... in key/value connection strings
    (re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE), r"\1***"),
    # API keys of the OpenAI style and bearer tokens
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "sk-***"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+", re.IGNORECASE), r"\1***"),
]


# every pattern above needs one of these; most values have none and skip the four passes
_MAYBE_SECRET = re.compile(r"//|password|sk-|bearer", re.IGNORECASE)

# A configured secret shorter than this is not masked by value: masking a one-letter
# password would blank that letter in every record.
MIN_SECRET_CHARS = 4
# The values the process is configured with as secrets (API keys, the database password),
# masked wherever they appear, whatever their shape. Set once at start-up by the entry point
# (remember_secrets); module state because every writer of text (logs, stored messages)
# must see it without being handed it.
_known: list[str] = []


def remember_secrets(values: Iterable[str]) -> None:
    """Mask these exact values from now on, longest first (one may contain another)."""
    found = {*_known, *(value for value in values if len(value) >= MIN_SECRET_CHARS)}
    _known[:] = sorted(found, key=len, reverse=True)


def forget_secrets() -> None:
    _known.clear()


def mask(text: str) -> str:
    """`text` with the configured secrets and anything that looks like a credential masked."""
    for value in _known:
        if value in text:
            text = text.replace(value, "***")
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def map_strings(value: object, fn: Callable[[str], str]) -> object:
    """`fn` applied to every string inside a JSON-like value (lists and tuples become lists)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {key: map_strings(item, fn) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(item, fn) for item in value]
    return value


def _mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str | dict | list | tuple):
            event_dict[key] = map_strings(value, mask)
    return event_dict


class LineWriter:
    """structlog's output: whole lines, written and flushed once per event-loop step.

    A claim of fifty short jobs logs fifty records in one step of the loop; they reach the
    stream in one write right after it, in order, instead of fifty writes and flushes. Outside
    an event loop (the CLI, another thread) each record is written at once. What is buffered
    is flushed at exit too.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream  # None: whatever sys.stdout is at the time, like print()
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._lines.append(message)
            if loop is not None:
                if self._scheduled_on is not loop:  # not yet, or on a loop that is gone
                    self._scheduled_on = loop
                    loop.call_soon(self.flush)
                return
        self.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._scheduled_on = self._lines, [], None
            if not lines:
                return
            stream = self._stream or sys.stdout
            text = "\n".join(lines) + "\n"
            try:
                stream.write(text)
            except UnicodeEncodeError:
                # a character the stream cannot encode (a lone surrogate, or none of an
                # ASCII terminal's): escaped, so no record of the batch is lost
                encoding = getattr(stream, "encoding", None) or "utf-8"
                stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            stream.flush()


# syslog priorities by structlog method (and stdlib level) name, for journald's line prefix
_PRIORITY = {"debug": 7, "info": 6, "msg": 6, "warning": 4, "warn": 4, "error": 3,
             "exception": 3, "critical": 2, "fatal": 2}


def _journald_priority(_logger: Any, method: str, rendered: str) -> str:
    return f"<{_PRIORITY.get(method, 6)}>{rendered}"


class StructlogHandler(logging.Handler):
    """The standard library's records, formatted by structlog, written by our LineWriter."""

    def __init__(self, writer: LineWriter, formatter: logging.Formatter) -> None:
        super().__init__()
        self.writer = writer
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.msg(self.format(record))
        except Exception:  # logging must never raise into the code that logged
            self.handleError(record)


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None, *,
              journald: bool = False) -> None:
    """Records go to `stream` (stdout by default, which journald reads for a service);
    `journald` prefixes each line with its syslog priority."""
    json_output = fmt == "json" or (fmt == "auto" and not (stream or sys.stdout).isatty())
    writer = LineWriter(None if stream is None or stream is sys.stdout else stream)
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_output
        else structlog.dev.ConsoleRenderer()
    )
    last: list[Any] = [renderer, _journald_priority] if journald else [renderer]
    common: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_secrets,
    ]
    threshold = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *common, *last],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=True,
    )
    _route_stdlib(writer, structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *common],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last]),
        # libraries say at INFO what is routine for them (one line per HTTP request)
        max(threshold, logging.WARNING))


def _route_stdlib(writer: LineWriter, formatter: logging.Formatter, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StructlogHandler):
            root.removeHandler(handler)
    root.addHandler(StructlogHandler(writer, formatter))
    root.setLevel(level)
