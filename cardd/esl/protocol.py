"""The FreeSWITCH Event Socket wire format, sans-IO.

Bytes in, frames out; no sockets here. Both the daemon side (cardd.esl.session)
and the simulator side (cardd.sim) frame and encode with this module.

A frame is a header block ending in an empty line, then `Content-Length` bytes
of body when that header is present. Header values are url-encoded by
FreeSWITCH; they are kept raw and decoded only when read, because a call sees
hundreds of headers and reads a dozen (ESL.md: eager decoding was slower than
greenswitch).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TypeVar, overload
from urllib.parse import unquote

from cardd.digits import whole_number
from cardd.errors import LocalProtocolError, RemoteProtocolError

T = TypeVar("T")

# Bounds on what one peer can make us hold. A connect reply carries the whole
# channel (about 6 KB in the captures); the biggest event seen is about 9 KB.
MAX_HEADER_BYTES = 256 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024

# switch_utils.h SWITCH_URL_UNSAFE, plus every byte outside ' '..'~'.
_URL_UNSAFE = frozenset(b'\r\n #%&+:;<=>?@[\\]^`{|}"')
_HEX = b"0123456789ABCDEF"
_ENCODE_TABLE = [(f"%{b:02X}" if (b < 0x20 or b > 0x7E or b in _URL_UNSAFE) else chr(b)) for b in range(256)]


def url_decode(value: str) -> str:
    return unquote(value) if "%" in value else value


# Values made only of characters FreeSWITCH never encodes (most of them).
_PLAIN = re.compile(r"[!$'()*,\-./0-9A-Z_a-z~]*")


def url_encode(value: str) -> str:
    """Encode a header value as FreeSWITCH's switch_url_encode does.

    FreeSWITCH does not double-encode: a `%` followed by two hex digits is
    copied as it is (switch_url_encode_opt with double_encode false).
    """
    if _PLAIN.fullmatch(value):
        return value
    raw = value.encode("utf-8")
    out = []
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append("%")
        else:
            out.append(_ENCODE_TABLE[b])
        i += 1
    return "".join(out)


class Headers(Mapping[str, str]):
    """Header block of a frame or event: raw values, url-decoded when read."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, str]):
        self.raw = raw

    def __getitem__(self, name: str) -> str:
        return url_decode(self.raw[name])

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, default: str | T, /) -> str | T: ...
    def get(self, name: str, default: object = None, /) -> object:
        value = self.raw.get(name)
        return default if value is None else url_decode(value)

    def __contains__(self, name: object) -> bool:
        return name in self.raw

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"Headers({self.raw!r})"


def parse_header_block(block: str) -> dict[str, str]:
    """`Name: value` lines -> dict of raw values. Split at the first colon.

    A name can repeat (CHANNEL_HANGUP carries Hangup-Cause twice); the first
    one is kept, as FreeSWITCH's switch_event_get_header returns it.
    """
    headers: dict[str, str] = {}
    for line in block.split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise RemoteProtocolError(f"header line without a colon: {line[:80]!r}")
        if name not in headers:
            headers[name] = value[1:] if value.startswith(" ") else value
    return headers


def find_raw(text: str, name: str) -> str | None:
    """The raw value of the first `name:` line of a header block, found without
    splitting the block: what parse_header_block(text).get(name) returns.

    A line starting with `name:` is a line whose name (the text before its
    first colon) is `name`, so the first such line is the one the full table
    keeps. Names that could not be a header name fall back to the table."""
    if ":" in name or "\n" in name:
        return parse_header_block(text).get(name)
    key = name + ":"
    if text.startswith(key):
        start = len(key)
    else:
        at = text.find("\n" + key)
        if at < 0:
            return None
        start = at + 1 + len(key)
    end = text.find("\n", start)
    value = text[start:] if end < 0 else text[start:end]
    return value[1:] if value.startswith(" ") else value


class Event:
    """A text/event-plain body: its own header block, and a body of its own
    when the event carries Content-Length (BACKGROUND_JOB, api events).

    Decoded lazily: a call's socket carries dozens of events of ~150 headers
    each, and most are only dispatched (Event-Name, Unique-ID,
    Application-UUID) or asked for a header or two. Those are found in the
    block's text (find_raw: ~1 µs each, where splitting a 6 KB block into its
    table costs ~45 µs); the full table (`headers`) is built the first time
    something asks for it, and then answers everything. A garbled line (no
    colon) is refused with ProtocolError when the table is built; until then
    it is never mistaken for a header, as find_raw only matches `Name:` lines."""

    __slots__ = ("_text", "_headers", "body")

    def __init__(self, text: str, body: bytes = b""):
        self._text = text
        self._headers: Headers | None = None
        self.body = body

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(parse_header_block(self._text))
        return self._headers

    def raw(self, name: str) -> str | None:
        """A header's raw (still url-encoded) value, or None."""
        if self._headers is not None:
            return self._headers.raw.get(name)
        return find_raw(self._text, name)

    @property
    def name(self) -> str | None:
        return self.raw("Event-Name")

    @property
    def unique_id(self) -> str | None:
        return self.raw("Unique-ID")

    @property
    def application_uuid(self) -> str | None:
        """The Event-UUID of the execute a CHANNEL_EXECUTE_COMPLETE answers."""
        return self.raw("Application-UUID")

    @overload
    def get(self, name: str, default: None = None) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else url_decode(value)

    @overload
    def variable(self, name: str, default: None = None) -> str | None: ...
    @overload
    def variable(self, name: str, default: str) -> str: ...
    def variable(self, name: str, default: str | None = None) -> str | None:
        return self.get("variable_" + name, default)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, uuid={self.unique_id!r})"


# The end of an event's header block. A regex: bytes.find of a two-byte needle
# walks a 5 KB event byte by byte (4 us); re's literal search jumps from one
# newline to the next (1.7 us).
_BLOCK_END = re.compile(rb"\n\n")


def parse_event(body: bytes) -> Event:
    """An event from a text/event-plain frame's body. Checked now: UTF-8 and its
    own Content-Length; its headers are decoded when read (Event)."""
    found = _BLOCK_END.search(body)
    end = -1 if found is None else found.start()
    head = body if end < 0 else body[:end]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"event header block is not UTF-8: {exc}") from None
    inner = b""
    # Only bytes after the block can be a body of its own: most events have none, and
    # their block is then not searched for a Content-Length.
    if 0 <= end < len(body) - 2:
        length = find_raw(text, "Content-Length")
        if length is not None:
            inner = body[end + 2 : end + 2 + _content_length(length)]
    return Event(text, inner)


class Frame:
    """One ESL frame: outer headers and body bytes."""

    __slots__ = ("headers", "body", "_event")

    def __init__(self, headers: Headers, body: bytes = b""):
        self.headers = headers
        self.body = body
        self._event: Event | None = None

    @property
    def content_type(self) -> str | None:
        return self.headers.raw.get("Content-Type")

    @property
    def reply_text(self) -> str | None:
        return self.headers.get("Reply-Text")

    def event(self) -> Event:
        """The event carried by a text/event-plain frame (parsed once)."""
        if self._event is None:
            self._event = parse_event(self.body)
        return self._event

    def __repr__(self) -> str:
        return f"Frame({self.content_type!r}, {len(self.body)} body bytes)"


def _content_length(text: str) -> int:
    try:
        n = whole_number(text)
    except ValueError:
        raise RemoteProtocolError(f"Content-Length is not a number: {text[:40]!r}") from None
    if n < 0 or n > MAX_BODY_BYTES:
        raise RemoteProtocolError(f"Content-Length {n} out of bounds (max {MAX_BODY_BYTES})")
    return n


class FrameParser:
    """Incremental framer: feed() bytes, then take frames with next_frame().

    With `commands=True` it reads what a daemon sends to FreeSWITCH: the first
    line of a block is the command ("sendmsg", "api uuid_getvar u v"), stored
    under the pseudo-header "Command"; the rest are headers.
    """

    def __init__(self, *, commands: bool = False, max_header_bytes: int = MAX_HEADER_BYTES):
        self._buf = bytearray()
        self._commands = commands
        self._max_header = max_header_bytes
        self._pending: Headers | None = None  # headers read, body awaited
        self._body_len = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held, not yet framed: what one peer makes cardd keep (the fuzz
        tests pin its bound on it)."""
        return len(self._buf)

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.next_frame()) is not None:
            yield frame

    def next_frame(self) -> Frame | None:
        buf = self._buf
        if self._pending is None:
            # Tolerate stray blank lines between frames (FreeSWITCH never
            # sends them, but a hand-typed telnet session does).
            while buf[:1] == b"\n":
                del buf[:1]
            end = buf.find(b"\n\n")
            if end < 0:
                if len(buf) > self._max_header:
                    raise RemoteProtocolError(f"header block longer than {self._max_header} bytes")
                return None
            if end > self._max_header:
                raise RemoteProtocolError(f"header block longer than {self._max_header} bytes")
            block = bytes(buf[:end])
            del buf[: end + 2]
            headers = self._parse_block(block)
            length = headers.raw.get("Content-Length")
            if length is None:
                return Frame(headers)
            self._pending = headers
            self._body_len = _content_length(length)
        if len(buf) < self._body_len:
            return None
        body = bytes(buf[: self._body_len])
        del buf[: self._body_len]
        headers, self._pending = self._pending, None
        return Frame(headers, body)

    def _parse_block(self, block: bytes) -> Headers:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(f"header block is not UTF-8: {exc}") from None
        if self._commands:
            command, _, rest = text.partition("\n")
            raw = parse_header_block(rest)
            raw["Command"] = command.strip()
            return Headers(raw)
        return Headers(parse_header_block(text))


# --- encoding: daemon -> FreeSWITCH ------------------------------------------


def _check_line(text: str, what: str) -> str:
    if "\n" in text or "\r" in text:
        raise LocalProtocolError(f"{what} contains a line break: {text[:80]!r}")
    return text


def encode_command(command: str, headers: Mapping[str, str] | None = None, body: bytes | None = None) -> bytes:
    """A command block. Line breaks in any part are refused: they would let a
    caller-supplied value forge headers or a second command."""
    lines = [_check_line(command, "command")]
    for name, value in (headers or {}).items():
        lines.append(f"{_check_line(name, 'header name')}: {_check_line(str(value), name)}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
        return ("\n".join(lines) + "\n\n").encode("utf-8") + body
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_execute(
    app: str, arg: str = "", *, event_uuid: str, event_lock: bool = True, loops: int | None = None
) -> bytes:
    headers = {"call-command": "execute", "execute-app-name": app}
    if arg:
        headers["execute-app-arg"] = arg
    if loops is not None:
        headers["loops"] = str(loops)
    if event_lock:
        headers["event-lock"] = "true"
    headers["Event-UUID"] = event_uuid
    return encode_command("sendmsg", headers)


# --- encoding: FreeSWITCH -> daemon (used by the simulator) --------------------


def encode_reply(reply_text: str, extra: Mapping[str, str] | None = None) -> bytes:
    out = f"Content-Type: command/reply\nReply-Text: {reply_text}\n"
    for name, value in (extra or {}).items():
        out += f"{name}: {value}\n"
    return (out + "\n").encode("utf-8")


def encode_api_response(body: str) -> bytes:
    data = body.encode("utf-8")
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def encode_event(headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A text/event-plain frame from (name, plain value) pairs, in order."""
    text = "".join(f"{name}: {url_encode(value)}\n" for name, value in headers)
    if body:
        text += f"Content-Length: {len(body)}\n\n"
        inner = text.encode("utf-8") + body
    else:
        inner = (text + "\n").encode("utf-8")
    return (b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(inner)) + inner


DISCONNECT_BODY = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
