"""Several DIDs behave per their tokens, and the custom scripts act on live calls — end to end through cardd
(in-process) and the simulated switch.

Every access number of freeswitch-conf/dialplan/public/00_cardd_access_numbers.xml is called with the CLD string
the dialplan rewrites it to, under the repo's cardd.yaml. Demo card 1234567890, PIN 4321, 10.00000 USD; 44 is
rated 0.06/min (tests/dbfixtures.py).
"""

from __future__ import annotations

import json
import os
import re
import stat
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cardd import speech
from cardd.config import load_settings
from cardd.hooks import DEFAULT_CHECK_INTERVAL
from cardd.sim import Callee, Caller

REPO = Path(__file__).resolve().parent.parent
ACCESS_NUMBERS = REPO / "freeswitch-conf" / "dialplan" / "public" / "00_cardd_access_numbers.xml"
UK_MOBILE = "447700900123"


def access_numbers() -> dict[str, tuple[str, str]]:
    """DID -> (the condition's expression, the CLD string it is transferred with)."""
    found = {}
    for ext in ET.parse(ACCESS_NUMBERS).getroot().iter("extension"):
        cond = ext.find("condition")
        assert cond.get("field") == "destination_number", ext.get("name")
        (transfer,) = [a.get("data") for a in cond.findall("action") if a.get("application") == "transfer"]
        cld, dialplan, context = transfer.split()
        assert (dialplan, context) == ("XML", "cardd"), transfer
        did = re.search(r"\((\d+)\)", cond.get("expression")).group(1)
        found[did] = (cond.get("expression"), cld)
    return found


# What each example line does (freeswitch-conf/README.md): menu languages, the language after choosing 1,
# and whether the balance and the duration are said and a second destination is asked for.
LINES = {
    "8005550100": dict(menu=[], lang="en", balance=True, duration=True, redial=True),
    "8005550101": dict(menu=["es", "en"], lang="es", balance=False, duration=True, redial=True),
    "8005550102": dict(menu=["es", "en"], lang="es", balance=True, duration=True, redial=True),
    "8005550103": dict(menu=[], lang="fr", balance=True, duration=False, redial=False),
    "8005550104": dict(menu=["en", "fr", "es"], lang="en", balance=True, duration=True, redial=True),
}
TOPUP_LINE = "8005550105"


def spoken(running, transcript) -> list[tuple[str, str]]:
    out = []
    for path in transcript.prompts:
        found = running.prompts.id_for_path(path)
        out.append(found if found else ("", path))
    return out


def test_every_access_number_is_anchored_and_its_cld_is_clean():
    settings = load_settings(str(REPO / "cardd.yaml"))
    dids = access_numbers()
    assert set(dids) == set(LINES) | {TOPUP_LINE}
    for did, (expression, cld) in dids.items():
        for dialled in (did, "1" + did, "+1" + did):
            assert re.fullmatch(expression, dialled), (did, dialled)
        assert not re.fullmatch(expression, did + "9")
        options = settings.call_options(cld)
        assert options.unknown_tokens == [] and options.warnings == [], cld
    assert settings.call_options(dids[TOPUP_LINE][1]).options.topup_only


@pytest.mark.parametrize("did", sorted(LINES))
def test_each_access_number_behaves_per_its_tokens(cardd_with, database, demo_data, tmp_path, did):
    _, cld = access_numbers()[did]
    line = LINES[did]
    running = cardd_with(database, (REPO / "cardd.yaml").read_text(), tmp_path=tmp_path)
    digits = (["1"] if line["menu"] else []) + [demo_data.card_number + "#", demo_data.pin + "#", UK_MOBILE + "#"]
    t = running.call(Caller(destination=cld, rdnis=did, digits=digits, type_after=6), Callee(talk=5))
    heard = spoken(running, t)
    menu = [lang for lang, pid in heard if pid.startswith("for_")]
    assert menu == line["menu"]
    after = heard[3 * len(menu) :]
    assert after[0] == (line["lang"], "welcome")
    assert {lang for lang, _ in after} == {line["lang"]}
    ids = [pid for _, pid in after]
    assert ("you_have" in ids) == line["balance"]
    assert ("you_can_talk_for" in ids) == line["duration"]
    assert len(t.bridges) == 1 and t.bridges[0].answered
    # After the call another destination is asked for (here until the silences run out), unless the line
    # allows one call per session.
    if line["redial"]:
        assert ids.count("enter_destination") > 1
    else:
        assert ids.count("enter_destination") == 1 and ids[-1] == "goodbye"


# --- custom scripts on live calls ------------------------------------------------------------------------------

CHECK = """\
    import json
    def check_destination(cli, translated_cli, cld, translated_cld, username, original_cli):
        with open({log!r}, "a") as f:
            f.write(json.dumps([cli, translated_cli, cld, translated_cld, username, original_cli]) + "\\n")
        return {verdict}
"""


def write_check(path: Path, log: Path, verdict: str) -> None:
    old = path.stat() if path.exists() else None
    path.write_text(textwrap.dedent(CHECK.format(log=str(log), verdict=verdict)))
    if old is not None:
        # A later mtime, so the change is seen whatever the file system's timestamp granularity.
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 2_000_000_000))


def card_call(demo, destination="cc.noredial"):
    return Caller(
        destination=destination, digits=[demo.card_number + "#", demo.pin + "#", UK_MOBILE + "#"], type_after=6
    )


def test_destination_check_edited_while_cardd_runs_takes_effect_on_the_next_call(
    cardd_with, database, demo_data, tmp_path
):
    script, log = tmp_path / "check.py", tmp_path / "seen.jsonl"
    write_check(script, log, 'not translated_cld.startswith("44")')
    running = cardd_with(database, f"calling_card:\n  destination_check_script: {script}\n", tmp_path=tmp_path)

    refused = running.call(card_call(demo_data), Callee(talk=5))
    assert "destination_forbidden" in running.heard(refused) and refused.bridges == []
    assert json.loads(log.read_text().splitlines()[0]) == [
        "15555550100",
        "15555550100",
        UK_MOBILE,
        UK_MOBILE,
        demo_data.card_number,
        "15555550100",
    ]

    write_check(script, log, "True")
    # The file is looked at most once per check interval (hooks.py); no restart, no signal.
    time.sleep(DEFAULT_CHECK_INTERVAL + 0.2)
    allowed = running.call(card_call(demo_data), Callee(talk=5))
    assert "destination_forbidden" not in running.heard(allowed) and len(allowed.bridges) == 1

    write_check(script, log, "False")
    time.sleep(DEFAULT_CHECK_INTERVAL + 0.2)
    again = running.call(card_call(demo_data), Callee(talk=5))
    assert again.bridges == []
    assert len(log.read_text().splitlines()) == 3


def test_a_destination_check_that_fails_to_load_is_off_and_counted(cardd_with, database, demo_data, tmp_path):
    script = tmp_path / "check.py"
    script.write_text("def check_destination(:\n")
    running = cardd_with(database, f"calling_card:\n  destination_check_script: {script}\n", tmp_path=tmp_path)
    t = running.call(card_call(demo_data), Callee(talk=5))
    # As in the reference product: the calls go on without it; operators alert on the metric.
    assert len(t.bridges) == 1
    assert running.metric("cardd_script_load_errors_total", reason="syntax") == 1


def test_a_destination_check_that_raises_refuses_the_call(cardd_with, database, demo_data, tmp_path):
    script = tmp_path / "check.py"
    script.write_text("def check_destination(*args):\n    raise RuntimeError('lookup failed')\n")
    running = cardd_with(database, f"calling_card:\n  destination_check_script: {script}\n", tmp_path=tmp_path)
    t = running.call(card_call(demo_data), Callee(talk=5))
    assert t.bridges == [] and "destination_forbidden" in running.heard(t)
    assert running.metric("cardd_destination_check_errors_total", reason="exception") == 1


def executable(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_duration_script_changes_only_the_announcement(cardd_with, database, demo_data, tmp_path):
    args_file = tmp_path / "args"
    script = executable(tmp_path / "say.sh", f'#!/bin/sh\necho "$@" > {args_file}\necho 120\n')
    running = cardd_with(database, f"calling_card:\n  duration_script: {script}\n", tmp_path=tmp_path)
    t = running.call(card_call(demo_data), Callee(talk=5))
    ids = running.heard(t)
    said = speech.talk_time_ids(120, "en")
    start = ids.index("you_can_talk_for")
    assert ids[start : start + len(said)] == said
    # The real limit is still the computed one: 10.00 at this rate, capped at max_call_duration.
    (dial,) = [arg for app, arg in t.apps if app == "bridge"]
    assert "sched_hangup +3600 ALLOTTED_TIMEOUT" in dial
    username, balance, cli, cld, max_s = args_file.read_text().split()[:5]
    assert (username, cli, cld, max_s) == (demo_data.card_number, "15555550100", UK_MOBILE, "3600")
    assert balance.startswith("10.0")


def test_a_failing_duration_script_falls_back_to_the_computed_duration(cardd_with, database, demo_data, tmp_path):
    script = executable(tmp_path / "say.sh", "#!/bin/sh\necho 'not a number'\n")
    running = cardd_with(database, f"calling_card:\n  duration_script: {script}\n", tmp_path=tmp_path)
    t = running.call(card_call(demo_data), Callee(talk=5))
    ids = running.heard(t)
    said = speech.talk_time_ids(3600, "en")
    start = ids.index("you_can_talk_for")
    assert ids[start : start + len(said)] == said
    assert running.metric("cardd_duration_script_errors_total", reason="bad_output") == 1
