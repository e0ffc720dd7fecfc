"""`cardd call`: a simulated phone for operators and newcomers.

It plays FreeSWITCH (cardd.sim) and the caller against a running cardd and
prints what happened: the prompts heard, the digits typed, every application
cardd asked the switch to run, what the callee's phone showed, and how the
call ended. While the call lasts (and `--stay` seconds after) the simulated
switch also serves FreeSWITCH's inbound Event Socket where cardd looks for
it (daemon.inbound_esl), so a cardd killed mid-call and restarted can ask
whether the call is still up and settle its reservation, as with a real
FreeSWITCH.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import gevent

if TYPE_CHECKING:  # the simulator is imported when a call is made
    from cardd.sim.switch import SimCall

# Long enough for any flow on the virtual clock; a real-time call is bounded
# by the caller's patience (Ctrl-C).
CALL_TIMEOUT = 120.0


class CallHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every default: a value as "(default: X)", a switch that
    is off unless given as "(default: off)"; an option whose help names its
    default itself (None here) is left as it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "%(default)" in text:
            return text
        if action.default is False and action.nargs == 0:
            return text + " (default: off)"
        if action.default == "":
            return text + " (default: none)"
        return text + " (default: %(default)s)"


def add_call_options(call: argparse.ArgumentParser) -> None:
    """The caller's and the switch's behaviour (`cardd call --help` shows the defaults)."""
    call.add_argument(
        "--press-in-bridge",
        action="append",
        default=None,
        metavar="SECONDS:DIGITS",
        help="keys the caller presses that many seconds after the bridge starts, "
        "e.g. 5:## (back to the destination prompt); repeat for later "
        "attempts (default: none)",
    )
    call.add_argument(
        "--hangup-after-talk",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the caller hangs up this long after the callee answered (default: never, the callee ends the call)",
    )
    call.add_argument(
        "--hear-prompts",
        action="store_true",
        help="let every prompt play to its end before typing, so the whole "
        "announcement (the balance, the time left) shows in the transcript",
    )
    call.add_argument(
        "--type-after",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="when the caller starts typing at each question",
    )
    call.add_argument(
        "--inbound-esl",
        default=None,
        metavar="HOST:PORT",
        help="serve FreeSWITCH's inbound Event Socket there during the call "
        "(default: daemon.inbound_esl; 'off' for none)",
    )
    call.add_argument(
        "--json-cdr",
        default=None,
        metavar="FILE",
        help="post each leg's CDR as mod_json_cdr configured by this "
        "json_cdr.conf.xml would (e.g. freeswitch-conf/autoload_configs/"
        "json_cdr.conf.xml; default: no CDRs)",
    )
    call.add_argument(
        "--stay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the inbound Event Socket up this long after the call ended "
        "(a cardd killed mid-call and restarted settles it at its next orphan "
        "check: daemon.orphan_check_interval)",
    )


def _press_in_bridge(values: list[str] | None) -> list[tuple[float, str] | None]:
    out: list[tuple[float, str] | None] = []
    for value in values or []:
        after, sep, digits = value.partition(":")
        try:
            seconds = float(after)
        except ValueError:
            seconds = -1.0
        if not sep or seconds < 0 or not digits or any(d not in "0123456789*#" for d in digits):
            raise ValueError(f"--press-in-bridge {value!r}: expected SECONDS:DIGITS, e.g. 5:##")
        out.append((seconds, digits))
    return out


class KeyboardDigits(Sequence):
    """Digits typed at the keyboard, asked for when cardd asks the caller.

    Before asking, it prints what happened since the last question (the
    prompt being played, above all). input() runs in gevent's thread pool so
    the simulated switch keeps serving the call while the operator thinks."""

    def __init__(self, catalogue: dict):
        self.catalogue = catalogue
        self.call: SimCall | None = None
        self._shown = 0

    def __getitem__(self, index):
        if self.call is not None:
            lines = self.call.transcript.text(self.catalogue).splitlines()
            for line in lines[self._shown :]:
                print(line)
            self._shown = len(lines)
        line = gevent.get_hub().threadpool.apply(input, ("digits (Enter = stay silent)> ",))
        return line.strip() or None

    def __len__(self) -> int:
        return sys.maxsize


def place_call(args, settings) -> int:
    from cardd.daemon import parse_address
    from cardd.sim import Callee, Caller, Switch

    host, port = parse_address(args.server or settings.daemon.listen)
    try:
        bridge_digits = _press_in_bridge(getattr(args, "press_in_bridge", None))
    except ValueError as exc:
        print(f"cardd: call: {exc}", file=sys.stderr)
        return 2
    catalogue = _catalogue(settings.daemon.sounds_dir)
    keyboard = None
    digits: Sequence
    if args.digits is None and sys.stdin.isatty():
        digits = keyboard = KeyboardDigits(catalogue)
    else:
        digits = [None if d == "-" else d for d in (args.digits or [])]
    caller = Caller(
        cli=args.cli,
        destination=args.cld,
        rdnis=args.did or None,
        digits=digits,
        bridge_digits=bridge_digits,
        hangup_after_talk=args.hangup_after_talk,
        hear_prompts=args.hear_prompts,
        type_after=args.type_after,
    )
    callee = Callee(outcome=args.answer, talk=args.talk)
    switch = Switch(virtual_clock=not args.real_time)
    poster = None
    if args.json_cdr:
        from cardd.sim.cdr import JsonCdrPoster

        try:
            poster = JsonCdrPoster.from_conf(switch, args.json_cdr)
        except (OSError, ValueError, SyntaxError) as exc:
            print(f"cardd: call: --json-cdr {args.json_cdr}: {exc}", file=sys.stderr)
            return 2
    inbound = _serve_inbound(
        switch, args.inbound_esl or settings.daemon.inbound_esl, settings.daemon.inbound_esl_password
    )
    try:
        try:
            call = switch.call(host, port, caller, callee)
        except OSError as exc:
            print(f"cardd: call: cannot reach cardd at {host}:{port}: {exc}", file=sys.stderr)
            return 2
        if keyboard is not None:
            keyboard.call = call
        transcript = call.wait(None if keyboard or args.real_time else CALL_TIMEOUT)
        lines = transcript.text(catalogue).splitlines(keepends=True)
        sys.stdout.writelines(lines[keyboard._shown if keyboard else 0 :])
        for bridge in transcript.bridges:
            print(
                f"bridge to {bridge.number}: {bridge.disposition}, billsec {bridge.billsec} "
                f"(billmsec {bridge.billmsec})"
            )
            if bridge.sip_from is not None:
                print(f"  the callee's phone showed From: {bridge.sip_from}")
        print(f"call ended: {transcript.hangup_cause or 'socket closed'}")
        if poster is not None:
            # Background posts (queue-capacity) may still be retrying.
            poster.wait()
            for doc in poster.posted:
                print(f"CDR posted: {doc['variables'].get('uuid')}")
            for doc in poster.failed:
                print(f"CDR not delivered after {poster.retries + 1} tries: {doc['variables'].get('uuid')}")
        if inbound is not None and args.stay > 0:
            print(f"inbound Event Socket stays up at {_at(inbound.address)} for {args.stay:g} s")
            gevent.sleep(args.stay)
        return 0 if not transcript.errors else 1
    finally:
        if inbound is not None:
            inbound.stop()


def _serve_inbound(switch, where: str, password: str):
    """The switch's inbound Event Socket, or None (said on stderr) when the
    address is off or taken (a real FreeSWITCH on 8021, another phone)."""
    from cardd.daemon import parse_address

    if where.strip().lower() == "off":
        return None
    try:
        host, port = parse_address(where)
        return switch.listen_inbound(host, port, password)
    except (OSError, ValueError) as exc:
        print(
            f"cardd call: no inbound Event Socket at {where} ({exc}); cardd cannot ask this switch about the call",
            file=sys.stderr,
        )
        return None


def _at(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _catalogue(sounds_dir: str) -> dict:
    from cardd.prompts import Prompts

    prompts = Prompts(sounds_dir)
    return {
        pid: {lang: prompts.text(pid, lang) for lang in prompts.languages if prompts.has(pid, lang)}
        for pid in prompts.ids
    }
