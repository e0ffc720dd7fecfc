"""Issue 12 section 7: PIN hashes keyed by a secret outside the database.

HMAC-SHA256 under the key file (cardd/billing/pins.py): a leaked database alone
checks no PIN; the key file is created at the first start with mode 0600;
operator commands never invent a key; scrypt hashes and imported plain PINs
keep working and are rehashed to HMAC on their next right PIN.

Demo card (tests/dbfixtures.py): 1234567890, PIN 4321, 10.00 USD."""

from __future__ import annotations

import os
import stat

import pytest

from cardd import cli
from cardd.billing import pins
from cardd.sim import Caller
from tests.moneycheck import assert_money_holds, snapshot_balances


def stored_pin(database, card_id: int) -> str:
    with database.pool.connection() as conn:
        return conn.execute("SELECT pin_hash FROM accounts WHERE id = %s", (card_id,)).fetchone()[0]


def config(tmp_path, dsn: str, **daemon) -> str:
    path = tmp_path / "cardd.yaml"
    lines = ["daemon:", f'  dsn: "{dsn}"', f"  data_dir: {tmp_path / 'var'}"]
    lines += [f"  {key}: {value}" for key, value in daemon.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_leaked_database_alone_checks_no_pin(database, demo_data):
    stored = stored_pin(database, demo_data.card_id)
    assert stored.startswith("hmac-sha256$") and demo_data.pin not in stored
    assert pins.check_pin(demo_data.pin, stored)
    # Whoever has the row but not the key: every one of the 10,000 PINs fails
    # under any other key (here: a fresh one), the right PIN included.
    leaked_row_only = pins.PinKey(os.urandom(pins.KEY_BYTES), "attacker's guess")
    _, salt, mac = stored.split("$")
    found = [
        pin
        for pin in (f"{i:04d}" for i in range(10_000))
        if leaked_row_only.mac(pins._unb64(salt), pin) == pins._unb64(mac)
    ]
    assert found == []


def test_two_cards_with_the_same_pin_do_not_share_a_hash():
    assert pins.hash_pin("1234") != pins.hash_pin("1234")


def test_db_migrate_creates_the_key_file_once_with_mode_0600(tmp_path, dsn):
    yaml_path = config(tmp_path, dsn)
    assert cli.main(["-c", yaml_path, "db", "migrate"]) == 0
    key_file = tmp_path / "var" / "pin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = key_file.read_text()
    assert cli.main(["-c", yaml_path, "db", "migrate"]) == 0
    assert key_file.read_text() == first  # never replaced once it exists
    assert len(bytes.fromhex(first.strip())) == pins.KEY_BYTES


def test_serve_creates_the_key_at_first_start_where_pin_key_file_says(tmp_path, database):
    from cardd.daemon import Daemon
    from cardd.metrics import Metrics
    from tests.callfixtures import make_settings

    key_file = tmp_path / "keys" / "cardd-pin.key"
    daemon = Daemon(
        make_settings(pin_key_file=str(key_file)), database=database, metrics=Metrics(), serve_metrics=False
    )
    daemon.start()
    try:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert pins.installed_key().path == str(key_file)
    finally:
        daemon.stop()


def test_operator_commands_refuse_to_hash_pins_without_the_key_file(tmp_path, dsn, capsys):
    yaml_path = config(tmp_path, dsn)
    assert not (tmp_path / "var" / "pin.key").exists()
    assert cli.main(["-c", yaml_path, "tariff", "add", "std", "--currency", "USD"]) == 0
    capsys.readouterr()
    assert (
        cli.main(["-c", yaml_path, "card", "add", "5550001", "--pin", "1234", "--currency", "USD", "--tariff", "std"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cardd: PIN key file ") and "is missing" in err[0]
    assert not (tmp_path / "var" / "pin.key").exists()  # an operator command never invents a key
    assert cli.main(["-c", yaml_path, "card", "show", "5550001"]) == 2  # and nothing was created


def test_a_key_file_others_can_read_is_refused_with_one_line(tmp_path, dsn, capsys):
    key_file = tmp_path / "pin.key"
    key_file.write_text(os.urandom(pins.KEY_BYTES).hex() + "\n")
    key_file.chmod(0o644)
    assert cli.main(["-c", config(tmp_path, dsn, pin_key_file=str(key_file)), "db", "migrate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cardd: PIN key file {key_file} is readable by others (mode 644): chmod 600 {key_file}"


@pytest.mark.parametrize("legacy", ["scrypt", "plain"])
def test_a_legacy_pin_still_opens_the_card_and_is_rehashed_to_hmac(cardd, database, demo_data, legacy):
    old = pins.scrypt_hash(demo_data.pin) if legacy == "scrypt" else pins.PLAIN_PREFIX + demo_data.pin
    with database.pool.connection() as conn:
        conn.execute("UPDATE accounts SET pin_hash = %s WHERE id = %s", (old, demo_data.card_id))
    before = snapshot_balances(database.pool)
    # a wrong PIN is refused and leaves the legacy form alone
    t = cardd.call(Caller(digits=[demo_data.card_number + "#", "4322#"], type_after=6))
    assert "invalid_card_or_pin" in cardd.heard(t) and stored_pin(database, demo_data.card_id) == old
    t = cardd.call(Caller(digits=[demo_data.card_number + "#", demo_data.pin + "#"], type_after=6))
    assert "you_have" in cardd.heard(t)
    new = stored_pin(database, demo_data.card_id)
    assert new.startswith("hmac-sha256$") and pins.check_pin(demo_data.pin, new)
    with database.pool.connection() as conn:
        left = conn.execute("SELECT count(*) FROM accounts_with_legacy_pins").fetchone()[0]
    assert left == 0
    # the rehashed PIN opens the card on the next call
    t = cardd.call(Caller(digits=[demo_data.card_number + "#", demo_data.pin + "#"], type_after=6))
    assert "you_have" in cardd.heard(t)
    assert_money_holds(database.pool, before)


def test_a_host_without_the_shared_key_refuses_to_start_instead_of_making_a_new_one(
    tmp_path, dsn, database, demo_data, capsys
):
    """The database holds PINs hashed under a key; a host whose key file was not
    copied must not create a key of its own (every PIN would fail there)."""
    from cardd.daemon import Daemon
    from cardd.metrics import Metrics
    from tests.callfixtures import make_settings

    yaml_path = config(tmp_path, dsn)
    assert cli.main(["-c", yaml_path, "db", "migrate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cardd: PIN key file {tmp_path / 'var' / 'pin.key'} was missing, but 1 cards' PINs")
    assert not (tmp_path / "var" / "pin.key").exists()
    daemon = Daemon(
        make_settings(pin_key_file=str(tmp_path / "other.key")),
        database=database,
        metrics=Metrics(),
        serve_metrics=False,
    )
    with pytest.raises(pins.PinKeyError, match="copy pin.key"):
        daemon.start()
    assert not (tmp_path / "other.key").exists()
