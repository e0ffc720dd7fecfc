"""A fresh inbound mod_sofia channel, as it reaches the `socket` app.

The variables and their order are those FreeSWITCH 1.10.12 gave the captured
calls (connect replies of tests/fixtures/esl-captures), with the values
derived from the caller and the SIP profile instead of copied: a simulated
call's connect reply looks like a real one, and the replay tests check it
(test_sim_replay: fresh channels).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from urllib.parse import quote

from cardd.sim.channel import Identity, Leg, Profile


@dataclass(frozen=True)
class SofiaSetup:
    """The SIP side of the simulated switch and where callers come from."""

    profile: str = "external"
    ip: str = "127.0.0.1"
    port: int = 5080
    caller_ip: str = "127.0.0.1"
    caller_port: int = 5090
    caller_media_port: int = 6100
    context: str = "public"
    socket_data: str = "127.0.0.1:8084 async full"
    # Gateways that present their register_from ("user@host") rather than
    # the caller ID (no caller-id-in-from); others present the caller ID.
    gateway_from: dict[str, str] = field(default_factory=dict)


def inbound_leg(
    identity: Identity,
    setup: SofiaSetup,
    *,
    uuid: str,
    cli: str,
    destination: str,
    now_us: int,
    session_id: int,
    rnd: random.Random,
    cid_name: str | None = None,
    rdnis: str | None = None,
    context: str | None = None,
    dialplan_vars: dict[str, str] | None = None,
) -> Leg:
    """The A leg after the dialplan ran `socket` (CS_EXECUTE, ringing)."""
    s = setup
    caller_at = f"{s.caller_ip}:{s.caller_port}"
    name = f"sofia/{s.profile}/{cli}@{caller_at}"
    # The SIP request went to the DID when the dialplan transferred the call
    # to its CLD string (switch_ivr_session_transfer: the DID becomes rdnis).
    req_user = rdnis or destination
    prof = Profile(
        direction="inbound",
        username=cli,
        cid_name=cid_name or cli,
        cid_number=cli,
        destination=destination,
        uuid=uuid,
        context=context or s.context,
        channel_name=name,
        rdnis=rdnis,
        network_addr=s.caller_ip,
    )
    prof.times["Profile-Created-Time"] = now_us
    prof.times["Channel-Created-Time"] = now_us
    transfer = None
    if rdnis:
        ctx = context or "cardd"
        prof.context = ctx
        transfer = f"{now_us // 1_000_000}:{uuid}:bl_xfer:{destination}/{ctx}/XML"
        prof.transfer_source = transfer
        prof.index = "2"
        # UNVERIFIED (no capture of a transferred call): the clone's transfer time.
        prof.times["Channel-Transfer-Time"] = now_us
    leg = Leg(identity, prof, name=name, direction="inbound")
    leg.created_us = now_us
    leg.set_state("CS_EXECUTE")
    leg.call_state = "RINGING"
    leg.has_codec = True
    seq = rnd.randrange(1000, 30000)
    call_id = f"{session_id}-{seq}@{s.caller_ip}"
    tag = f"{seq}SIPpTag00{session_id % 10}"
    sess = rnd.randrange(10_000_000, 99_999_999)
    r_sdp = (
        f"v=0\r\no=user1 {sess} {sess * 43 % 4_000_000_000} IN IP4 {s.caller_ip}\r\n"
        f"s=-\r\nc=IN IP4 {s.caller_ip}\r\nt=0 0\r\n"
        f"m=audio {s.caller_media_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    )
    local = f"{s.ip}:{s.port}"
    for k, v in (
        ("direction", "inbound"),
        ("uuid", uuid),
        ("session_id", str(session_id)),
        ("sip_from_user", cli),
        ("sip_from_port", str(s.caller_port)),
        ("sip_from_uri", f"{cli}@{caller_at}"),
        ("sip_from_host", s.caller_ip),
        ("video_media_flow", "disabled"),
        ("text_media_flow", "disabled"),
        ("channel_name", name),
        ("sip_call_id", call_id),
        ("sip_local_network_addr", s.ip),
        ("sip_network_ip", s.caller_ip),
        ("sip_network_port", str(s.caller_port)),
        ("sip_invite_stamp", str(now_us)),
        ("sip_received_ip", s.caller_ip),
        ("sip_received_port", str(s.caller_port)),
        ("sip_via_protocol", "udp"),
        ("sip_from_user_stripped", cli),
        ("sip_from_tag", tag),
        ("sofia_profile_name", s.profile),
        ("sofia_profile_url", f"sip:mod_sofia@{local}"),
        ("recovery_profile_name", s.profile),
        ("sip_full_via", f"SIP/2.0/UDP {caller_at};branch=z9hG4bK-{seq}-1-0"),
        ("sip_full_from", f"<sip:{cli}@{caller_at}>;tag={tag}"),
        ("sip_full_to", f"<sip:{req_user}@{local}>"),
        ("sip_req_user", req_user),
        ("sip_req_port", str(s.port)),
        ("sip_req_uri", f"{req_user}@{local}"),
        ("sip_req_host", s.ip),
        ("sip_to_user", req_user),
        ("sip_to_port", str(s.port)),
        ("sip_to_uri", f"{req_user}@{local}"),
        ("sip_to_host", s.ip),
        ("sip_contact_user", cli),
        ("sip_contact_port", str(s.caller_port)),
        ("sip_contact_uri", f"{cli}@{caller_at}"),
        ("sip_contact_host", s.caller_ip),
        ("sip_via_host", s.caller_ip),
        ("sip_via_port", str(s.caller_port)),
        ("max_forwards", "70"),
        ("switch_r_sdp", r_sdp),
        ("ep_codec_string", "CORE_PCM_MODULE.PCMU@8000h@20i@64000b"),
        ("rtp_use_codec_string", "PCMU,PCMA"),
        ("remote_video_media_flow", "inactive"),
        ("remote_text_media_flow", "inactive"),
        ("remote_audio_media_flow", "sendrecv"),
        ("audio_media_flow", "sendrecv"),
        ("remote_media_ip", s.caller_ip),
        ("remote_media_port", str(s.caller_media_port)),
        ("rtp_audio_recv_pt", "0"),
        ("rtp_use_codec_name", "PCMU"),
        ("rtp_use_codec_rate", "8000"),
        ("rtp_use_codec_ptime", "20"),
        ("rtp_use_codec_channels", "1"),
        ("rtp_last_audio_codec_string", "PCMU@8000h@20i@1c"),
        ("read_codec", "PCMU"),
        ("original_read_codec", "PCMU"),
        ("read_rate", "8000"),
        ("original_read_rate", "8000"),
        ("write_codec", "PCMU"),
        ("write_rate", "8000"),
        ("dtmf_type", "rfc2833"),
        ("endpoint_disposition", "RECEIVED"),
        *(dialplan_vars or {}).items(),
        ("DP_MATCH", f"ARRAY::{req_user}|:{req_user}"),
        *((("transfer_history", transfer), ("transfer_source", transfer)) if transfer else ()),
        ("call_uuid", uuid),
        ("current_application_data", s.socket_data),
        ("current_application", "socket"),
        ("socket_host", s.socket_data.split(":", 1)[0]),
    ):
        leg.vars[k] = v
    return leg


@dataclass(frozen=True)
class SipFrom:
    """The From header of an outgoing INVITE: what the callee's phone shows."""

    display: str | None  # None: no display name (`<sip:...>` alone)
    user: str  # the number presented ("" when none)
    host: str

    def __str__(self) -> str:
        uri = f"<sip:{quote(self.user, safe='+')}@{self.host}>" if self.user else f"<sip:{self.host}>"
        return f'"{self.display}" {uri}' if self.display is not None else uri


def caller_id(
    a_vars: dict[str, str], global_vars: dict[str, str], leg_vars: dict[str, str], a_name: str, a_number: str
) -> tuple[str, str]:
    """(caller_id_name, caller_id_number) of a B leg, as switch_ivr_originate
    (1.10.12) builds its caller profile: a copy of the A leg's profile
        oglobals.caller_profile_override = switch_caller_profile_dup(oglobals.pool, cp);
    the A leg's effective_caller_id_name/number become the originate's
    origination_caller_id_name/number, which the {} variables override,
    and a [] leg variable overrides both:
        if ((current_variable = switch_event_get_header(originate_var_event,
             "origination_caller_id_name"))) new_profile->caller_id_name = ...
    """
    effective = {
        "origination_caller_id_name": a_vars.get("effective_caller_id_name"),
        "origination_caller_id_number": a_vars.get("effective_caller_id_number"),
    }
    name, number = a_name, a_number
    for source in (effective, global_vars, leg_vars):
        source_name = source.get("origination_caller_id_name")
        if source_name is not None:
            name = source_name
        source_number = source.get("origination_caller_id_number")
        if source_number is not None:
            number = source_number
    return name, number


def outgoing_from(setup: SofiaSetup, endpoint: str, cid_name: str, cid_number: str, b_vars: dict[str, str]) -> SipFrom:
    """The From of the INVITE mod_sofia sends for `endpoint`, built as
    sofia_glue_do_invite (sofia_glue.c, 1.10.12) does:
        format = "\\"%s\\" <sip:%s%s%s>";
        tech_pvt->from_str = switch_core_session_sprintf(..., format, cid_name,
                              use_cid_num, !zstr(cid_num) ? "@" : "", sipip);
        ...
        if (!from_display && (!strcasecmp(caller_id_name, "_undef_") || zstr(caller_id_name)))
            from_str = switch_core_session_sprintf(session, "<%s>", use_from_str);
        else  from_str = "\\"%s\\" <%s>" with from_display ? from_display : caller_id_name
    sipip is the profile's sip-ip (`invite_domain` = sip_invite_domain
    overrides it); sip_from_uri replaces the URI. A gateway without
    caller-id-in-from presents its register_from instead (mod_sofia.c:
    `if (!sofia_test_flag(gateway_ptr, REG_FLAG_CALLERID)) tech_pvt->gateway_from_str
    = ...register_from`), "<sip:from-user@from-domain-or-proxy>"; the
    simulator models the gateways in `SofiaSetup.gateway_from`."""
    host = b_vars.get("sip_invite_domain") or setup.ip
    user = cid_number
    parts = endpoint.split("/")
    if len(parts) >= 3 and parts[1] == "gateway":
        register_from = setup.gateway_from.get(parts[2])
        if register_from:
            user, _, host = register_from.partition("@")
    from_uri = b_vars.get("sip_from_uri")
    if from_uri:
        uri = from_uri[4:] if from_uri.lower().startswith("sip:") else from_uri
        user, _, host = uri.partition("@") if "@" in uri else ("", "", uri)
    display = b_vars.get("sip_from_display")
    if display is None and cid_name and cid_name != "_undef_":
        display = cid_name
    return SipFrom(display, user, host)
