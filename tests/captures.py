"""The FreeSWITCH 1.10.12 wire captures kept in tests/fixtures (read with the
simulator's own reader, cardd.sim.replay.read_capture)."""

from __future__ import annotations

from pathlib import Path

from cardd.sim.replay import Record, read_capture

__all__ = ["CAPTURE_DIR", "Record", "capture_files", "read_capture", "recv_frames", "sent_bytes"]

CAPTURE_DIR = Path(__file__).parent / "fixtures" / "esl-captures"


def capture_files() -> list[Path]:
    return sorted(CAPTURE_DIR.glob("[0-9]*.txt"))


def recv_frames(path: Path) -> list[bytes]:
    return [r.data for r in read_capture(path) if r.kind == "RECV"]


def sent_bytes(path: Path) -> list[bytes]:
    return [r.data for r in read_capture(path) if r.kind == "SENT"]
