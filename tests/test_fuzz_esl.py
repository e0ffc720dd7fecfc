"""Fuzzing the ESL framer (cardd.esl.protocol.FrameParser) with mutated
FreeSWITCH captures (tests/fixtures/esl-captures).

Whatever the bytes and however they are split: the only exception is
ProtocolError, and the parser never holds more than one header block
(max_header_bytes) or one announced body. CI runs a short fuzz
(FUZZ_EXAMPLES to run longer).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardd.errors import ProtocolError
from cardd.esl.protocol import FrameParser
from tests.captures import capture_files, read_capture

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
MAX_HEADER = 4096

_STREAMS = []
for _path in capture_files():
    _recs = read_capture(_path)
    _STREAMS.append((b"".join(r.data for r in _recs if r.kind == "RECV"), False))
    _STREAMS.append((b"".join(r.data for r in _recs if r.kind == "SENT"), True))
_STREAMS = [(s, c) for s, c in _STREAMS if s]


@st.composite
def mutated(draw):
    data, commands = draw(st.sampled_from(_STREAMS))
    buf = bytearray(data[: draw(st.integers(200, 20_000))])
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup", "length", "newlines", "truncate"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del buf[pos : pos + draw(st.integers(1, 64))]
        elif kind == "dup":
            buf[pos:pos] = buf[pos : pos + draw(st.integers(1, 400))]
        elif kind == "length":
            # Lie about a body's size: negative, huge, not a number, off by a few.
            at = buf.find(b"Content-Length: ", pos)
            if at >= 0:
                end = buf.find(b"\n", at)
                value = draw(
                    st.sampled_from([b"-1", b"99999999999", b"abc", b"0", b"5", b"", b"8388608", b"8388609", b"12 34"])
                )
                buf[at + 16 : end if end >= 0 else len(buf)] = value
        elif kind == "newlines":
            buf[pos:pos] = draw(st.sampled_from([b"\n", b"\n\n", b"\r\n\r\n", b"\n\n\n\n"]))
        elif kind == "truncate":
            del buf[pos:]
    cuts = draw(st.lists(st.integers(1, 700), max_size=40))
    return bytes(buf), commands, cuts


def _drain(parser: FrameParser) -> int:
    n = 0
    for frame in parser:
        n += 1
        if frame.content_type == "text/event-plain":
            event = frame.event()
            (event.name, event.unique_id, event.variable("billmsec"), dict(event.headers))
        frame.reply_text, frame.content_type, dict(frame.headers)
    return n


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_captures_only_ever_raise_protocol_error_and_the_buffer_stays_bounded(case):
    data, commands, cuts = case
    parser = FrameParser(commands=commands, max_header_bytes=MAX_HEADER)
    pos = 0
    chunks = []
    for c in cuts:
        chunks.append(data[pos : pos + c])
        pos += c
    chunks.append(data[pos:])
    try:
        for chunk in chunks:
            parser.feed(chunk)
            _drain(parser)
            # Between frames at most one unterminated header block is held;
            # inside a frame, less than the body it announced.
            if parser._pending is None:
                assert parser.buffered <= MAX_HEADER
            else:
                assert parser.buffered < parser._body_len
    except ProtocolError:
        pass


def test_every_capture_still_frames_cleanly_at_every_chunk_size():
    for data, commands in _STREAMS:
        whole = FrameParser(commands=commands)
        whole.feed(data)
        expected = _drain(whole)
        for size in (1, 7, 100, 4096):
            parser = FrameParser(commands=commands)
            got = 0
            for i in range(0, len(data), size):
                parser.feed(data[i : i + size])
                got += _drain(parser)
            assert got == expected


def test_an_endless_header_line_is_refused_not_buffered():
    parser = FrameParser(max_header_bytes=MAX_HEADER)
    try:
        for _ in range(100):
            parser.feed(b"X" * 1000)
            _drain(parser)
        raise AssertionError("100 KB without a blank line was accepted")
    except ProtocolError:
        assert parser.buffered <= MAX_HEADER + 1000
