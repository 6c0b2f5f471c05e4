"""Log lines for people (text) or for log pipelines (one JSON object per line).

Call sites pass facts as `extra={...}`; both formats print them, so an operator grepping text
logs and a Loki query over JSON logs see the same fields. Pod bodies are never logged at info.

The webhook writes one line per admission, on the path every pod creation waits on. For that
line `hot()` skips the logging module's per-record machinery (a LogRecord, filters, a lock, a
`write` and a flush per line) and appends the formatted line to a buffer, as web servers do
with access logs (nginx's `access_log ... buffer=`, Envoy's flush interval). The buffer is
written out by every other log record (so lines stay in order), when it holds 64 KiB, by
`flush_every()` twice a second, and at exit. Whenever a line could reach any handler but the
one `setup()` installed (pytest's caplog, an embedding program), `hot()` logs it the ordinary
way instead, so what is logged never depends on the fast path.

Every line is bounded, whoever wrote its fields: a pod's name, a user, an error's text may be
the requester's to write, megabytes long. A JSON line of at most `SHORT_LINE_BYTES` is written
as it is (nothing in it can be long); otherwise each string field is cut to `FIELD_CHARS`, the
message to `MESSAGE_CHARS`, lists and maps to `FIELD_ITEMS` entries two levels deep, a traceback
to `TRACEBACK_CHARS`, and a line still over `LINE_BYTES` loses its largest fields. Cutting says how
long the text was (`…(1048576 chars)`). In text logs a field or message with a line break or
another control character is written escaped (`\\n`), so that no field begins a line of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn adds an ANSI-coloured copy of its message
}

#: Buffered hot lines are written out at this size, or by `flush_every`, whichever comes first.
BUFFER_BYTES = 64 * 1024
FLUSH_SECONDS = 0.5

#: Characters of a string field kept (a pod's `namespace/name` is at most 317).
FIELD_CHARS = 256
#: Entries of a list or map field kept, at each of its two levels; deeper ones become text.
FIELD_ITEMS = 32
MESSAGE_CHARS = 1024
#: Characters of a traceback kept (its first and last lines), each line at most MESSAGE_CHARS.
TRACEBACK_CHARS = 16 * 1024
#: No line is longer, in bytes as written (UTF-8), its newline included.
LINE_BYTES = 64 * 1024
#: A JSON line this short is written as it is: none of its fields can be long (the admission
#: line is ~300 bytes); only longer ones are bounded field by field.
SHORT_LINE_BYTES = 1024
_SCALARS = frozenset((int, float, bool, type(None)))


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


def cut(text: str, limit: int = FIELD_CHARS) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def capped(value: Any, depth: int = 0) -> Any:
    """A field's value within the bounds of the module's docstring; anything but text,
    numbers, lists and maps becomes its `str()`, as orjson's `default=str` would write it."""
    kind = type(value)
    if kind is str:
        return cut(value)
    if kind in _SCALARS:
        return value
    if depth < 2 and kind in (list, tuple, set, frozenset):
        shown = [capped(item, depth + 1) for item in itertools.islice(value, FIELD_ITEMS)]
        if len(value) > FIELD_ITEMS:
            shown.append(f"…({len(value)} items)")
        return shown
    if depth < 2 and kind is dict:
        entries = itertools.islice(value.items(), FIELD_ITEMS)
        kept = {cut(str(key)): capped(item, depth + 1) for key, item in entries}
        if len(value) > FIELD_ITEMS:
            kept["…"] = f"({len(value)} entries)"
        return kept
    return cut(str(value))


def capped_fields(extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` itself when every field is a short string or a number (the admission line),
    else a copy with each field `capped`."""
    for value in extra.values():
        if value.__class__ is str:
            if len(value) <= FIELD_CHARS:
                continue
        elif value.__class__ in _SCALARS:
            continue
        return {key: capped(item) for key, item in extra.items()}
    return extra


def traceback_capped(text: str) -> str:
    """A traceback with each line cut, and only its first and last lines past the bound."""
    if len(text) <= TRACEBACK_CHARS and len(text) <= MESSAGE_CHARS:
        return text
    lines = [cut(line, MESSAGE_CHARS) for line in text.splitlines()]
    text = "\n".join(lines)
    if len(text) <= TRACEBACK_CHARS:
        return text
    half = TRACEBACK_CHARS // 2
    return f"{text[:half]}\n…({len(text)} chars)…\n{text[-half:]}"


def _printable(text: str) -> str:
    """Text for a text log line: control characters (line breaks) escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class _Clock:
    """`created` as text, the seconds formatted once per second rather than once per line."""

    def __init__(
        self,
        seconds_format: str,
        millis_format: str,
        convert: Callable[[float], time.struct_time],
    ) -> None:
        self._seconds_format = seconds_format
        self._millis_format = millis_format
        self._convert = convert  # time.gmtime or time.localtime
        # One tuple, replaced whole: `hot` formats outside the handler's lock, and another
        # thread must never pair one second with another second's text.
        self._cached: tuple[int, str] = (-1, "")

    def __call__(self, created: float) -> str:
        second = int(created)
        cached = self._cached
        if cached[0] != second:
            cached = self._cached = (
                second,
                time.strftime(self._seconds_format, self._convert(second)),
            )
        return self._millis_format % (cached[1], int((created - second) * 1000))


class LineFormatter(logging.Formatter):
    """A formatter that can also format a line from its parts, without a LogRecord (`hot`)."""

    def line(
        self, created: float, level: str, name: str, message: str, extra: dict[str, Any]
    ) -> str:
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(
            record.created, record.levelname, record.name, record.getMessage(), fields_of(record)
        )
        if record.exc_info:  # lines of their own, as logging prints them; bounded
            line += "\n" + traceback_capped(self.formatException(record.exc_info))
        return line


class JSONFormatter(LineFormatter):
    """One JSON object per line, with orjson (the webhook logs every admission)."""

    def __init__(self) -> None:
        super().__init__()
        self._time = _Clock("%Y-%m-%dT%H:%M:%S", "%s.%03dZ", time.gmtime)

    def line(
        self, created: float, level: str, name: str, message: str, extra: dict[str, Any]
    ) -> str:
        # The hot path (every admission): written whole first, in one orjson call; a line that
        # short holds nothing long, so only a longer one is taken apart and bounded field by
        # field (`_entry`). Looking at each field of every line cost the admission line a
        # quarter more instructions (bench/webhook_instructions.py --breakdown).
        entry = {"time": self._time(created), "level": level.lower(), "logger": name}
        entry["msg"] = message
        entry.update(extra)
        line = orjson.dumps(entry, default=str)
        if len(line) <= SHORT_LINE_BYTES:
            return line.decode()
        line = orjson.dumps(self._entry(created, level, name, message, extra), default=str)
        return line.decode() if len(line) < LINE_BYTES else _fitted(orjson.loads(line))

    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(
            record.created, record.levelname, record.name, record.getMessage(), fields_of(record)
        )
        if record.exc_info:  # the traceback is a field, so the line stays one JSON object
            entry["error"] = traceback_capped(self.formatException(record.exc_info))
        return _encoded(entry)

    def _entry(
        self, created: float, level: str, name: str, message: str, extra: dict[str, Any]
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": self._time(created),
            "level": level.lower(),
            "logger": name,
            "msg": message if len(message) <= MESSAGE_CHARS else cut(message, MESSAGE_CHARS),
        }
        entry.update(capped_fields(extra))
        return entry


def _encoded(entry: dict[str, Any]) -> str:
    line = orjson.dumps(entry, default=str)
    return line.decode() if len(line) < LINE_BYTES else _fitted(orjson.loads(line))


def _fitted(entry: dict[str, Any]) -> str:
    """A line over `LINE_BYTES` (many fields, each within bounds), under it: its largest
    fields replaced, one by one, by how large they were."""
    sizes = {key: len(orjson.dumps(value)) for key, value in entry.items()}
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        entry[key] = f"…({sizes[key]} bytes)"
        line = orjson.dumps(entry)
        if len(line) < LINE_BYTES:
            break
    return line.decode()  # the base keys alone are short: always under


class TextFormatter(LineFormatter):
    """`time LEVEL logger: message key=value ...`, time in local time as logging prints it."""

    def __init__(self) -> None:
        super().__init__()
        self._time = _Clock(
            self.default_time_format, self.default_msec_format or "%s,%03d", time.localtime
        )

    def line(
        self, created: float, level: str, name: str, message: str, extra: dict[str, Any]
    ) -> str:
        message = _printable(cut(message, MESSAGE_CHARS))
        line = f"{self._time(created)} {level:<7} {name}: {message}"
        if extra:
            line += " " + " ".join(
                f"{key}={_printable(str(value))}" for key, value in capped_fields(extra).items()
            )
        if len(line) >= LINE_BYTES // 4 and len(line.encode()) >= LINE_BYTES:
            line = line.encode()[: LINE_BYTES - 32].decode(errors="ignore") + "…(cut)"
        return line


class LineBuffer:
    """The process's log stream, with a buffer in front for `hot` lines.

    Every write through the logging handler flushes (so warnings and errors appear at once,
    after any hot lines before them); hot lines wait for one of the flushes described above.
    """

    def __init__(self, stream: TextIO, limit: int = BUFFER_BYTES) -> None:
        self.stream = stream
        self._limit = limit
        self._parts: list[str] = []
        self._size = 0

    def append(self, line: str) -> None:
        self._parts.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()

    def write(self, text: str) -> None:
        self.append(text)

    def flush(self) -> None:
        # Swap before joining: a line appended meanwhile by another thread (the logging
        # handler's lock does not cover `append`) lands in one list or the other, never lost.
        parts, self._parts = self._parts, []
        self._size = 0
        if parts:
            self.stream.write("".join(parts))
        self.stream.flush()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `setup` installs on the root logger; `hot` recognises it."""

    stream: LineBuffer
    formatter: LineFormatter


_handler: _Handler | None = None


def _reaches_only_ours(logger: logging.Logger) -> bool:
    """Would a record of `logger` reach exactly the handler `setup` installed, unfiltered?"""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return False
        if current.handlers:
            return current is logging.root and current.handlers == [_handler]
        if not current.propagate:
            return False
        current = current.parent
    return False


def hot(logger: logging.Logger, message: str, extra: dict[str, Any]) -> None:
    """`logger.info(message, extra=extra)` for a line written on a hot path (see the module)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is None or handler.level > logging.INFO or not _reaches_only_ours(logger):
        logger.info("%s", message, extra=extra)
        return
    text = handler.formatter.line(time.time(), "INFO", logger.name, message, extra)
    handler.stream.append(text + "\n")


def flush() -> None:
    """Write out buffered hot lines now. A closed or broken stderr has nowhere to take them."""
    if _handler is not None:
        with contextlib.suppress(ValueError, OSError):
            _handler.flush()


async def flush_every(seconds: float = FLUSH_SECONDS) -> None:
    """Write out buffered hot lines periodically, so a quiet server's lines are not held back."""
    while True:
        await asyncio.sleep(seconds)
        flush()


def setup(
    log_format: str = "text", level: int | str = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure the root logger (to stderr) once per process; uvicorn's loggers follow it."""
    global _handler
    # Neither format prints the caller's file, thread or process, and the webhook logs every
    # admission: skip collecting them (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    flush()  # configured again: what the old handler holds goes out first
    handler = _Handler(LineBuffer(sys.stderr if stream is None else stream))
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    _handler = handler
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
