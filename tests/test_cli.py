"""The `cardd` command as an operator runs it (a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cardd(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cardd", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_check_config_accepts_the_shipped_cardd_yaml():
    done = run_cardd("-c", str(REPO / "cardd.yaml"), "check-config")
    assert done.returncode == 0, done.stderr
    assert "max_call_duration" in done.stdout


def test_misspelt_key_exits_2_naming_file_and_key(tmp_path):
    bad = tmp_path / "cardd.yaml"
    bad.write_text("calling_card:\n  max_call_duraton: 600\n")
    done = run_cardd("-c", str(bad), "check-config")
    assert done.returncode == 2
    assert str(bad) in done.stderr
    assert "calling_card.max_call_duraton" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_value_exits_2_naming_file_key_and_expectation(tmp_path):
    bad = tmp_path / "cardd.yaml"
    bad.write_text("calling_card:\n  announce_balance: perhaps\n")
    done = run_cardd("-c", str(bad), "check-config")
    assert done.returncode == 2
    assert str(bad) in done.stderr and "calling_card.announce_balance" in done.stderr
    assert "true or false" in done.stderr


def test_check_config_flag_works_like_the_subcommand(tmp_path):
    bad = tmp_path / "cardd.yaml"
    bad.write_text("daemon:\n  listen: nowhere\n")
    done = run_cardd("-c", str(bad), "--check-config")
    assert done.returncode == 2
    assert "daemon.listen" in done.stderr


def test_check_cld_shows_what_each_token_did():
    done = run_cardd("-c", str(REPO / "cardd.yaml"), "check-cld", "cc.en.es.noplaybalance.topupext5")
    assert done.returncode == 0, done.stderr
    assert "noplaybalance" in done.stdout and "topupext5" in done.stdout
