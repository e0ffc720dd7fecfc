"""Reading the FreeSWITCH 1.10.12 wire captures kept in tests/fixtures."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CAPTURE_DIR = Path(__file__).parent / "fixtures" / "esl-captures"
_RECORD = re.compile(rb"@@ (\w+) (\d+) t=([\d.]+) len=(\d+)\n")


@dataclass(frozen=True)
class Record:
    kind: str      # META, SENT, RECV, NOTE, EOF
    seq: int
    t: float
    data: bytes


def capture_files() -> list[Path]:
    return sorted(CAPTURE_DIR.glob("[0-9]*.txt"))


def read_capture(path: Path) -> list[Record]:
    raw = path.read_bytes()
    records, pos = [], 0
    while pos < len(raw):
        m = _RECORD.match(raw, pos)
        if not m:
            raise ValueError(f"{path.name}: bad record header at byte {pos}")
        n = int(m.group(4))
        start = m.end()
        records.append(Record(m.group(1).decode(), int(m.group(2)), float(m.group(3)),
                              raw[start:start + n]))
        pos = start + n + 1
    return records


def recv_frames(path: Path) -> list[bytes]:
    return [r.data for r in read_capture(path) if r.kind == "RECV"]


def sent_bytes(path: Path) -> list[bytes]:
    return [r.data for r in read_capture(path) if r.kind == "SENT"]
