"""The bridge application: dial-string parsing, originate, and the bridged call.

Event order follows the captures: README facts 8, 9, 21 (B's lifecycle),
24 (broadcasts), 26 (A ends mid-bridge), 28 (`##` while ringing).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cardd.sim import apps, sofia
from cardd.sim.caller import Callee, callee_for
from cardd.sim.channel import Leg, Profile

if TYPE_CHECKING:
    from cardd.sim.switch import SimCall

# A callee that talks N s is billed N s + 20 ms on the real switch (realfs:
# billmsec 8020, 6020, 5020 for sipp callees holding 8, 6 and 5 s). The
# callee's clock starts at FreeSWITCH's ACK, sent after the 200 OK was
# stamped as the answer, and FreeSWITCH stamps both ends with
# switch_micro_time_now(), i.e. runtime.timestamp, which moves in 20 ms
# ticks (switch_core.c: runtime.microseconds_per_tick = 20000): the BYE
# lands one tick after N s. Real calls therefore bill a second more than
# N at whole-second boundaries; so do simulated ones.
CALLEE_BYE_LAG = apps.RUNTIME_TICK

# Causes for which a failed bridge does not hang A up without continue_on_fail.
_NO_HANGUP = ("NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL")
_DIALSTATUS = {
    "USER_BUSY": "BUSY",
    "NO_ANSWER": "NOANSWER",
    "NO_USER_RESPONSE": "NOANSWER",
    "NORMAL_TEMPORARY_FAILURE": "NORMAL_TEMPORARY_FAILURE",
    "SUCCESS": "SUCCESS",
    "CALL_REJECTED": "BUSY",
    "UNALLOCATED_NUMBER": "INVALIDARGS",
}


def split_vars(body: str) -> list[tuple[str, str]]:
    """`k=v,k2='a b'` -> pairs; single quotes protect commas and spaces."""
    out: list[tuple[str, str]] = []
    cur: list[str] = []
    quoted = False
    for ch in body + ",":
        if ch == "'":
            quoted = not quoted
        elif ch == "," and not quoted:
            item = "".join(cur).strip()
            if item:
                k, _, v = item.partition("=")
                out.append((k.strip(), v))
            cur = []
        else:
            cur.append(ch)
    return out


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside {}, [] and quotes."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "{[":
            depth += 1
        elif not quoted and ch in "}]":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


@dataclass
class DialLeg:
    vars: list[tuple[str, str]]
    endpoint: str

    @property
    def number(self) -> str:
        return endpoint_number(self.endpoint)


def parse_dial_string(text: str) -> tuple[list[tuple[str, str]], list[list[DialLeg]]]:
    """-> (global {} vars, failover groups (`|`) of parallel legs (`,`))."""
    text = text.strip()
    gvars: list[tuple[str, str]] = []
    if text.startswith("{"):
        end = _closing(text, 0, "{", "}")
        gvars = split_vars(text[1:end])
        text = text[end + 1 :]
    groups = []
    for group in _split_top(text, "|"):
        legs = []
        for item in _split_top(group, ","):
            lvars: list[tuple[str, str]] = []
            while item.startswith("["):
                end = _closing(item, 0, "[", "]")
                lvars += split_vars(item[1:end])
                item = item[end + 1 :].strip()
            legs.append(DialLeg(lvars, item))
        groups.append(legs)
    return gvars, groups


def _closing(text: str, start: int, open_: str, close: str) -> int:
    quoted = False
    for i in range(start + 1, len(text)):
        ch = text[i]
        if ch == "'":
            quoted = not quoted
        elif ch == close and not quoted:
            return i
    return len(text) - 1


def _sip_url(endpoint: str) -> str:
    """sofia/<profile>/<user@host> -> sip:user@host; a gateway keeps its name."""
    parts = endpoint.split("/")
    if len(parts) >= 4 and parts[1] == "gateway":
        return f"sip:{parts[3]}@{parts[2]}"
    return "sip:" + parts[-1]


def endpoint_number(endpoint: str) -> str:
    """sofia/gateway/gw/NUM, sofia/external/NUM@host, user/NUM@dom -> NUM."""
    parts = endpoint.split("/")
    last = parts[-1] if parts else endpoint
    if len(parts) >= 4 and parts[1] == "gateway":
        last = parts[3]
    return re.split(r"[@;]", last, maxsplit=1)[0]


def app_bridge(call: SimCall, a: Leg, arg: str, r: apps.Running) -> str:
    gvars, groups = parse_dial_string(arg)
    gdict = dict(gvars)
    attempt = call.bridge_index
    call.bridge_index += 1
    entry = call.caller.bridge_digits[attempt] if attempt < len(call.caller.bridge_digits) else None
    state = apps.BridgeState(a=a, lock=r.lock)
    call.bridge = state
    if entry:
        apps.type_digits(call, a, entry[1], entry[0], call.caller.digit_interval)
    result_cause = "NORMAL_TEMPORARY_FAILURE"
    b: Leg | None = None
    try:
        for group in groups or [[]]:
            if not group:
                continue
            if len(group) > 1:
                b, cause, lvars = originate_parallel(call, a, state, group, gvars, gdict)
            else:
                dl = group[0]
                lvars = gvars + dl.vars
                b, cause = originate(call, a, state, dl, lvars, _callee(call, dl), gdict)
            if cause == "SUCCESS":
                break
            result_cause = cause
            if not a.alive:
                break
        if b is not None and state.answered:
            return talk(call, a, b, state, dict(lvars), gdict)
        return _failed(call, a, b, result_cause)
    finally:
        call.bridge = None
        for fn in state.deferred:
            fn()


def _callee(call: SimCall, dl: DialLeg) -> Callee:
    return callee_for(call.callees, dl.endpoint, dl.number)


def _new_b(call: SimCall, a: Leg, dl: DialLeg, lvars: list[tuple[str, str]]) -> Leg:
    v = dict(lvars)
    b_uuid = v.get("origination_uuid") or (call.b_uuids.pop(0) if call.b_uuids else apps.new_uuid())
    name = dl.endpoint
    now = call.us()
    ap = a.profile
    cid_name, cid_number = sofia.caller_id(a.vars, {}, v, ap.cid_name, ap.cid_number)
    prof = Profile(
        direction="outbound",
        username=ap.username,
        cid_name=cid_name,
        cid_number=cid_number,
        orig_cid_name=ap.cid_name,
        orig_cid_number=ap.cid_number,
        callee_name="Outbound Call",
        callee_number=dl.number,
        network_addr=ap.network_addr,
        ani=ap.ani,
        destination=dl.number,
        uuid=b_uuid,
        context=ap.context,
        channel_name=name,
    )
    prof.times["Profile-Created-Time"] = now
    prof.times["Channel-Created-Time"] = now
    b = Leg(call.identity, prof, name=name, direction="outbound", call_uuid=a.uuid, hit_dialplan=False)
    b.created_us = now
    other = copy.copy(ap)
    other.callee_name = None
    b.other_type = "originator"
    b.other_profile = other
    b.other_times = dict.fromkeys(other.times, 0)
    call.legs[b_uuid] = b
    call.switch.register(call, b)
    sid = str(call.switch.next_session_id())
    for k, val in (
        ("direction", "outbound"),
        ("is_outbound", "true"),
        ("uuid", b_uuid),
        ("session_id", sid),
        ("channel_name", name),
        ("sip_destination_url", _sip_url(dl.endpoint)),
        ("max_forwards", "69"),
        ("originator", a.uuid),
        ("signal_bond", a.uuid),
        ("call_uuid", a.uuid),
    ):
        b.set_var(k, val)
    for k, val in lvars:
        b.set_var(k, val)
    for k, val in (
        ("originate_early_media", "true"),
        ("originating_leg_uuid", a.uuid),
        ("originate_endpoint", name.split("/")[0]),
    ):
        b.set_var(k, val)
    # What the callee's phone shows (sofia_glue_do_invite's From).
    b.sip_from = sofia.outgoing_from(call.switch.sofia, dl.endpoint, cid_name, cid_number, b.vars)
    return b


def originate(
    call: SimCall,
    a: Leg,
    state: apps.BridgeState,
    dl: DialLeg,
    lvars: list[tuple[str, str]],
    callee: Callee,
    gdict: dict[str, str],
) -> tuple[Leg, str]:
    b = _new_b(call, a, dl, lvars)
    state.b = b
    call.transcript.add(
        call.rel(),
        "B",
        "dial",
        number=dl.number,
        endpoint=dl.endpoint,
        uuid=b.uuid,
        outcome=callee.outcome,
        sip_from=str(b.sip_from),
    )
    _create_b(call, b)
    timeout = float(dict(lvars).get("originate_timeout") or gdict.get("originate_timeout") or 60)
    gone = lambda: not b.alive or not a.alive  # noqa: E731

    if callee.outcome == "unreachable":
        apps.wait_until(call, a, 0.02, gone)
        return _fail_b(call, b, "NORMAL_TEMPORARY_FAILURE")
    if callee.outcome == "busy":
        if apps.wait_until(call, a, min(callee.busy_after, timeout), gone):
            return _interrupted(call, a, b)
        return _fail_b(call, b, "USER_BUSY")
    # 180 Ringing, a moment after the INVITE went out.
    if apps.wait_until(call, a, 0.02, gone):
        return _interrupted(call, a, b)
    _ring(call, a, b)
    answer_after = callee.ring_time(call.now())
    ring = timeout if callee.outcome == "no_answer" else min(answer_after, timeout)
    if apps.wait_until(call, a, ring, gone):
        return _interrupted(call, a, b)
    if callee.outcome == "no_answer" or answer_after > timeout:
        b.sip_disposition = "send_cancel"
        return _fail_b(call, b, "NO_ANSWER")
    _answered(call, state, b, callee)  # 200 OK
    return b, "SUCCESS"


def _ring(call: SimCall, a: Leg, b: Leg) -> None:
    """180 Ringing: CHANNEL_PROGRESS; ring_ready reaches A with the callee."""
    b.progress_us = call.us()
    b.profile.times["Channel-Progress-Time"] = b.progress_us
    assert b.other_times is not None  # a B leg gets its A leg's times when it is made
    b.other_times["Channel-Progress-Time"] = b.progress_us
    call.fire(b, "CHANNEL_PROGRESS")
    b.call_state = "RINGING"
    a.profile.callee_name = "Outbound Call"
    a.profile.callee_number = b.profile.destination
    a.progress_us = a.progress_us or b.progress_us
    a.profile.times["Channel-Progress-Time"] = a.progress_us


def _answered(call: SimCall, state: apps.BridgeState, b: Leg, callee: Callee) -> None:
    b.has_codec = True
    apps.mark_answered(call, b)
    b.set_var("endpoint_disposition", "ANSWER")  # right after the ANSWER event (14)
    state.answered = True
    state.b = b
    call.transcript.add(call.rel(), "B", "answer", uuid=b.uuid)
    for name, value in list(b.vars.items()):
        if name.startswith("execute_on_answer"):
            app, _, app_arg = value.partition(" ")
            apps.execute(call, b, apps.Pending(app, app_arg, apps.new_uuid(), True), loops=False)
    if callee.talk is not None:
        # Timed from B's answer stamp (whole microseconds), not from the float
        # clock: stamped separately, the two ends of a 12.02 s talk could be
        # 12019.999 ms apart and billmsec read 12019 where the switch says 12020.
        bye_at = b.answered_us / 1_000_000 + callee.talk + CALLEE_BYE_LAG
        b.timers.append(call.clock.call_later(bye_at - call.clock.now(), lambda: _callee_bye(call, b)))


def _create_b(call: SimCall, b: Leg) -> None:
    """B's first events (README fact 21): CS_INIT, CREATE, CS_ROUTING, CS_CONSUME_MEDIA."""
    b.set_state("CS_INIT", 1)
    call.fire(b, "CHANNEL_STATE", variables=False)
    b.set_state("CS_INIT", 2)
    call.fire(b, "CHANNEL_CREATE")
    b.set_state("CS_ROUTING", 2)
    call.fire(b, "CHANNEL_STATE", variables=False)
    b.set_state("CS_CONSUME_MEDIA", 7)
    call.fire(b, "CHANNEL_STATE", variables=False)


def originate_parallel(
    call: SimCall,
    a: Leg,
    state: apps.BridgeState,
    group: list[DialLeg],
    gvars: list[tuple[str, str]],
    gdict: dict[str, str],
) -> tuple[Leg | None, str, list[tuple[str, str]]]:
    """`a,b`: every leg rings at once; the first to answer wins and the
    others are hung up with LOSE_RACE (switch_ivr_originate.c). When none
    answers, the first leg's cause is reported (UNVERIFIED: no capture)."""
    legs = []
    for dl in group:
        lvars = gvars + dl.vars
        callee = _callee(call, dl)
        b = _new_b(call, a, dl, lvars)
        call.transcript.add(
            call.rel(),
            "B",
            "dial",
            number=dl.number,
            endpoint=dl.endpoint,
            uuid=b.uuid,
            outcome=callee.outcome,
            sip_from=str(b.sip_from),
        )
        _create_b(call, b)
        legs.append((b, callee, lvars))
    state.b = legs[0][0]  # what a digit action's `peer` reaches while they ring
    timeout = float(gdict.get("originate_timeout") or 60)
    plan: list[tuple[float, int, str]] = []
    for i, (_, callee, _) in enumerate(legs):
        if callee.outcome == "unreachable":
            plan.append((0.02, i, "NORMAL_TEMPORARY_FAILURE"))
        elif callee.outcome == "busy":
            plan.append((min(callee.busy_after, timeout), i, "USER_BUSY"))
        else:
            plan.append((0.02, i, "ring"))
            answer_after = callee.ring_time(call.now())
            if callee.outcome == "answer" and answer_after <= timeout:
                plan.append((answer_after, i, "answer"))
    plan.sort(key=lambda x: x[0])
    start = call.now()
    winner = None

    def settled() -> bool:
        return not a.alive or not any(b.alive for b, _, _ in legs)

    for t, i, what in plan:
        b, callee, lvars = legs[i]
        if apps.wait_until(call, a, start + t - call.now(), settled):
            break
        if not b.alive:
            continue
        if what == "ring":
            _ring(call, a, b)
        elif what == "answer":
            winner = legs[i]
            break
        else:
            _fail_b(call, b, what)
    if winner is None and not settled():
        apps.wait_until(call, a, start + timeout - call.now(), settled)
    for b, _, _ in legs:
        if winner is not None and b is winner[0]:
            continue
        if b.alive:
            b.sip_disposition = "send_cancel"
            if winner is not None:
                b.set_var("group_dial_status", "loser")
            apps.hangup_b(
                call, b, "LOSE_RACE" if winner is not None else ("ORIGINATOR_CANCEL" if not a.alive else "NO_ANSWER")
            )
        if not b.alive and b.finished is False:
            apps.finish_b(call, b)
            apps.destroy_b(call, b)
    if winner is not None:
        _answered(call, state, winner[0], winner[1])
        return winner[0], "SUCCESS", winner[2]
    first = legs[0][0]
    return first, first.hangup_cause or "NO_ANSWER", legs[0][2]


def _callee_bye(call: SimCall, b: Leg) -> None:
    if b.alive:
        b.hangup_remote = True
        apps.hangup_b(call, b, "NORMAL_CLEARING")


def _fail_b(call: SimCall, b: Leg, cause: str) -> tuple[Leg, str]:
    apps.hangup_b(call, b, cause)
    apps.finish_b(call, b)
    apps.destroy_b(call, b)
    return b, cause


def _interrupted(call: SimCall, a: Leg, b: Leg) -> tuple[Leg, str]:
    """Ringing ended early: `##` hung B up (fact 28), or the caller left."""
    if b.alive:
        b.sip_disposition = "send_cancel"
        apps.hangup_b(call, b, "ORIGINATOR_CANCEL" if not a.alive else "NORMAL_CLEARING")
    if b.sip_disposition is None:
        b.sip_disposition = "send_cancel"
    cause = b.hangup_cause or "NORMAL_CLEARING"
    apps.finish_b(call, b)
    apps.destroy_b(call, b)
    return b, cause


# SIP response of a failed INVITE per cause (mod_sofia): status, phrase.
_SIP_FAILURE = {"USER_BUSY": ("486", "Busy Here"), "NORMAL_TEMPORARY_FAILURE": ("503", "Service Unavailable")}


def _failed(call: SimCall, a: Leg, b: Leg | None, cause: str) -> str:
    """A's variables after a failed originate, in FreeSWITCH's order (10, 10b)."""
    if b is not None:
        a.set_var("originate_signal_bond", b.uuid)
        a.push_var("originated_legs", f"{b.uuid};Outbound Call;{b.profile.destination}")
    sip = _SIP_FAILURE.get(cause) if b is not None and b.sip_disposition != "send_cancel" else None
    if sip:
        a.set_var("sip_invite_failure_status", sip[0])
        a.set_var("sip_invite_failure_phrase", sip[1])
        a.set_var("sip_hangup_phrase", sip[1])
    a.set_var("last_bridge_hangup_cause", cause)
    if sip:
        a.set_var("last_bridge_proto_specific_hangup_cause", f"sip:{sip[0]}")
    a.set_var("originate_disposition", cause)
    a.set_var("DIALSTATUS", _DIALSTATUS.get(cause, cause))
    if b is not None:
        a.push_var("originate_causes", f"{b.uuid};{cause}")
    a.set_var("originate_failed_cause", cause)
    call.transcript.bridges.append(_outcome(call, b, cause, answered=False))
    call.transcript.add(call.rel(), "A", "bridge", outcome=cause)
    cof = (a.get_var("continue_on_fail") or "").lower()
    if a.alive and cof not in ("true", "yes", "1", "on") and cause not in cof.split(",") and cause not in _NO_HANGUP:
        call.hangup_a(cause, remote=False)
    return "_none_"


def _outcome(call: SimCall, b: Leg | None, disposition: str, *, answered: bool):
    from cardd.sim.transcript import BridgeOutcome

    if b is None:
        return BridgeOutcome("", "", "", disposition, False)
    bill_us = (b.hangup_us - b.answered_us) if (answered and b.answered_us and b.hangup_us) else 0
    return BridgeOutcome(
        b_uuid=b.uuid,
        number=b.profile.destination,
        dial_string=b.name,
        disposition=disposition,
        answered=answered,
        b_hangup_cause=b.hangup_cause,
        answer_epoch_us=b.answered_us,
        end_epoch_us=b.hangup_us,
        billsec=(b.hangup_us // 1_000_000 - b.answered_us // 1_000_000) if bill_us else 0,
        billmsec=bill_us // 1000,
        sip_from=b.sip_from,
    )


def talk(call: SimCall, a: Leg, b: Leg, state: apps.BridgeState, lvars: dict[str, str], gdict: dict[str, str]) -> str:
    now = call.us()
    # A's variables at the bridge, in FreeSWITCH's order (09, 14).
    a.push_var("originated_legs", f"{b.uuid};Outbound Call;{b.profile.destination}")
    a.set_var("switch_m_sdp", b.get_var("switch_r_sdp") or "")
    a.set_var("video_media_flow", "inactive")
    a.set_var("text_media_flow", "inactive")
    a.set_var("audio_media_flow", "sendrecv")
    a.set_var("originate_disposition", "SUCCESS")
    a.set_var("DIALSTATUS", "SUCCESS")
    a.push_var("originate_causes", f"{b.uuid};NONE")
    a.set_var("signal_bond", b.uuid)
    a.profile.callee_name = "Outbound Call"
    a.profile.callee_number = b.profile.destination
    a.bridged_us = now
    a.profile.times["Channel-Bridged-Time"] = now
    a.other_type = "originatee"
    a.other_profile = copy.copy(b.profile)
    a.other_profile.logical_direction = "inbound"
    a.other_times = dict(b.profile.times)
    b.bridged_us = now
    b.profile.times["Channel-Bridged-Time"] = now
    bridge_hdrs = [("Bridge-A-Unique-ID", a.uuid), ("Bridge-B-Unique-ID", b.uuid)]
    call.fire(a, "CHANNEL_BRIDGE", pre=bridge_hdrs)
    # Set by the bridge threads right after CHANNEL_BRIDGE (seen on the next events).
    for k, v in (
        ("bridge_to", b.uuid),
        ("last_bridge_to", b.uuid),
        ("bridge_channel", b.name),
        ("bridge_uuid", b.uuid),
        ("signal_bond", b.uuid),
        ("last_sent_callee_id_name", "Outbound Call"),
        ("last_sent_callee_id_number", b.profile.destination),
    ):
        a.set_var(k, v)
    for k, v in (
        ("call_uuid", a.uuid),
        ("bridge_to", a.uuid),
        ("last_bridge_to", a.uuid),
        ("bridge_channel", a.name),
        ("bridge_uuid", a.uuid),
        ("signal_bond", a.uuid),
        ("last_sent_callee_id_name", a.profile.cid_name),
        ("last_sent_callee_id_number", b.profile.cid_number),
    ):
        b.set_var(k, v)
    b.call_state = "ACTIVE"
    b.set_state("CS_EXCHANGE_MEDIA")
    call.fire(b, "CHANNEL_STATE", variables=False)
    call.transcript.add(call.rel(), "A", "bridged", uuid=b.uuid)
    if call.caller.hangup_after_talk is not None:
        call.a_timers.append(
            call.clock.call_later(call.caller.hangup_after_talk, lambda: call.hangup_a("NORMAL_CLEARING", remote=True))
        )
    apps.wait_until(call, a, 10**9, lambda: not a.alive or not b.alive)
    a_first = not a.alive and b.alive
    if a_first:
        # Fact 26: B goes down completely before A's UNBRIDGE (15, 20).
        b.set_var("bridge_to", None)
        if a.hangup_remote:
            b.set_var("sip_hangup_phrase", "OK")
        b.set_var("last_bridge_hangup_cause", a.hangup_cause)
        if a.hangup_remote:
            b.set_var("last_bridge_proto_specific_hangup_cause", "sip:200")
        apps.hangup_b(call, b, "NORMAL_CLEARING")
        apps.finish_b(call, b)
        cause = b.hangup_cause or "NORMAL_CLEARING"
    else:
        cause = b.hangup_cause or "NORMAL_CLEARING"
        if b.hangup_remote:
            a.set_var("sip_hangup_phrase", "OK")
        a.set_var("last_bridge_hangup_cause", cause)
        if b.hangup_remote:
            a.set_var("last_bridge_proto_specific_hangup_cause", "sip:200")
        # B's side of the bridge ends first: its call uuid is its own again.
        b.call_uuid = b.uuid
        b.set_var("bridge_to", None)
    a.set_var("bridge_hangup_cause", cause)
    a.set_var("bridge_to", None)
    call.fire(a, "CHANNEL_UNBRIDGE", pre=bridge_hdrs)
    call.transcript.bridges.append(_outcome(call, b, "SUCCESS", answered=True))
    out = call.transcript.bridges[-1]
    call.transcript.add(
        call.rel(), "A", "bridge", outcome="SUCCESS", b_cause=cause, billsec=out.billsec, billmsec=out.billmsec
    )
    if not a_first:
        # Fact 14: B's teardown comes after A's bridge completion; the
        # completion itself is emitted by apps.execute when we return.
        def b_done() -> None:
            b.set_var("call_uuid", b.uuid)
            apps.finish_b(call, b)
            apps.destroy_b(call, b)

        call.post_complete.append(b_done)
    hab = (a.get_var("hangup_after_bridge") or "").lower() in ("true", "yes", "1", "on")
    pab = (a.get_var("park_after_bridge") or "").lower() in ("true", "yes", "1", "on")
    if hab and a.alive:
        call.post_complete.append(lambda: call.hangup_a("NORMAL_CLEARING", remote=False))
    elif pab and a.alive:
        # The socket app itself returns and the channel parks; the socket
        # keeps working (09b).
        a.state_number = 6  # CS_PARK requested before the bridge completes
        call.post_complete.insert(0, call.park_after_bridge)
    return "_none_"
