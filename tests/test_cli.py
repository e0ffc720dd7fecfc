"""The `cardd` command as an operator runs it (a real subprocess)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_cardd(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cardd", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


# --- command-line mistakes --------------------------------------------------------------------


def test_a_command_line_mistake_is_one_cardd_line_and_exit_2():
    done = run_cardd("card", "add", "123")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cardd: card add: the following arguments are required")
    assert "usage:" not in done.stderr


def test_an_unknown_command_is_one_cardd_line_and_exit_2():
    done = run_cardd("crad", "list")
    assert done.returncode == 2
    assert done.stderr.startswith("cardd: argument COMMAND: invalid choice: 'crad'")
    assert len(done.stderr.strip().splitlines()) == 1


def test_help_still_shows_the_usage():
    done = run_cardd("card", "add", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: cardd card add")
    assert "-c CONFIG, --config CONFIG" in done.stdout


# --- which config, which database -------------------------------------------------------------


def test_config_may_follow_the_sub_command(tmp_path):
    bad = tmp_path / "cardd.yaml"
    bad.write_text("calling_card:\n  max_call_duraton: 600\n")
    done = run_cardd("check-config", "-c", str(bad))
    assert done.returncode == 2
    assert f"{bad}:2: calling_card.max_call_duraton" in done.stderr


def test_operator_command_lists_with_config_after_a_nested_sub_command(tmp_path, dsn):
    config = tmp_path / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n')
    assert run_cardd("tariff", "add", "std", "--currency", "USD", "-c", str(config)).returncode == 0
    done = run_cardd("tariff", "list", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("std\tUSD\t0 rates")


def test_an_operator_command_in_another_directory_creates_no_database(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_cardd("rate", "list", "--tariff", "xx", cwd=elsewhere)
    assert done.returncode == 2
    pgdata = elsewhere / "var" / "pg"
    # one note saying which config (none) and database it looked at, one refusal
    note, refusal = done.stderr.strip().splitlines()
    assert note.startswith("cardd: using config none found (no -c, ./cardd.yaml or /etc/cardd/cardd.yaml)")
    assert refusal.startswith(f"cardd: no database in {pgdata} (config none found")
    assert "run `cardd db migrate` first, or name the config with -c" in refusal
    assert not (elsewhere / "var").exists()


def test_cardd_yaml_in_the_working_directory_is_used_without_a_note(tmp_path, dsn):
    (tmp_path / "cardd.yaml").write_text(f'daemon:\n  dsn: "{dsn}"\n  log_level: warning\n')
    assert run_cardd("tariff", "add", "std", "--currency", "EUR", cwd=tmp_path).returncode == 0
    done = run_cardd("tariff", "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("std\tEUR")
    assert done.stderr == ""


def test_the_system_config_is_used_and_named_when_there_is_no_other(
    tmp_path, dsn, monkeypatch, capsys, restore_logging
):
    from cardd import cli, config

    system = tmp_path / "etc-cardd.yaml"
    system.write_text(f'daemon:\n  dsn: "{dsn}"\n  log_level: warning\n')
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(system))
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert cli.main(["tariff", "list"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"cardd: using config {system}, database user=")


def test_an_unmigrated_database_is_refused_and_left_alone(tmp_path, pg_server):
    import psycopg

    name = f"cardd_bare_{os.getpid()}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        config = tmp_path / "cardd.yaml"
        config.write_text(f'daemon:\n  dsn: "{pg_server.dsn_for(name)}"\n')
        done = run_cardd("-c", str(config), "card", "list")
        assert done.returncode == 2
        assert done.stderr.startswith("cardd: the database has no cardd schema (config ")
        assert len(done.stderr.strip().splitlines()) == 1
        with psycopg.connect(pg_server.dsn_for(name)) as conn:
            assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None
    finally:
        pg_server.drop_database(name)


def test_an_unreachable_database_is_one_line_naming_the_config(tmp_path):
    config = tmp_path / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "host={tmp_path} dbname=nothing user=nobody"\n')
    done = run_cardd("card", "list", "-c", str(config))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("cardd: cannot connect to the database: ")
    assert line.endswith(f"(config {config}, database host={tmp_path} dbname=nothing user=nobody)")
