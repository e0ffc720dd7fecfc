"""freeswitch-conf/autoload_configs/json_cdr.conf.xml: the values mod_json_cdr really reads, in the units it
really uses (mod_json_cdr.c, FreeSWITCH 1.10), bound how long a failed post holds anything."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "freeswitch-conf/autoload_configs/json_cdr.conf.xml"

# Every setting mod_json_cdr_load() parses; anything else is silently ignored by the module.
MOD_JSON_CDR_SETTINGS = {
    "cred",
    "url",
    "log-http-and-disk",
    "log-errors-to-disk",
    "timeout",
    "delay",
    "log-b-leg",
    "prefix-a-leg",
    "disable-100-continue",
    "encode",
    "retries",
    "rotate",
    "log-dir",
    "err-log-dir",
    "enable-cacert-check",
    "ssl-cert-path",
    "ssl-key-path",
    "ssl-key-password",
    "ssl-version",
    "ssl-cacert-file",
    "enable-ssl-verifyhost",
    "auth-scheme",
    "encode-values",
    "queue-capacity",
}


def settings() -> dict[str, str]:
    root = ET.parse(CONF).getroot()
    return {p.get("name"): p.get("value") for p in root.iter("param")}


def test_every_json_cdr_setting_is_one_mod_json_cdr_reads():
    assert set(settings()) <= MOD_JSON_CDR_SETTINGS, set(settings()) - MOD_JSON_CDR_SETTINGS


def test_a_failed_post_is_retried_for_tens_of_seconds_not_hours():
    s = settings()
    retries, delay, timeout = int(s["retries"]), int(s["delay"]), int(s["timeout"])
    # delay is seconds (switch_yield(delay * 1000000)); the module adds the first try to `retries`.
    assert 1 <= delay <= 30, "delay is in seconds, not milliseconds"
    assert 15 <= retries * delay <= 60, "long enough for a cardd restart, short enough to bound the hold"
    assert timeout > 0, "timeout 0 lets a cardd that never answers hold the poster for ever"
    worst = (retries + 1) * timeout + retries * delay
    assert worst <= 90, f"one CDR may hold the poster {worst} s"


def test_posting_runs_on_a_background_queue_not_the_hanging_up_channel():
    s = settings()
    assert int(s["queue-capacity"]) > 0
    # What the queue cannot take, or the retries cannot deliver, is kept on disk for a re-POST.
    assert s["log-errors-to-disk"] == "true" and s["err-log-dir"]


def test_cdrs_go_to_cardds_endpoint_in_a_form_cardd_parses():
    s = settings()
    assert s["url"] == "http://127.0.0.1:8085/cdr"
    assert s["log-b-leg"] == "true"
    assert s["encode"] == "false" and s["encode-values"] == "false"


def test_readme_freeswitch_setup_names_mod_json_cdr_and_its_file():
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## FreeSWITCH setup", 1)[1].split("\n## ", 1)[0]
    assert "mod_json_cdr" in setup and "json_cdr.conf.xml" in setup
    assert "while cardd is down" in setup.lower()
