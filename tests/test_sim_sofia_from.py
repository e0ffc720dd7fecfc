"""The From header of the B leg's INVITE, as mod_sofia 1.10.12 builds it
(sofia_glue_do_invite, switch_ivr_originate; quoted in cardd/sim/sofia.py):
what the callee's phone shows."""

from __future__ import annotations

import pytest

from cardd.sim import Callee, Caller
from cardd.sim.sofia import SofiaSetup
from tests.test_sim_flows import B, bridge_flow, run


@pytest.mark.parametrize(
    "dial_vars, a_sets, shown",
    [
        # nothing set: the caller's own name and number (sipp's From: "15551230001")
        ("", [], '"15551230001" <sip:15551230001@127.0.0.1>'),
        # only the number: the caller's number stays the display name (the leak seen on the real switch)
        ("origination_caller_id_number=1000000001", [], '"15551230001" <sip:1000000001@127.0.0.1>'),
        (
            "origination_caller_id_number=1000000001,origination_caller_id_name=1000000001",
            [],
            '"1000000001" <sip:1000000001@127.0.0.1>',
        ),
        # an empty or _undef_ name: no display name at all
        (
            "origination_caller_id_number=1000000001,origination_caller_id_name=_undef_",
            [],
            "<sip:1000000001@127.0.0.1>",
        ),
        # the A leg's effective_caller_id_* feed the originate; the dial string wins over them
        (
            "",
            ["effective_caller_id_name=Acme", "effective_caller_id_number=442000000000"],
            '"Acme" <sip:442000000000@127.0.0.1>',
        ),
        ("origination_caller_id_name=Card", ["effective_caller_id_name=Acme"], '"Card" <sip:15551230001@127.0.0.1>'),
        # sip_from_display and sip_invite_domain
        ("sip_from_display=Shop,sip_invite_domain=example.net", [], '"Shop" <sip:15551230001@example.net>'),
    ],
)
def test_the_callee_sees_the_from_sofia_builds(dial_vars, a_sets, shown):
    dial = (
        "{" + ",".join(filter(None, [f"origination_uuid={B}", dial_vars])) + "}"
        "sofia/external/442071234567@198.51.100.7:5060"
    )
    flow = bridge_flow(dial)

    def with_sets(conn, out):
        real_execute = conn.execute
        done = []

        def execute(app, arg="", **kw):
            if app == "bridge" and not done:
                done.append(True)
                for item in a_sets:
                    real_execute("set", item)
            return real_execute(app, arg, **kw)

        conn.execute = execute
        flow(conn, out)

    out = run(with_sets, Caller(cli="15551230001"), Callee(talk=2))
    assert str(out["t"].bridges[0].sip_from) == shown


def test_a_gateway_without_caller_id_in_from_presents_its_register_from():
    dial = f"{{origination_uuid={B},origination_caller_id_number=1000000001}}sofia/gateway/carrier/442071234567"
    setup = SofiaSetup(gateway_from={"carrier": "acct42@sip.carrier.example"})
    out = run(bridge_flow(dial), Caller(cli="15551230001"), Callee(talk=2), sofia_setup=setup)
    seen = out["t"].bridges[0].sip_from
    assert (seen.user, seen.host, seen.display) == ("acct42", "sip.carrier.example", "15551230001")
