"""Log lines: both formats, and the buffered fast path the webhook uses for its admission line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import orjson
import pytest

from virtdev import logs

FIELDS = {"endpoint": "mutate", "uid": "u-1", "pod": "vms/virt-launcher-a", "patch_ops": 5}


class Stream(io.StringIO):
    """stderr as the tests see it: what was written, and how many times it was written to."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.written.set()
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[Stream]:
    """`logs.setup` on a stream of the test's; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logs._handler
    try:
        yield Stream()
    finally:
        root.handlers[:], _, logs._handler = saved
        root.setLevel(saved[1])


def lines(stream: Stream) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_hot_line_reads_exactly_like_the_same_line_logged_normally(
    stream: Stream, log_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs.setup(log_format, stream=stream)
    monkeypatch.setattr(logs.time, "time", lambda: 1_790_000_000.25)  # type: ignore[attr-defined]  # same instant for both
    log = logging.getLogger("virtdev.webhook")
    logs.hot(log, "admission patched", dict(FIELDS))
    record = log.makeRecord(log.name, logging.INFO, "", 0, "admission patched", (), None)
    record.created = 1_790_000_000.25
    record.msecs = 250.0
    record.__dict__.update(FIELDS)
    log.handle(record)
    hot, normal = lines(stream)
    assert hot == normal
    if log_format == "json":
        assert json.loads(hot) == {
            "time": "2026-09-21T14:13:20.250Z",
            "level": "info",
            "logger": "virtdev.webhook",
            "msg": "admission patched",
            **FIELDS,
        }
    else:
        assert hot.endswith(
            " INFO    virtdev.webhook: admission patched endpoint=mutate uid=u-1 "
            "pod=vms/virt-launcher-a patch_ops=5"
        )


def test_hot_lines_wait_in_the_buffer_until_any_other_record_writes_them_in_order(
    stream: Stream,
) -> None:
    logs.setup("json", stream=stream)
    log = logging.getLogger("virtdev.webhook")
    for index in range(3):
        logs.hot(log, f"admission {index}", {})
    assert stream.writes == 0
    log.warning("node view not synced")
    assert [json.loads(line)["msg"] for line in lines(stream)] == [
        "admission 0",
        "admission 1",
        "admission 2",
        "node view not synced",
    ]
    assert stream.writes == 1  # one write for the lot, not one per line


def test_a_full_buffer_is_written_out_without_waiting(stream: Stream) -> None:
    logs.setup("json", stream=stream)
    log = logging.getLogger("virtdev.webhook")
    line_bytes = len(json.dumps({"x": 1}))  # under 100 characters a line
    written = 0
    while stream.writes == 0:
        logs.hot(log, "admission patched", {"filler": "x" * 100})
        written += 1
        assert written * line_bytes < 2 * logs.BUFFER_BYTES, "the buffer was never written out"
    assert len(lines(stream)) == written
    assert sum(len(line) + 1 for line in lines(stream)) >= logs.BUFFER_BYTES


async def test_flush_every_writes_out_a_quiet_servers_lines(stream: Stream) -> None:
    logs.setup("json", stream=stream)
    logs.hot(logging.getLogger("virtdev.webhook"), "admission patched", {})
    flusher = asyncio.create_task(logs.flush_every(0.01))
    try:
        await asyncio.wait_for(stream.written.wait(), timeout=10)
    finally:
        flusher.cancel()
    assert json.loads(stream.getvalue())["msg"] == "admission patched"


def test_hot_respects_the_level(stream: Stream) -> None:
    logs.setup("json", "warning", stream=stream)
    logs.hot(logging.getLogger("virtdev.webhook"), "admission patched", {})
    logs.flush()
    assert stream.getvalue() == ""


def test_with_any_other_handler_attached_hot_lines_are_ordinary_records(
    stream: Stream, caplog: pytest.LogCaptureFixture
) -> None:
    """pytest's caplog, or a program embedding the webhook, sees every line as a LogRecord."""
    logs.setup("json", stream=stream)  # replaces the root's handlers, caplog's among them
    logging.getLogger().addHandler(caplog.handler)
    log = logging.getLogger("virtdev.webhook")
    logs.hot(log, "admission patched", dict(FIELDS))
    assert [r.getMessage() for r in caplog.records] == ["admission patched"]
    assert caplog.records[0].__dict__["uid"] == "u-1"
    assert json.loads(stream.getvalue())["uid"] == "u-1"  # written at once, as records are


def test_a_traceback_stays_inside_the_json_line(stream: Stream) -> None:
    logs.setup("json", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("virtdev.webhook").exception("bug", extra={"endpoint": "mutate"})
    (line,) = lines(stream)
    entry = json.loads(line)
    assert entry["endpoint"] == "mutate"
    assert "RuntimeError: boom" in entry["error"]


# --- bounded lines ----------------------------------------------------------------------------

MEBIBYTE_NAME = "vms/" + "virt-launcher-" * 75_000  # a 1 MiB generateName, as a pod may carry


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize("path", ["hot", "record"])
def test_a_mebibyte_pod_name_is_cut_to_the_field_bound_on_either_path(
    stream: Stream, log_format: str, path: str
) -> None:
    logs.setup(log_format, stream=stream)
    log = logging.getLogger("virtdev.webhook")
    fields = {**FIELDS, "pod": MEBIBYTE_NAME}
    if path == "hot":
        logs.hot(log, "admission patched", fields)
        logs.flush()
    else:
        log.warning("admission denied", extra=fields)
    (line,) = lines(stream)
    assert len(line) < logs.FIELD_CHARS + 500
    cut = f"{MEBIBYTE_NAME[: logs.FIELD_CHARS]}…({len(MEBIBYTE_NAME)} chars)"
    if log_format == "json":
        assert json.loads(line)["pod"] == cut
        assert json.loads(line)["uid"] == "u-1"
    else:
        assert f" pod={cut} " in line


def test_short_fields_are_logged_as_they_are() -> None:
    fields = {**FIELDS, "duration_ms": 0.4, "ok": True, "none": None}
    assert logs.capped_fields(fields) is fields  # the admission line pays no copy


def test_lists_and_maps_are_capped_in_items_length_and_depth() -> None:
    value = {
        "violations": ["x" * 1000] * 100,
        "nested": {"a": {"b": {"c": "deep"}}},
        f"k{'y' * 1000}": 1,
        **{f"key{i}": i for i in range(50)},
    }
    capped = logs.capped(value)
    assert len(capped) == logs.FIELD_ITEMS + 1 and capped["…"] == "(53 entries)"
    violations = capped["violations"]
    assert len(violations) == logs.FIELD_ITEMS + 1 and violations[-1] == "…(100 items)"
    assert violations[0] == "x" * logs.FIELD_CHARS + "…(1000 chars)"
    assert capped["nested"] == {"a": "{'b': {'c': 'deep'}}"}  # the third level as text
    assert f"k{'y' * (logs.FIELD_CHARS - 1)}…(1001 chars)" in capped


def test_a_line_of_many_capped_fields_loses_its_largest_and_stays_json(stream: Stream) -> None:
    logs.setup("json", stream=stream)
    fields: dict[str, object] = {f"f{i}": [["\x01" * 300] * 40] * 40 for i in range(4)}
    fields["small"] = "kept"
    logging.getLogger("virtdev.webhook").info("many", extra=fields)
    (line,) = lines(stream)
    assert len(line.encode()) + 1 <= logs.LINE_BYTES
    entry = json.loads(line)
    assert entry["small"] == "kept" and entry["msg"] == "many"
    assert entry["f0"].startswith("…(") and entry["f0"].endswith(" bytes)")


def test_a_long_message_and_a_long_traceback_are_cut(stream: Stream) -> None:
    logs.setup("json", stream=stream)
    try:
        raise ValueError("bad value " + "v" * 100_000)
    except ValueError:
        logging.getLogger("virtdev.webhook").exception("bug %s", "m" * 100_000)
    (line,) = lines(stream)
    entry = json.loads(line)
    assert len(entry["msg"]) < logs.MESSAGE_CHARS + 32
    assert len(entry["error"]) <= logs.TRACEBACK_CHARS
    assert entry["error"].startswith("Traceback") and "ValueError: bad value vvv" in entry["error"]


def test_a_text_line_never_breaks_into_two_whatever_a_field_holds(stream: Stream) -> None:
    logs.setup("text", stream=stream)
    forged = "vms/a\n2026-01-01 00:00:00,000 INFO    virtdev.webhook: admission allowed"
    logging.getLogger("virtdev.webhook").info("admission\rdenied", extra={"pod": forged})
    (line,) = lines(stream)
    assert "pod=vms/a\\n2026-01-01" in line and "admission\\rdenied" in line


def test_a_text_line_of_wide_characters_is_cut_to_the_line_bound_in_bytes(
    stream: Stream,
) -> None:
    logs.setup("text", stream=stream)
    fields = {f"f{i}": "€" * logs.FIELD_CHARS for i in range(200)}  # 768 bytes each
    logging.getLogger("virtdev.webhook").info("wide", extra=fields)
    (line,) = lines(stream)
    assert len(line.encode()) + 1 <= logs.LINE_BYTES
    assert line.endswith("…(cut)")


def test_a_short_json_line_is_written_as_it_is_and_a_long_one_field_by_field() -> None:
    """The hot path writes a line of at most SHORT_LINE_BYTES whole; past it, every field is
    cut, so a field just long enough to make the line long is cut too."""
    formatter = logs.JSONFormatter()
    short = {"pod": "p" * 300}
    assert orjson.loads(formatter.line(0.0, "INFO", "t", "m", short))["pod"] == "p" * 300
    long = {"pod": "p" * logs.SHORT_LINE_BYTES}
    written = orjson.loads(formatter.line(0.0, "INFO", "t", "m", long))["pod"]
    assert written == "p" * logs.FIELD_CHARS + f"…({logs.SHORT_LINE_BYTES} chars)"
