"""`cardd call`: a simulated phone for operators and newcomers.

It plays FreeSWITCH (cardd.sim) and the caller against a running cardd and
prints what happened: the prompts heard, the digits typed, every application
cardd asked the switch to run, and how the call ended.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import gevent

from cardd.daemon import parse_address
from cardd.prompts import Prompts
from cardd.sim import Callee, Caller, Switch

# Long enough for any flow on the virtual clock; a real-time call is bounded
# by the caller's patience (Ctrl-C).
CALL_TIMEOUT = 120.0


class KeyboardDigits(Sequence):
    """Digits typed at the keyboard, asked for when cardd asks the caller.

    Before asking, it prints what happened since the last question (the
    prompt being played, above all). input() runs in gevent's thread pool so
    the simulated switch keeps serving the call while the operator thinks."""

    def __init__(self, catalogue: dict):
        self.catalogue = catalogue
        self.call = None
        self._shown = 0

    def __getitem__(self, index):
        if self.call is not None:
            lines = self.call.transcript.text(self.catalogue).splitlines()
            for line in lines[self._shown:]:
                print(line)
            self._shown = len(lines)
        line = gevent.get_hub().threadpool.apply(input, ("digits (Enter = stay silent)> ",))
        return line.strip() or None

    def __len__(self) -> int:
        return sys.maxsize


def place_call(args, settings) -> int:
    host, port = parse_address(args.server or settings.daemon.listen)
    catalogue = _catalogue(settings.daemon.sounds_dir)
    keyboard = None
    digits: Sequence
    if args.digits is None and sys.stdin.isatty():
        digits = keyboard = KeyboardDigits(catalogue)
    else:
        digits = [None if d == "-" else d for d in (args.digits or [])]
    caller = Caller(cli=args.cli, destination=args.cld, rdnis=args.did or None, digits=digits)
    callee = Callee(outcome=args.answer, talk=args.talk)
    switch = Switch(virtual_clock=not args.real_time)
    try:
        call = switch.call(host, port, caller, callee)
    except OSError as exc:
        print(f"cardd call: cannot reach cardd at {host}:{port}: {exc}", file=sys.stderr)
        return 2
    if keyboard is not None:
        keyboard.call = call
    transcript = call.wait(None if keyboard or args.real_time else CALL_TIMEOUT)
    lines = transcript.text(catalogue).splitlines(keepends=True)
    sys.stdout.writelines(lines[keyboard._shown if keyboard else 0:])
    for bridge in transcript.bridges:
        print(f"bridge to {bridge.number}: {bridge.disposition}, billsec {bridge.billsec} "
              f"(billmsec {bridge.billmsec})")
    print(f"call ended: {transcript.hangup_cause or 'socket closed'}")
    return 0 if not transcript.errors else 1


def _catalogue(sounds_dir: str) -> dict:
    prompts = Prompts(sounds_dir)
    return {pid: {lang: prompts.text(pid, lang) for lang in prompts.languages if prompts.has(pid, lang)}
            for pid in prompts.ids}
