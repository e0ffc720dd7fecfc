"""Dialplan applications of the simulated switch (mod_dptools semantics).

Each app runs in the A leg's runner greenlet (or a B leg's), blocks on the
call's clock, and wakes early on DTMF or hangup via `leg.wake`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gevent

from cardd.sim.channel import Q850, Leg, hangup_cause_name, new_uuid
from cardd.sim.media import part_seconds, split_file_string

if TYPE_CHECKING:
    from cardd.sim.switch import SimCall


@dataclass
class Pending:
    app: str
    arg: str
    event_uuid: str
    lock: bool = True
    loops: int = 1


@dataclass
class Running:
    app: str
    arg: str
    uuid: str
    lock: bool


@dataclass
class BridgeState:
    a: Leg
    b: Leg | None = None
    answered: bool = False
    lock: bool = False
    # broadcasts held back while an event-locked bridge runs (ESL.md)
    deferred: list[Callable[[], object]] = field(default_factory=list)  # run for their effect


# --- small helpers -----------------------------------------------------------


def wait_until(call: SimCall, leg: Leg, seconds: float, cond: Callable[[], bool]) -> bool:
    """Block up to `seconds` of call time; True as soon as cond() holds."""
    deadline = call.now() + max(seconds, 0.0)
    while True:
        if cond():
            return True
        remaining = deadline - call.now()
        if remaining <= 1e-9:
            return cond()
        leg.wake.clear()
        if cond():
            return True
        call.clock.wait(leg.wake, remaining)


def split_args(data: str) -> list[str]:
    """switch_separate_string on ' ': single quotes group words and are removed."""
    out: list[str] = []
    cur: list[str] = []
    quoted, have = False, False
    for ch in data:
        if ch == "'":
            quoted = not quoted
            have = True
        elif ch == " " and not quoted:
            if cur or have:
                out.append("".join(cur))
            cur, have = [], False
        else:
            cur.append(ch)
    if cur or have:
        out.append("".join(cur))
    return out


def q850(cause: str) -> int:
    code = Q850.get(cause, 16)
    # Causes above 127 are FreeSWITCH's own; hangup_cause_q850 reports 16 (README fact 15).
    return code if code <= 127 else 16


def play(call: SimCall, leg: Leg, path: str, *, barge: bool = False) -> tuple[str, float]:
    """Play a file (or file_string). Returns (status, seconds played);
    status: played | notfound | hangup | barged | stopped."""
    played = 0.0
    found = False
    for part in split_file_string(path):
        secs = part_seconds(part, call.switch.sound_prefix)
        if secs is None:
            call.transcript.add(call.rel(), _tag(call, leg), "missing", path=part)
            continue
        found = True
        call.transcript.add(call.rel(), _tag(call, leg), "prompt", path=part)
        start = call.now()
        stopped = wait_until(
            call, leg, secs, lambda: not leg.alive or (barge and bool(leg.collector)) or leg.playback_stopped
        )
        part_played = call.now() - start
        played += part_played
        # switch_ivr_play_file, after each file it played
        samples = int(round(part_played * 8000))
        leg.set_var("playback_last_offset_pos", str(samples))
        leg.set_var("playback_seconds", str(samples // 8000))
        leg.set_var("playback_ms", str(samples // 8))
        leg.set_var("playback_samples", str(samples))
        if stopped:
            if not leg.alive:
                return "hangup", played
            return ("barged" if barge and leg.collector else "stopped"), played
    return ("played" if found else "notfound"), played


def _tag(call: SimCall, leg: Leg) -> str:
    return "A" if leg is call.a else "B"


# --- DTMF ------------------------------------------------------------------------


def type_digits(call: SimCall, leg: Leg, digits: str, after: float, interval: float) -> gevent.Greenlet:
    """The caller presses keys: first after `after` s, then every `interval` s."""

    def run() -> None:
        call.clock.sleep(after)
        if leg.alive:
            call.transcript.add(call.rel(), "A", "digits", digits=digits)
        for i, d in enumerate(digits):
            if i:
                call.clock.sleep(interval)
            if not leg.alive:
                return
            receive_dtmf(call, leg, d)

    return gevent.spawn(run)


def receive_dtmf(call: SimCall, leg: Leg, digit: str) -> None:
    if leg is call.a and call.digit_realm and call.digit_bindings.get(call.digit_realm):
        buf = call.digit_buffer + digit
        binds = call.digit_bindings[call.digit_realm]
        if any(b[1].startswith(buf) for b in binds):
            # The digit-action parser consumes matching digits: no DTMF event (fact 19).
            call.digit_buffer = buf
            for bind in binds:
                if bind[1] == buf:
                    call.digit_buffer = ""
                    gevent.spawn(digit_action, call, bind)
                    break
            return
        released, call.digit_buffer = call.digit_buffer, ""
        for d in released:
            _deliver_dtmf(call, leg, d)
    _deliver_dtmf(call, leg, digit)


def _deliver_dtmf(call: SimCall, leg: Leg, digit: str) -> None:
    leg.digits_dialed += digit
    call.fire(
        leg,
        "DTMF",
        variables=False,
        post=[("DTMF-Digit", digit), ("DTMF-Duration", "2000"), ("DTMF-Source", call.dtmf_source)],
    )
    if leg.collector is not None:
        leg.collector.append(digit)
        leg.wake.set()
    elif leg.playback_stop is not None:
        # playback's own DTMF callback consumes the key (capture 19)
        if digit in leg.playback_stop:
            leg.playback_stopped = True
            leg.wake.set()
    else:
        leg.dtmf_queue.append(digit)


def digit_action(call: SimCall, bind: tuple[str, str, str, str, str, str]) -> None:
    _realm, _digits, action, value, _dtmf_leg, exec_leg = bind
    target = call.a
    if exec_leg == "peer":
        br = call.bridge
        if br is None or br.b is None or not br.b.alive:
            return
        target = br.b
    kind, _, app = action.partition(":")
    if kind.startswith("exec"):
        if exec_leg == "peer":
            target.set_var("last_matching_digits", _digits)
        if target is call.a:
            call.queue.put(Pending(app, value, new_uuid(), True))
        else:
            run_on_b(call, target, app, value)
    elif kind == "api":
        call.api(f"{app} {value}".strip())


# --- execution -------------------------------------------------------------------


def execute(call: SimCall, leg: Leg, item: Pending, *, private: bool = False, loops: bool = True) -> str:
    """Run one app with CHANNEL_EXECUTE / CHANNEL_EXECUTE_COMPLETE around it.

    `loops`: the execute came through switch_ivr.c parse_execute (sendmsg,
    broadcasts), which keeps current_loop/total_loops around the app;
    execute_on_answer runs the app directly, without them."""
    app = item.app
    arg = item.arg
    if loops:
        leg.set_var("current_loop", "1")
        leg.set_var("total_loops", str(item.loops))
    # switch_core_session_exec: name, data (deleted when empty), response
    # cleared; after CHANNEL_EXECUTE the name is set once more (moving it last).
    leg.set_var("current_application", app)
    leg.set_var("current_application_data", arg or None)
    leg.set_var("current_application_response", None)
    running = Running(app, arg, item.event_uuid, item.lock)
    prev = call.current_app if leg is call.a else None
    if leg is call.a:
        call.current_app = running
        n = call.app_counts.get(app, 0) + 1
        call.app_counts[app] = n
        call.transcript.add(call.rel(), "A", "execute", app=app, arg=arg)
        _arm_caller_hangup(call, app, n)
    else:
        call.transcript.add(call.rel(), "B", "execute", app=app, arg=arg, uuid=leg.uuid)
    app_hdrs = [("Application", app)]
    if arg:
        app_hdrs.append(("Application-Data", arg))
    call.fire(leg, "CHANNEL_EXECUTE", post=app_hdrs + [("Application-UUID", item.event_uuid)])
    leg.set_var("current_application", app)
    # The completion reports whatever the response variable holds then, so a
    # broadcast playing on A during a bridge leaks FILE PLAYED into the
    # bridge's completion (fact 24).
    fn = call.applications.get(app.lower())
    if fn is None:
        call.transcript.errors.append(f"unknown application {app!r}")
    else:
        fn(call, leg, arg, running)
    response = leg.get_var("current_application_response") or "_none_"
    leg.last_app = (app, arg)
    call.fire(
        leg,
        "CHANNEL_EXECUTE_COMPLETE",
        post=app_hdrs + [("Application-Response", response), ("Application-UUID", item.event_uuid)],
    )
    if loops:
        # switch_ivr.c parse_execute drops its loop counters after the app.
        leg.set_var("current_loop", None)
        leg.set_var("total_loops", None)
    if leg is call.a:
        call.current_app = prev
        call.last_response = response
        if not private:
            todo, call.post_complete = call.post_complete, []
            for fn_ in todo:
                fn_()
    return response


def _arm_caller_hangup(call: SimCall, app: str, n: int) -> None:
    spec = call.caller.hangup_at
    if spec and spec[0] == app and spec[1] == n:
        call.a_timers.append(
            call.clock.call_later(call.caller.hangup_delay, lambda: call.hangup_a("NORMAL_CLEARING", remote=True))
        )


def run_on_b(call: SimCall, b: Leg, app: str, arg: str) -> None:
    gevent.spawn(execute, call, b, Pending(app, arg, new_uuid(), True))


# --- apps ------------------------------------------------------------------------


def app_answer(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    mark_answered(call, leg)
    return "_none_"


def mark_answered(call: SimCall, leg: Leg) -> None:
    if leg.answered_us:
        return
    leg.answered_us = call.us()
    leg.profile.times["Channel-Answered-Time"] = leg.answered_us
    leg.answer_state = "answered"
    leg.has_codec = True
    if leg is call.a:
        _sofia_answer_vars(call, leg)
    call.fire(leg, "CHANNEL_ANSWER")
    # An outbound leg shows ACTIVE only once bridged (captured).
    if leg is call.a:
        leg.call_state = "ACTIVE"
    if leg is call.a and leg.get_var("endpoint_disposition") is not None:
        leg.set_var("endpoint_disposition", "ANSWER")
    if leg is call.a:
        call.clock.call_later(0.02, lambda: _sofia_ack_vars(call, leg))


def _sofia_answer_vars(call: SimCall, leg: Leg) -> None:
    """What mod_sofia sets when it answers an inbound call (the 200 OK's SDP)."""
    rnd = call.random
    ip = leg.get_var("sip_local_network_addr") or "127.0.0.1"
    sess = rnd.randrange(1_000_000_000, 2_000_000_000)
    port = rnd.randrange(16384, 32768, 2)
    sdp = (
        f"v=0\r\no=FreeSWITCH {sess} {sess + 1} IN IP4 {ip}\r\ns=FreeSWITCH\r\n"
        f"c=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\n"
        f"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        f"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    for k, v in (
        ("rtp_local_sdp_str", sdp),
        ("local_media_ip", ip),
        ("local_media_port", str(port)),
        ("advertised_media_ip", ip),
        ("rtp_use_timer_name", "soft"),
        ("rtp_use_pt", "0"),
        ("rtp_use_ssrc", str(rnd.randrange(1, 2**32))),
        ("rtp_2833_send_payload", "101"),
        ("rtp_2833_recv_payload", "101"),
    ):
        leg.set_var(k, v)
    for k in ("remote_media_ip", "remote_media_port"):
        remote = leg.get_var(k)
        if remote is not None:
            leg.set_var(k, remote)


def _sofia_ack_vars(call: SimCall, leg: Leg) -> None:
    """The caller's ACK to our 200 OK: mod_sofia re-reads the dialog."""
    if not leg.alive:
        return
    leg.set_var("endpoint_disposition", "ANSWER")
    tag = "".join(call.random.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789") for _ in range(13))
    leg.set_var("sip_to_tag", tag)
    for k in ("sip_from_tag", "sip_cseq", "sip_call_id", "sip_full_via", "sip_full_from", "sip_full_to"):
        v = leg.get_var(k)
        if k == "sip_cseq":
            v = v or "1"
        if k == "sip_full_to" and v is not None and ";tag=" not in v:
            v = f"{v};tag={tag}"
        if v is not None:
            leg.set_var(k, v)


def app_playback(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    if leg is call.a:
        entry = _next(call.caller.playback_digits, call, "playback_index")
        if entry:
            type_digits(call, leg, entry, call.caller.playback_type_after, call.caller.digit_interval)
    terms = leg.get_var("playback_terminators")
    leg.playback_stop = set("*" if terms is None else ("" if terms == "none" else terms))
    # Keys already queued are read (and dropped) by the playback too.
    queued, leg.dtmf_queue = leg.dtmf_queue, []
    leg.playback_stopped = any(d in leg.playback_stop for d in queued)
    try:
        status, secs = play(call, leg, arg)
    finally:
        leg.playback_stop = None
        leg.playback_stopped = False
    if status == "notfound":
        response = "FILE NOT FOUND"
    elif status == "hangup" and leg.hangup_remote:
        response = "PLAYBACK ERROR"
    else:
        response = "FILE PLAYED"
    leg.set_var("current_application_response", response)
    return response


def _next(seq, call: SimCall, attr: str):
    i = getattr(call, attr)
    setattr(call, attr, i + 1)
    return seq[i] if i < len(seq) else None


def do_read(
    call: SimCall,
    leg: Leg,
    min_d: int,
    max_d: int,
    prompt: str,
    timeout_ms: int,
    terminators: str,
    digit_timeout_ms: int,
    typed: str | None,
) -> tuple[str, str, str]:
    """switch_ivr_read: returns (status, digits, terminator)."""
    leg.collector, leg.dtmf_queue = leg.dtmf_queue, []
    buf, term = "", ""
    status = "success"
    listen = leg is call.a and call.caller.hear_prompts
    if typed and not listen:
        type_digits(call, leg, typed, call.caller.type_after, call.caller.digit_interval)
    try:
        if prompt and prompt != "silence":
            pstatus, _ = play(call, leg, prompt, barge=True)
            if pstatus == "hangup":
                return "failure", "", ""
        if typed and listen:
            type_digits(call, leg, typed, call.caller.type_after, call.caller.digit_interval)
        first = True
        while True:
            while leg.collector:
                d = leg.collector.pop(0)
                if d in terminators:
                    term = d
                    break
                buf += d
                if len(buf) >= max_d:
                    break
            if term or len(buf) >= max_d:
                break
            wait_s = (timeout_ms if first and not buf else digit_timeout_ms) / 1000.0
            first = False
            got = wait_until(call, leg, wait_s, lambda: not leg.alive or bool(leg.collector))
            if not leg.alive:
                status = "failure"
                break
            if not got:
                status = "timeout"
                break
    finally:
        leg.collector = None
    if term:
        leg.set_var("read_terminator_used", term)
    if len(buf) < min_d:
        status = "failure"
    leg.set_var("read_result", status)
    return status, buf, term


def app_play_and_get_digits(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    a = split_args(arg)
    a += [""] * (11 - len(a))
    min_d = _int(a[0], 0)
    max_d = _int(a[1], 128) or 128
    tries = max(_int(a[2], 1), 1)
    timeout = _int(a[3], 5000)
    timeout = 1000 if timeout <= 1000 else timeout
    terminators = a[4] or "#"
    if terminators == "none":
        terminators = ""
    prompt, invalid, var, regex = a[5], a[6], a[7], a[8]
    digit_timeout = _int(a[9], 0) or timeout
    entry = _next(call.caller.digits, call, "digits_index") if leg is call.a else None
    plan = list(entry) if isinstance(entry, tuple) else [entry]
    if var:
        leg.set_var(var, None)
    for attempt in range(tries):
        if not leg.alive:
            break
        typed = plan[attempt] if attempt < len(plan) else None
        leg.set_var("read_result", None)
        status, digits, _term = do_read(call, leg, min_d, max_d, prompt, timeout, terminators, digit_timeout, typed)
        if status == "timeout" and len(digits) >= min_d:
            status = "success"
        if status == "success" and digits:
            if not regex or _regex_match(digits, regex):
                if var:
                    leg.set_var(var, digits)
                return "_none_"
            if var:
                leg.set_var(var, None)
                leg.set_var(var + "_invalid", digits)
        if not leg.alive:
            break
        if invalid:
            play(call, leg, invalid)
    return "_none_"


def _regex_match(text: str, regex: str) -> bool:
    try:
        return re.search(regex, text) is not None
    except re.error:
        return False


def _int(s: str, default: int) -> int:
    try:
        return int(s)
    except (TypeError, ValueError):
        return default


def app_read(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    a = split_args(arg)
    a += [""] * (7 - len(a))
    min_d, max_d = _int(a[0], 0), _int(a[1], 128) or 128
    prompt, var = a[2], a[3]
    timeout = _int(a[4], 5000)
    terminators = a[5] or "#"
    digit_timeout = _int(a[6], 0) or timeout
    entry = _next(call.caller.digits, call, "digits_index") if leg is call.a else None
    typed = entry[0] if isinstance(entry, tuple) else entry
    status, digits, _ = do_read(call, leg, min_d, max_d, prompt, timeout, terminators, digit_timeout, typed)
    if var and digits:
        leg.set_var(var, digits)
    return "_none_"


def app_say(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    # No sound pack: completes at once with _none_ (captures 06, 06a).
    call.transcript.add(call.rel(), _tag(call, leg), "say", text=arg)
    if call.switch.say_sound_prefix:
        # switch_ivr_say swaps sound_prefix in and back out: it ends up last.
        leg.set_var("sound_prefix", leg.get_var("sound_prefix") or call.switch.say_sound_prefix)
    return "_none_"


def app_set(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    name, _, value = arg.partition("=")
    leg.set_var(name.strip(), value if value else None)
    return "_none_"


def app_export(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    name, _, value = arg.partition("=")
    name = name.strip()
    local = True
    if name.startswith("nolocal:"):
        name, local = name[len("nolocal:") :], False
    if local:
        leg.set_var(name, value or None)
    exported = [v for v in (leg.get_var("export_vars") or "").split(",") if v]
    if name not in exported:
        exported.append(name)
    leg.set_var("export_vars", ",".join(exported))
    return "_none_"


def app_unset(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    leg.set_var(arg.strip(), None)
    return "_none_"


def app_sleep(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    wait_until(call, leg, _int(arg, 0) / 1000.0, lambda: not leg.alive)
    return "_none_"


# FreeSWITCH's clock as channels read it (switch_micro_time_now) is
# runtime.timestamp, which the timer thread moves once per tick:
#   src/switch_core.c:1968   runtime.microseconds_per_tick = 20000;
#   src/switch_time.c:1228   runtime.timestamp = ts;   (once per tick)
# so a hang-up the scheduler causes is stamped on the next 20 ms tick.
RUNTIME_TICK = 0.02
# The scheduler's task thread (src/switch_scheduler.c, 1.10.12) checks its
# tasks, then waits for an event on its queue for at most half a second:
#   if (switch_queue_pop_timeout(globals.event_queue, &pop, 500000) ...
# Adding a task pushes an ADD_SCHEDULE event, which wakes it at once, so
# its checks fall at the moment the app ran plus multiples of 0.5 s.
SCHED_WAIT = 0.5


def _sched_delay(call: SimCall, spec: str) -> float | None:
    return sched_fire_delay(call.now(), spec)


def sched_fire_delay(now: float, spec: str) -> float | None:
    """Seconds from `now` (epoch) until a `sched_*` task run then fires;
    None: `+0`, hang up now.

    mod_dptools sched_hangup_function (1.10.12):
        int sec = atol(argv[0] + 1);
        if (*argv[0] == '+') { when = switch_epoch_time_now(NULL) + sec; }
        else { when = atol(argv[0]); }
        ... if (sec == 0) { switch_channel_hangup(...) } else { switch_ivr_schedule_hangup(when, ...) }
    switch_scheduler.c task_thread_loop:
        int64_t now = switch_epoch_time_now(NULL);
        if (now >= tp->task.runtime && !tp->in_thread) { ... switch_scheduler_execute(tp) }
    `when` is in whole epoch seconds and so is the check: the task fires at
    the first check (app time + k * 0.5 s) whose whole second has reached
    `when`. +N run at x.0-x.49 fires N s (+20 ms) later, run at x.5-x.99 it
    fires N-0.5 s (+20 ms) later: measured N-0.5 to N+0.02 s (captures 08,
    13, 14, 16, 20; README fact 23; realfs: 12020 ms for +12 in 2 of 4 runs).
    The 20 ms: billmsec runs from B's answer stamp, and the hang-up the task
    causes is stamped a 20 ms tick later (billmsec 10020, 12020, 6020 for
    +10, +12, +6; 9520, 5520 when it fired half a second early); the
    captures' event stamps show the check itself on the half second
    (test_sim_replay: the scheduler model against the captures)."""
    if spec.startswith("+"):
        if _int(spec[1:], 0) == 0:
            return None
        runtime = math.floor(now) + _int(spec[1:], 0)
    else:
        if _int(spec[1:], 0) == 0:
            return None
        runtime = _int(spec, int(now))
    if runtime <= now:
        return RUNTIME_TICK
    checks = math.ceil(round((runtime - now) / SCHED_WAIT, 9))
    return checks * SCHED_WAIT + RUNTIME_TICK


def app_sched_hangup(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    a = arg.split()
    if not a:
        return "_none_"
    cause = hangup_cause_name(a[1]) if len(a) > 1 else "ALLOTTED_TIMEOUT"
    delay = _sched_delay(call, a[0])
    target = leg
    if delay is None:
        # `sched_hangup +0`: switch_channel_hangup at once (mod_dptools).
        if leg is call.a:
            call.hangup_a(cause, remote=False)
        else:
            hangup_b(call, leg, cause)
        return "_none_"
    if leg is call.a:
        call.a_timers.append(call.clock.call_later(delay, lambda: call.hangup_a(cause, remote=False)))
    else:
        target.timers.append(
            call.clock.call_later(delay, lambda: hangup_b(call, target, cause) if target.alive else None)
        )
    return "_none_"


def app_sched_broadcast(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    a = arg.split(" ")
    if len(a) < 2:
        return "_none_"
    # sched_broadcast_function: `when` as sched_hangup's, but no `sec == 0` case.
    delay = _sched_delay(call, a[0])
    if delay is None:
        delay = RUNTIME_TICK
    what = a[1]
    which = a[2] if len(a) > 2 else "aleg"
    call.sched_id += 1
    leg.set_var("last_sched_id", str(call.sched_id))
    app, sep, app_arg = what.partition("::")
    if not sep:
        app, app_arg = "playback", what

    def fire() -> None:
        targets = []
        partner = (call.bridge.b if leg is call.a else call.a) if call.bridge else None
        if which in ("aleg", "both", "holdb"):
            targets.append(leg)
        if which in ("bleg", "both") and partner is not None:
            targets.append(partner)
        for t in targets:
            if t.alive:
                broadcast(call, t, app, app_arg)

    timer = call.clock.call_later(delay, fire)
    if leg is call.a:
        call.a_timers.append(timer)
    else:
        leg.timers.append(timer)
    return "_none_"


def broadcast(call: SimCall, leg: Leg, app: str, arg: str) -> None:
    """A private execute (uuid_broadcast): an event-locked bridge on A holds
    it back until the bridge ends (ESL.md)."""
    item = Pending(app, arg, new_uuid(), True)
    if leg is call.a:
        br = call.bridge
        if br is not None and br.lock:
            br.deferred.append(lambda: execute(call, leg, item, private=True))
            return
        if call.current_app is not None and call.current_app.app != "bridge":
            call.queue.put(item)
            return
    gevent.spawn(execute, call, leg, item, private=True)


def app_bind_digit_action(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    p = [x.strip() for x in arg.split(",")]
    if len(p) >= 3:
        p += [""] * (6 - len(p))
        realm, digits, action, value = p[0], p[1], p[2], p[3]
        call.digit_bindings.setdefault(realm, []).append((realm, digits, action, value, p[4] or "self", p[5] or "self"))
    return "_none_"


def app_digit_action_set_realm(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    call.digit_realm = arg.split(",")[0].strip() or None
    return "_none_"


def app_clear_digit_action(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    realm = arg.strip()
    if realm in ("", "all"):
        call.digit_bindings.clear()
    else:
        call.digit_bindings.pop(realm, None)
    call.digit_buffer = ""
    return "_none_"


def app_hangup(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    cause = hangup_cause_name(arg or "NORMAL_CLEARING")
    if leg is call.a:
        call.hangup_a(cause, remote=False)
    else:
        hangup_b(call, leg, cause, events_only=True)
    return "_none_"


def app_flush_dtmf(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    """mod_dptools flush_dtmf: switch_channel_flush_dtmf drops the queue."""
    leg.dtmf_queue.clear()
    return "_none_"


def app_noop(call: SimCall, leg: Leg, arg: str, r: Running) -> str:
    return "_none_"


# --- B legs and CDR variables --------------------------------------------------------


def hangup_b(call: SimCall, b: Leg, cause: str, *, events_only: bool = False) -> None:
    """B's CHANNEL_HANGUP; the rest of its teardown follows the bridge."""
    if not b.alive:
        return
    b.alive = False
    b.hangup_cause = cause
    b.answer_state = "hangup"
    b.state_number = 10
    b.hangup_us = call.us()
    # A dead leg's timers must not make the virtual clock jump later on.
    for t in b.timers:
        t.cancel()
    if b.bridged_us and call.a.alive:
        b.set_var("last_bridge_role", "originatee")
    call.fire(b, "CHANNEL_HANGUP")
    b.wake.set()
    call.a.wake.set()


def finish_b(call: SimCall, b: Leg) -> None:
    """B's CS_HANGUP, CS_REPORTING and CHANNEL_HANGUP_COMPLETE. A CDR posted
    in the leg's thread (mod_json_cdr without queue-capacity) holds B's
    HANGUP_COMPLETE and CS_DESTROY, in B's own thread: A goes on."""
    if b.finished:
        return
    b.finished = True
    b.set_state("CS_HANGUP")
    call.fire(b, "CHANNEL_STATE", variables=False)
    b.set_state("CS_REPORTING")
    b.call_state = "HANGUP"
    b.profile.times["Channel-Hangup-Time"] = b.hangup_us
    call.fire(b, "CHANNEL_STATE", variables=False)
    set_cdr_vars(call, b)
    if any(r.queue_capacity is None for r in call.switch.cdr_reporters):
        b.reporting = True
        g = gevent.spawn(_b_reports, call, b)
        g.name = f"sim-b-reporting-{b.uuid[:8]}"
        call.reporting.append(g)
        return
    call.fire(b, "CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", b.hangup_cause or "")])
    b.pending_destroy = True


def _b_reports(call: SimCall, b: Leg) -> None:
    report_cdr(call, b)
    b.reporting = False
    call.fire(b, "CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", b.hangup_cause or "")])
    b.pending_destroy = True
    if b.destroy_wanted:
        destroy_b(call, b)


def report_cdr(call: SimCall, leg: Leg) -> None:
    """switch_core_session_reporting_state's STATE_MACRO(reporting): the
    global state handlers' on_reporting (mod_json_cdr) run before
    CHANNEL_HANGUP_COMPLETE is fired (switch_core_state_machine.c)."""
    if not call.switch.cdr_reporters:
        return
    idn = leg.identity
    headers = [
        ("Core-UUID", idn.core_uuid),
        ("FreeSWITCH-Switchname", idn.hostname),
        *leg.basic_data(),
        *leg.profile.headers("Caller-"),
        *(("variable_" + k, v) for k, v in leg.vars.items()),
    ]
    for reporter in list(call.switch.cdr_reporters):
        reporter.report(call.clock, leg, headers)


def destroy_b(call: SimCall, b: Leg) -> None:
    if b.reporting:
        b.destroy_wanted = True
        return
    if not b.pending_destroy:
        return
    b.pending_destroy = False
    b.call_uuid = b.uuid
    b.set_state("CS_DESTROY")
    call.fire(b, "CHANNEL_STATE", variables=False)
    call.switch.unregister(b)


def _stamp(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us // 1_000_000)) if us else ""


def set_cdr_vars(call: SimCall, leg: Leg) -> None:
    """The variables switch_channel_set_timestamps / process_device_hangup add
    before CHANNEL_HANGUP_COMPLETE. billsec is the difference of whole epoch
    seconds, not billmsec/1000 (README fact 22)."""
    cause = leg.hangup_cause or "NORMAL_CLEARING"
    t = leg.profile.times
    created = t["Channel-Created-Time"]
    answered = leg.answered_us
    progress = leg.progress_us
    end = leg.hangup_us or call.us()
    sv = leg.set_var
    sv("hangup_cause", cause)
    sv("hangup_cause_q850", str(q850(cause)))
    sv("digits_dialed", leg.digits_dialed or "none")
    sv("start_stamp", _stamp(created))
    sv("profile_start_stamp", _stamp(created))
    if answered:
        sv("answer_stamp", _stamp(answered))
    if leg.bridged_us:
        sv("bridge_stamp", _stamp(leg.bridged_us))
    if progress:
        sv("progress_stamp", _stamp(progress))
    sv("end_stamp", _stamp(end))
    for name, us in (
        ("start", created),
        ("profile_start", created),
        ("answer", answered),
        ("bridge", leg.bridged_us),
        ("last_hold", 0),
        ("hold_accum", None),
        ("resurrect", 0),
        ("progress", progress),
        ("progress_media", 0),
        ("end", end),
    ):
        if us is None:
            sv("hold_accum_seconds", "0")
            sv("hold_accum_usec", "0")
            sv("hold_accum_ms", "0")
            continue
        sv(name + "_epoch", str(us // 1_000_000))
        sv(name + "_uepoch", str(us))
    if leg.last_app:
        sv("last_app", leg.last_app[0])
        if leg.last_app[1]:
            sv("last_arg", leg.last_app[1])
    sv("caller_id", f'"{leg.profile.cid_name}" <{leg.profile.cid_number}>')
    dur_us = end - created
    bill_us = end - answered if answered else 0
    prog_us = progress - created if progress else 0
    ans_us = answered - created if answered else 0
    bill_s = (end // 1_000_000 - answered // 1_000_000) if answered else 0
    sv("duration", str(end // 1_000_000 - created // 1_000_000))
    sv("billsec", str(bill_s))
    sv("progresssec", str((progress // 1_000_000 - created // 1_000_000) if progress else 0))
    sv("answersec", str((answered // 1_000_000 - created // 1_000_000) if answered else 0))
    sv("waitsec", str((leg.bridged_us // 1_000_000 - created // 1_000_000) if leg.bridged_us else 0))
    sv("progress_mediasec", "0")
    flow_us = dur_us if answered else 0
    sv("flow_billsec", str(end // 1_000_000 - created // 1_000_000 if answered else 0))
    sv("mduration", str(dur_us // 1000))
    sv("billmsec", str(bill_us // 1000))
    sv("progressmsec", str(prog_us // 1000))
    sv("answermsec", str(ans_us // 1000))
    sv("waitmsec", str((leg.bridged_us - created) // 1000 if leg.bridged_us else 0))
    sv("progress_mediamsec", "0")
    sv("flow_billmsec", str(flow_us // 1000))
    sv("uduration", str(dur_us))
    sv("billusec", str(bill_us))
    sv("progressusec", str(prog_us))
    sv("answerusec", str(ans_us))
    sv("waitusec", str(leg.bridged_us - created if leg.bridged_us else 0))
    sv("progress_mediausec", "0")
    sv("flow_billusec", str(flow_us))
    if leg.get_var("sip_hangup_disposition") is None:
        sv("sip_hangup_disposition", leg.sip_disposition or "send_bye")


# An application: runs on the leg with its argument, returns its response.
App = Callable[["SimCall", Leg, str, Running], str]

# bridge (cardd.sim.bridge) is added by the switch: it runs these apps on its B legs.
APPS: dict[str, App] = {
    "answer": app_answer,
    "pre_answer": app_noop,
    "playback": app_playback,
    "play_and_get_digits": app_play_and_get_digits,
    "read": app_read,
    "say": app_say,
    "set": app_set,
    "export": app_export,
    "unset": app_unset,
    "sleep": app_sleep,
    "sched_hangup": app_sched_hangup,
    "sched_broadcast": app_sched_broadcast,
    "bind_digit_action": app_bind_digit_action,
    "digit_action_set_realm": app_digit_action_set_realm,
    "clear_digit_action": app_clear_digit_action,
    "hangup": app_hangup,
    "ring_ready": app_noop,
    "log": app_noop,
    "info": app_noop,
    "park": app_noop,
    "event": app_noop,
    "sched_cancel": app_noop,
    "flush_dtmf": app_flush_dtmf,
}
