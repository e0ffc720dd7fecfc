"""The sans-IO framer against every real FreeSWITCH capture."""

from __future__ import annotations

import pytest

from cardd.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from cardd.esl.protocol import (
    DISCONNECT_BODY,
    FrameParser,
    encode_command,
    encode_event,
    encode_execute,
    parse_event,
    url_encode,
)
from tests.captures import capture_files, read_capture, recv_frames

CAPTURES = capture_files()
IDS = [p.stem for p in CAPTURES]


def _frames(parser: FrameParser) -> list:
    return list(parser)


def _signature(frame) -> tuple:
    """What must come out the same however the bytes were cut."""
    return (tuple(frame.headers.raw.items()), frame.body)


@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_each_recv_record_is_exactly_one_frame(path):
    for data in recv_frames(path):
        parser = FrameParser()
        parser.feed(data)
        frames = _frames(parser)
        assert len(frames) == 1
        assert parser.buffered == 0


@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_capture_parses_the_same_whole_and_byte_by_byte(path):
    stream = b"".join(recv_frames(path))
    whole = FrameParser()
    whole.feed(stream)
    expected = [_signature(f) for f in whole]
    assert len(expected) == len(recv_frames(path))

    parser, got = FrameParser(), []
    for i in range(len(stream)):
        parser.feed(stream[i : i + 1])
        got.extend(_signature(f) for f in parser)
    assert got == expected


def _interesting_offsets(frame: bytes) -> set[int]:
    """Every offset near the edges and the header/body boundary, and a
    stride through the middle: splitting is only interesting where framing
    decisions are made, and every-offset-of-everything is quadratic."""
    n = len(frame)
    boundary = frame.find(b"\n\n")
    offsets = set(range(0, min(n, 80))) | set(range(max(0, n - 80), n + 1))
    offsets |= set(range(max(0, boundary - 40), min(n, boundary + 40)))
    offsets |= set(range(0, n, 61))
    return offsets


@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_capture_parses_the_same_split_at_any_offset(path):
    frames = recv_frames(path)
    for i, frame in enumerate(frames):
        # The frame follows a previous one and is followed by the next, so a
        # split also tests a frame boundary inside one read.
        before = frames[i - 1] if i else b""
        after = frames[i + 1] if i + 1 < len(frames) else b""
        stream = before + frame + after
        reference = FrameParser()
        reference.feed(stream)
        expected = [_signature(f) for f in reference]
        for k in _interesting_offsets(frame):
            cut = len(before) + k
            parser = FrameParser()
            parser.feed(stream[:cut])
            got = [_signature(f) for f in parser]
            parser.feed(stream[cut:])
            got += [_signature(f) for f in parser]
            assert got == expected, f"frame {i} split at {k}"


@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_parsing_survives_trailing_partial_data(path):
    frames = recv_frames(path)
    half = len(frames[-1]) // 2
    parser = FrameParser()
    parser.feed(b"".join(frames) + frames[-1][:half])
    assert len(_frames(parser)) == len(frames)
    parser.feed(frames[-1][half:])
    (again,) = _frames(parser)
    reference = FrameParser()
    reference.feed(frames[-1])
    assert _signature(again) == _signature(reference.next_frame())


def test_connect_reply_has_no_content_length_and_decodes_values():
    frame_bytes = recv_frames(CAPTURES[0])[0]
    parser = FrameParser()
    parser.feed(frame_bytes)
    frame = parser.next_frame()
    assert frame.content_type == "command/reply"
    assert frame.body == b""
    assert frame.reply_text == "+OK\n"
    assert frame.headers["Event-Name"] == "CHANNEL_DATA"
    assert frame.headers.raw["Channel-Channel-Name"].startswith("sofia/lo/15555550100%40")
    assert frame.headers["Channel-Channel-Name"].startswith("sofia/lo/15555550100@")


def test_event_headers_are_decoded_only_when_read():
    for data in recv_frames(CAPTURES[0]):
        parser = FrameParser()
        parser.feed(data)
        frame = parser.next_frame()
        if frame.content_type == "text/event-plain" and frame.event().name == "CHANNEL_EXECUTE_COMPLETE":
            event = frame.event()
            assert "%" in event.headers.raw["Event-Date-Local"]
            assert "%" not in event.get("Event-Date-Local")
            return
    pytest.fail("no CHANNEL_EXECUTE_COMPLETE in capture 01")


def test_api_response_body_is_kept_verbatim():
    path = next(p for p in CAPTURES if p.name.startswith("07_"))
    bodies = []
    for data in recv_frames(path):
        parser = FrameParser()
        parser.feed(data)
        frame = parser.next_frame()
        if frame.content_type == "api/response":
            bodies.append(frame.body)
    assert b"12.35" in bodies
    assert b"_undef_" in bodies
    assert b"-ERR No such channel!\n" in bodies


def test_disconnect_notice_body_is_the_cluecon_text():
    path = next(p for p in CAPTURES if p.name.startswith("01_"))
    notices = []
    for data in recv_frames(path):
        parser = FrameParser()
        parser.feed(data)
        frame = parser.next_frame()
        if frame.content_type == "text/disconnect-notice":
            notices.append(frame)
    assert [n.headers["Content-Disposition"] for n in notices] == ["linger", "disconnect"]
    assert notices[1].body == DISCONNECT_BODY


def test_command_parser_reads_every_sent_block():
    for path in CAPTURES:
        sent = b"".join(r.data for r in read_capture(path) if r.kind == "SENT")
        parser = FrameParser(commands=True)
        parser.feed(sent)
        commands = [f.headers["Command"] for f in parser]
        inbound = "inbound" in path.name  # an inbound observer authenticates instead
        assert commands[0] == ("auth ClueCon" if inbound else "connect")
        assert parser.buffered == 0


def test_bad_content_length_is_a_peer_protocol_error():
    parser = FrameParser()
    parser.feed(b"Content-Length: nope\nContent-Type: text/event-plain\n\n")
    with pytest.raises(RemoteProtocolError):
        parser.next_frame()


def test_oversized_header_block_is_refused_not_buffered_forever():
    parser = FrameParser(max_header_bytes=1024)
    parser.feed(b"X-Junk: " + b"a" * 2000)
    with pytest.raises(ProtocolError):
        parser.next_frame()


def test_oversized_body_is_refused():
    parser = FrameParser()
    parser.feed(b"Content-Length: 999999999999\n\n")
    with pytest.raises(ProtocolError):
        parser.next_frame()


def test_header_line_without_colon_is_refused():
    parser = FrameParser()
    parser.feed(b"Content-Type: command/reply\ngarbage\n\n")
    with pytest.raises(ProtocolError):
        parser.next_frame()


def test_a_line_break_cannot_be_smuggled_into_a_command():
    with pytest.raises(LocalProtocolError):
        encode_execute("bridge", "sofia/x/1\nexecute-app-name: hangup", event_uuid="u")
    with pytest.raises(ProtocolError):
        encode_command("api uuid_kill x\n\nexit")


def test_execute_carries_event_uuid_and_lock():
    data = encode_execute("playback", "/s/en/welcome.wav", event_uuid="abc")
    assert data == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
        b"execute-app-arg: /s/en/welcome.wav\nevent-lock: true\nEvent-UUID: abc\n\n"
    )


def test_url_encode_follows_switch_url_encode():
    assert url_encode("FILE PLAYED") == "FILE%20PLAYED"
    assert url_encode("+OK\n") == "%2BOK%0A"
    assert url_encode("sofia/lo/1@127.0.0.1:5090") == "sofia/lo/1%40127.0.0.1%3A5090"
    assert url_encode("Mon, 23 Nov") == "Mon,%2023%20Nov"
    # an existing %XX escape is not encoded again (double_encode false)
    assert url_encode("100%2B") == "100%2B"
    assert url_encode("%(500,0,440)") == "%25(500,0,440)"


def test_encode_event_round_trips_through_the_parser():
    data = encode_event([("Event-Name", "DTMF"), ("DTMF-Digit", "#"), ("Unique-ID", "u1")])
    parser = FrameParser()
    parser.feed(data)
    event = parser.next_frame().event()
    assert event.name == "DTMF"
    assert event.get("DTMF-Digit") == "#"
    assert event.headers.raw["DTMF-Digit"] == "%23"


def test_event_with_its_own_body():
    event = parse_event(b"Event-Name: BACKGROUND_JOB\nContent-Length: 4\n\n+OK\n")
    assert event.body == b"+OK\n"


def test_event_body_is_cut_at_the_first_blank_line_and_its_own_length_is_checked():
    # The block ends at the first blank line, wherever more follows.
    event = parse_event(b"Event-Name: X\n\nA: 1\n\n")
    assert event.name == "X" and event.get("A") is None and event.body == b""
    assert parse_event(b"Event-Name: X\nContent-Length: 2\n\nabcd").body == b"ab"
    with pytest.raises(RemoteProtocolError):
        parse_event(b"Event-Name: X\nContent-Length: lots\n\nabcd")
    with pytest.raises(RemoteProtocolError):
        parse_event(b"Event-Name: X\nContent-Length: 999999999999\n\nabcd")
    # Nothing after the block: no body to bound, whatever the block says.
    assert parse_event(b"Event-Name: X\nContent-Length: 4\n\n").body == b""


def _capture_events() -> list:
    events = []
    for path in CAPTURES:
        for data in recv_frames(path):
            parser = FrameParser()
            parser.feed(data)
            events += [f.body for f in parser if f.content_type == "text/event-plain"]
    return events


def test_lazy_lookups_answer_exactly_what_the_full_header_table_answers():
    """Every capture event: the dispatch fields and any header read without the
    table (find_raw) equal the full table's answer, first occurrence included."""
    bodies = _capture_events()
    assert len(bodies) > 100
    for body in bodies:
        lazy, full = parse_event(body), parse_event(body)
        table = dict(full.headers.raw)
        assert lazy.name == table.get("Event-Name")
        assert lazy.unique_id == table.get("Unique-ID")
        assert lazy.application_uuid == table.get("Application-UUID")
        for name in list(table)[::7] + ["Hangup-Cause", "variable_billmsec", "No-Such-Header"]:
            assert lazy.get(name) == full.get(name), name
        assert lazy._headers is None  # none of that built the table


def test_a_repeated_header_reads_as_its_first_occurrence_without_the_table():
    event = parse_event(
        b"Event-Name: CHANNEL_HANGUP\nHangup-Cause: NORMAL_CLEARING\n"
        b"Unique-ID: u1\nHangup-Cause: NO_ANSWER\nX-Cause-Echo: Hangup-Cause: x\n"
    )
    assert event.get("Hangup-Cause") == "NORMAL_CLEARING" == event.headers.get("Hangup-Cause")
    assert event.get("Cause") is None  # a name's tail is not the name
    assert event.get("X-Cause-Echo") == "Hangup-Cause: x"


def test_a_garbled_event_line_is_never_a_header_and_the_table_refuses_it():
    event = parse_event(b"Event-Name: DTMF\ngarbage Unique-ID\nUnique-ID: u2\n")
    assert event.unique_id == "u2"
    with pytest.raises(ProtocolError):
        _ = event.headers
