"""The output pipeline of a turn: capped log file, line splitting, output throttle."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codyd.runs.output import (
    OUTPUT_INTERVAL_S,
    OUTPUT_TEXT_BYTES,
    CappedLog,
    Line,
    LineSplitter,
    OutputThrottle,
)

MARKER = re.compile(rb"\n\[codyd: log capped at (\d+) bytes; (\d+) bytes dropped\]\n")

# -- CappedLog --------------------------------------------------------------------------------


def test_capped_log_keeps_cap_bytes_then_one_marker(tmp_path: Path) -> None:
    """Past the cap, the file holds exactly cap bytes and one marker with the dropped count."""
    path = tmp_path / "stdout.log"
    log = CappedLog(path, cap=10)
    for chunk in (b"0123", b"4567", b"89ab", b"cdef", b"", b"g"):
        log.write(chunk)
    log.close()
    content = path.read_bytes()
    assert content[:10] == b"0123456789"
    match = MARKER.fullmatch(content[10:])
    assert match is not None, content
    assert (int(match[1]), int(match[2])) == (10, 7)
    assert log.written == 10
    assert log.dropped == 7


def test_capped_log_under_cap_has_no_marker(tmp_path: Path) -> None:
    """A log that never reaches its cap is the output, byte for byte."""
    path = tmp_path / "out.log"
    log = CappedLog(path, cap=100)
    log.write(b"hello\n")
    log.write(b"\x00\xff world")
    log.close()
    assert path.read_bytes() == b"hello\n\x00\xff world"


def test_capped_log_exactly_at_cap_has_no_marker(tmp_path: Path) -> None:
    """Output of exactly cap bytes loses nothing, so no marker is written."""
    path = tmp_path / "out.log"
    log = CappedLog(path, cap=6)
    log.write(b"abc")
    log.write(b"def")
    log.close()
    assert path.read_bytes() == b"abcdef"


def test_capped_log_close_twice(tmp_path: Path) -> None:
    """Closing twice writes the marker once and does not fail."""
    path = tmp_path / "out.log"
    log = CappedLog(path, cap=2)
    log.write(b"abcd")
    log.close()
    log.close()
    assert len(MARKER.findall(path.read_bytes())) == 1


@settings(max_examples=100, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=40), max_size=20),
    cap=st.integers(min_value=0, max_value=200),
)
def test_capped_log_property(chunks: list[bytes], cap: int) -> None:
    """Whatever the chunking, the file is the first cap bytes plus a marker iff any were dropped."""
    data = b"".join(chunks)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.log"
        log = CappedLog(path, cap)
        for chunk in chunks:
            log.write(chunk)
        log.close()
        content = path.read_bytes()
    assert content[:cap] == data[:cap]
    dropped = max(0, len(data) - cap)
    if dropped:
        match = MARKER.fullmatch(content[cap:])
        assert match is not None
        assert int(match[2]) == dropped
    else:
        assert content == data


# -- LineSplitter -------------------------------------------------------------------------------


def split_all(data: bytes, max_line_bytes: int, chunk: int | None = None) -> list[Line]:
    """Feed ``data`` in chunks of ``chunk`` bytes (all at once if None), then flush."""
    splitter = LineSplitter(max_line_bytes)
    size = chunk or max(len(data), 1)
    lines: list[Line] = []
    for start in range(0, len(data), size):
        lines.extend(splitter.feed(data[start : start + size]))
    return lines + splitter.flush()


def model(data: bytes, max_line_bytes: int) -> list[Line]:
    """What the splitter must produce, written the obvious way."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    lines: list[Line] = []
    for part in parts:
        text = part[:-1] if part.endswith(b"\r") else part
        pieces = [text[i : i + max_line_bytes] for i in range(0, len(text), max_line_bytes)]
        pieces = pieces or [b""]
        lines.extend(Line(p, split=True) for p in pieces[:-1])
        lines.append(Line(pieces[-1], split=False))
    return lines


def test_lines_and_crlf() -> None:
    """LF and CRLF both end a line; the CR is not part of it; empty lines are kept."""
    assert split_all(b"one\r\ntwo\n\nthree\r\n", 100) == [
        Line(b"one", False),
        Line(b"two", False),
        Line(b"", False),
        Line(b"three", False),
    ]


def test_cr_inside_a_line_is_kept() -> None:
    """Only a CR right before LF is dropped."""
    assert split_all(b"a\rb\r\r\n", 100) == [Line(b"a\rb\r", False)]


def test_no_trailing_newline_comes_out_on_flush() -> None:
    """An unterminated last line is held until flush."""
    splitter = LineSplitter(100)
    assert splitter.feed(b"done\npartial") == [Line(b"done", False)]
    assert splitter.flush() == [Line(b"partial", False)]
    assert splitter.flush() == []


def test_crlf_split_across_feeds() -> None:
    """A CR at the end of one chunk and its LF in the next still make one CRLF."""
    splitter = LineSplitter(100)
    assert splitter.feed(b"abc\r") == []
    assert splitter.feed(b"\ndef") == [Line(b"abc", False)]
    assert splitter.flush() == [Line(b"def", False)]


def test_long_line_split_at_max_line_bytes() -> None:
    """A long line comes out in max_line_bytes pieces: split=True except the last."""
    assert split_all(b"abcdefghij\nxy\n", 4) == [
        Line(b"abcd", True),
        Line(b"efgh", True),
        Line(b"ij", False),
        Line(b"xy", False),
    ]


def test_line_of_exactly_max_bytes_is_not_split() -> None:
    """A line of exactly max_line_bytes is one piece."""
    assert split_all(b"abcd\r\n", 4) == [Line(b"abcd", False)]


def test_long_unterminated_line_streams_out_before_its_end() -> None:
    """Pieces of a long line are delivered while it is still being written."""
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcdefghij") == [Line(b"abcd", True), Line(b"efgh", True)]
    assert splitter.feed(b"\n") == [Line(b"ij", False)]


def test_full_piece_followed_by_cr_waits_for_lf() -> None:
    """A full piece then CR is held: if LF follows, that piece was the whole line."""
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd\r") == []
    assert splitter.feed(b"e\n") == [Line(b"abcd", True), Line(b"\re", False)]
    assert splitter.feed(b"wxyz\r") == []
    assert splitter.feed(b"\n") == [Line(b"wxyz", False)]


STREAMS = st.lists(st.sampled_from([b"a", b"bc", b"\r", b"\n", b"\r\n", b"\xc3\xa9"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(parts=STREAMS, max_line_bytes=st.integers(min_value=1, max_value=6))
def test_byte_by_byte_equals_at_once(parts: list[bytes], max_line_bytes: int) -> None:
    """Feeding one byte at a time gives exactly what feeding everything at once gives."""
    data = b"".join(parts)
    at_once = split_all(data, max_line_bytes)
    assert split_all(data, max_line_bytes, chunk=1) == at_once
    assert at_once == model(data, max_line_bytes)


@settings(max_examples=200, deadline=None)
@given(
    parts=STREAMS,
    max_line_bytes=st.integers(min_value=1, max_value=6),
    chunk=st.integers(min_value=1, max_value=9),
)
def test_any_chunking_matches_the_model(
    parts: list[bytes], max_line_bytes: int, chunk: int
) -> None:
    """Any chunk size gives the model's lines, none longer than max_line_bytes."""
    data = b"".join(parts)
    lines = split_all(data, max_line_bytes, chunk=chunk)
    assert lines == model(data, max_line_bytes)
    assert all(len(line.text) <= max_line_bytes for line in lines)


# -- OutputThrottle ------------------------------------------------------------------------------


def test_throttle_defaults() -> None:
    """Events are at most 2048 bytes of text and 100 ms apart by default."""
    throttle = OutputThrottle()
    assert (throttle.max_bytes, throttle.interval) == (2048, 0.1)
    assert (OUTPUT_TEXT_BYTES, OUTPUT_INTERVAL_S) == (2048, 0.1)


def test_take_returns_none_when_empty() -> None:
    """Nothing pending: take gives None and does not count as an emit."""
    throttle = OutputThrottle()
    assert not throttle.has_pending()
    assert throttle.take(5.0) is None
    assert throttle.next_due() == float("-inf")


def test_next_due_is_last_emit_plus_interval() -> None:
    """The next event is due one interval after the last one taken."""
    throttle = OutputThrottle()
    throttle.add("stdout", "x\n")
    assert throttle.next_due() == float("-inf")
    assert throttle.take(12.5) == {"stream": "stdout", "text": "x\n"}
    assert throttle.next_due() == pytest.approx(12.6)
    assert throttle.take(13.0) is None
    assert throttle.next_due() == pytest.approx(12.6)


def test_output_is_coalesced_per_stream() -> None:
    """Output of one stream is joined into one event; streams never mix."""
    throttle = OutputThrottle()
    throttle.add("stdout", "a\n")
    throttle.add("stderr", "err\n")
    throttle.add("stdout", "b\n")
    assert throttle.take(1.0) == {"stream": "stdout", "text": "a\nb\n"}
    assert throttle.has_pending()
    assert throttle.take(1.1) == {"stream": "stderr", "text": "err\n"}
    assert not throttle.has_pending()
    assert throttle.take(1.2) is None


def test_streams_take_turns() -> None:
    """A stream that was just emitted goes after the others that are waiting."""
    throttle = OutputThrottle()
    throttle.add("stdout", "1")
    throttle.add("stderr", "2")
    assert throttle.take(0.0) == {"stream": "stdout", "text": "1"}
    throttle.add("stdout", "3")
    assert throttle.take(0.1) == {"stream": "stderr", "text": "2"}
    assert throttle.take(0.2) == {"stream": "stdout", "text": "3"}


def test_overflow_is_counted_in_dropped_bytes() -> None:
    """Text beyond 2048 bytes is left out and counted, on its own stream only."""
    throttle = OutputThrottle()
    throttle.add("stdout", "a" * 3000)
    throttle.add("stderr", "b" * 10)
    event = throttle.take(0.0)
    assert event == {"stream": "stdout", "text": "a" * 2048, "dropped_bytes": 952}
    assert throttle.take(0.1) == {"stream": "stderr", "text": "b" * 10}


def test_dropped_count_resets_after_take() -> None:
    """After an event, the stream starts again with room and no dropped count."""
    throttle = OutputThrottle()
    throttle.add("stdout", "a" * 2050)
    assert throttle.take(0.0) is not None
    throttle.add("stdout", "ok")
    assert throttle.take(0.1) == {"stream": "stdout", "text": "ok"}


@pytest.mark.parametrize(("char", "width"), [("é", 2), ("€", 3), ("🙂", 4)])
def test_never_cut_inside_a_character(char: str, width: int) -> None:
    """A character that does not fit whole is left out whole, and its bytes counted."""
    for room in range(1, width):
        throttle = OutputThrottle()
        throttle.add("stdout", "a" * (2048 - room) + char)
        event = throttle.take(0.0)
        assert event == {"stream": "stdout", "text": "a" * (2048 - room), "dropped_bytes": width}
    throttle = OutputThrottle()
    throttle.add("stdout", "a" * (2048 - width) + char)
    assert throttle.take(0.0) == {"stream": "stdout", "text": "a" * (2048 - width) + char}


def test_text_after_a_drop_is_dropped_too() -> None:
    """Once text was left out, later text waits out the event: the text has no hole."""
    throttle = OutputThrottle()
    throttle.add("stdout", "a" * 2047)
    throttle.add("stdout", "é")
    throttle.add("stdout", "z")
    assert throttle.take(0.0) == {"stream": "stdout", "text": "a" * 2047, "dropped_bytes": 3}


def test_lone_surrogate_does_not_break_the_throttle() -> None:
    """Text that is not valid Unicode is replaced, not fatal."""
    throttle = OutputThrottle()
    throttle.add("stdout", "x\udcffy")
    assert throttle.take(0.0) == {"stream": "stdout", "text": "x?y"}


@settings(max_examples=300, deadline=None)
@given(
    adds=st.lists(
        st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(max_size=700)), max_size=12
    ),
    max_bytes=st.sampled_from([1, 3, 7, 64, 2048]),
)
def test_throttle_property(adds: list[tuple[str, str]], max_bytes: int) -> None:
    """Per stream: text is a whole-character prefix within max_bytes; text + dropped = all."""
    throttle = OutputThrottle(max_bytes=max_bytes)
    sent: dict[str, str] = {}
    for stream, text in adds:
        throttle.add(stream, text)
        sent[stream] = sent.get(stream, "") + text
    events: list[dict[str, Any]] = []
    while (event := throttle.take(float(len(events)))) is not None:
        events.append(event)
    assert sorted(e["stream"] for e in events) == sorted(sent)
    for event in events:
        whole = sent[event["stream"]]
        text = event["text"]
        assert len(text.encode()) <= max_bytes
        assert whole.startswith(text)
        dropped = len(whole.encode()) - len(text.encode())
        assert event.get("dropped_bytes", 0) == dropped
        assert ("dropped_bytes" in event) == (dropped > 0)
        # Nothing was cut short that would still have fitted.
        rest = whole[len(text) :]
        if rest:
            assert len(text.encode()) + len(rest[0].encode()) > max_bytes
