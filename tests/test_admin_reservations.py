"""`cardd reservations settle|release` through the real entry point (cardd.cli.main) on real
PostgreSQL: a reservation the orphan rule could not settle is closed by hand, once, with a
ledger row, a CDR and an audit line of who did it."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from cardd import cli
from cardd.billing.ledger import Ledger
from cardd.db import Database
from tests.dbfixtures import create_demo_data


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cardd(dsn, tmp_path, restore_logging):
    config = tmp_path / "cardd.yaml"
    config.write_text(f'daemon:\n  dsn: "{dsn}"\n')

    def run(*argv: str) -> int:
        return cli.main(["-c", str(config), *argv])

    return run


@pytest.fixture
def stuck(dsn):
    """The demo card (10.00000 USD) with one open reservation to 4412345 (the 44 rate: 31 s cost 0.13600),
    past its expiry: the orphan rule's case when FreeSWITCH cannot be asked."""
    with Database(dsn) as db:
        demo = create_demo_data(db.pool)
        grant = Ledger(db.pool).grant(
            demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", max_call_duration=600
        )
        with db.pool.connection() as conn:
            conn.execute(
                "UPDATE reservations SET expires_at = now() - interval '1 minute' WHERE b_uuid = %s", (grant.b_uuid,)
            )
    return demo, grant


def state(dsn: str, b_uuid: uuid.UUID) -> dict:
    with psycopg.connect(dsn) as conn:
        res = conn.execute("SELECT status FROM reservations WHERE b_uuid = %s", (b_uuid,)).fetchone()
        cdr = conn.execute(
            "SELECT billed_seconds, cost, hangup_cause, estimated FROM cdrs WHERE b_uuid = %s", (b_uuid,)
        ).fetchall()
        rows = conn.execute(
            "SELECT kind, amount, reference FROM ledger WHERE b_uuid = %s ORDER BY id", (b_uuid,)
        ).fetchall()
        audit = conn.execute(
            "SELECT who, action, args, detail FROM operator_audit WHERE b_uuid = %s ORDER BY id", (b_uuid,)
        ).fetchall()
        balance, ledger_sum = conn.execute(
            "SELECT a.balance, (SELECT sum(amount) FROM ledger l WHERE l.account_id = a.id)"
            "  FROM accounts a JOIN reservations r ON r.account_id = a.id WHERE r.b_uuid = %s",
            (b_uuid,),
        ).fetchone()
    return {"status": res[0], "cdrs": cdr, "ledger": rows, "audit": audit, "balance": balance, "ledger_sum": ledger_sum}


def test_settle_bills_the_seconds_at_the_reserved_rate_once_with_cdr_ledger_row_and_audit(cardd, dsn, stuck, capsys):
    demo, grant = stuck
    capsys.readouterr()
    assert (
        cardd(
            "reservations",
            "settle",
            str(grant.b_uuid),
            "--billed-seconds",
            "31",
            "--by",
            "alice",
            "--reason",
            "FreeSWITCH box lost",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"reservation {grant.b_uuid} of card {demo.card_number} settled: 31 s to 4412345, 0.13600 USD" in out
    assert "balance 9.86400 USD" in out
    after = state(dsn, grant.b_uuid)
    assert after["status"] == "settled"
    assert after["cdrs"] == [(31, Decimal("0.13600"), "OPERATOR_SETTLED", False)]
    assert after["ledger"] == [("call", Decimal("-0.13600"), "4412345")]
    assert after["balance"] == after["ledger_sum"] == Decimal("9.86400")
    [(who, action, args, detail)] = after["audit"]
    assert (who, action) == ("alice", "reservations settle")
    assert args == {"b_uuid": str(grant.b_uuid), "billed_seconds": 31, "reason": "FreeSWITCH box lost", "force": False}
    assert "0.13600" in detail

    # again: refused clearly, nothing charged, no second audit line of a charge
    assert cardd("reservations", "settle", str(grant.b_uuid), "--billed-seconds", "31", "--by", "alice") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cardd: reservation {grant.b_uuid} was already settled at ")
    assert "31 s, 0.13600 USD, OPERATOR_SETTLED; nothing charged" in err
    assert cardd("reservations", "release", str(grant.b_uuid)) == 2
    again = state(dsn, grant.b_uuid)
    assert again["ledger"] == after["ledger"] and again["balance"] == Decimal("9.86400")
    assert len(again["audit"]) == 1 and len(again["cdrs"]) == 1


def test_a_cdr_arriving_after_the_operator_settled_charges_nothing_more(cardd, dsn, stuck):
    demo, grant = stuck
    assert cardd("reservations", "settle", str(grant.b_uuid), "--billed-seconds", "31") == 0
    with Database(dsn) as db:
        Ledger(db.pool).settle(grant.b_uuid, billmsec=120_000, hangup_cause="NORMAL_CLEARING")
    after = state(dsn, grant.b_uuid)
    assert after["ledger"] == [("call", Decimal("-0.13600"), "4412345")]
    assert after["balance"] == Decimal("9.86400")


def test_release_frees_the_credit_with_a_zero_ledger_row_a_zero_cdr_and_who_did_it(cardd, dsn, stuck, capsys):
    demo, grant = stuck
    with Database(dsn) as db:
        assert Ledger(db.pool).available_credit(demo.card_id) == Decimal("10") - grant.reserved
    capsys.readouterr()
    assert cardd("reservations", "release", str(grant.b_uuid), "--by", "bob", "--reason", "test call") == 0
    assert "released: 4412345, nothing charged; balance 10.00000 USD" in capsys.readouterr().out
    after = state(dsn, grant.b_uuid)
    assert after["status"] == "settled"
    assert after["cdrs"] == [(0, Decimal("0"), "OPERATOR_RELEASED", False)]
    [(kind, amount, reference)] = after["ledger"]
    assert (kind, amount) == ("release", Decimal("0"))
    assert "released" in reference and "by bob" in reference and "test call" in reference
    assert after["balance"] == after["ledger_sum"] == Decimal("10.00000")
    assert [(w, a) for w, a, _, _ in after["audit"]] == [("bob", "reservations release")]
    with Database(dsn) as db:
        assert Ledger(db.pool).available_credit(demo.card_id) == Decimal("10")
    # the card's history shows it
    assert cardd("card", "history", demo.card_number) == 0
    history = capsys.readouterr().out
    assert (
        f"release\t0.00000\t10.00000\treservation released: nothing charged (test call) by bob"
        f"\t{grant.b_uuid}" in history
    )
    assert cardd("reservations", "release", str(grant.b_uuid)) == 2
    assert "already settled" in capsys.readouterr().err


def test_settle_refuses_more_seconds_than_granted_unknown_and_malformed_uuids(cardd, dsn, stuck, capsys):
    demo, grant = stuck
    capsys.readouterr()
    assert cardd("reservations", "settle", str(grant.b_uuid), "--billed-seconds", str(grant.duration_s + 1)) == 2
    assert f"granted {grant.duration_s} s; cannot bill {grant.duration_s + 1} s" in capsys.readouterr().err
    stranger = uuid.uuid4()
    assert cardd("reservations", "settle", str(stranger), "--billed-seconds", "1") == 2
    assert capsys.readouterr().err == f"cardd: no reservation {stranger}\n"
    with pytest.raises(SystemExit) as bad:
        cardd("reservations", "settle", "not-a-uuid", "--billed-seconds", "1")
    assert bad.value.code == 2
    with pytest.raises(SystemExit):
        cardd("reservations", "settle", str(grant.b_uuid), "--billed-seconds", "-5")
    assert state(dsn, grant.b_uuid)["status"] == "open"
    assert state(dsn, grant.b_uuid)["audit"] == []


def test_settle_without_by_names_the_os_user(cardd, dsn, stuck, monkeypatch):
    demo, grant = stuck
    monkeypatch.setenv("LOGNAME", "carol")
    monkeypatch.setenv("USER", "carol")
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert cardd("reservations", "settle", str(grant.b_uuid), "--billed-seconds", "0") == 0
    after = state(dsn, grant.b_uuid)
    assert [who for who, *_ in after["audit"]] == ["carol"]
    # 0 s costs nothing: a zero 'release' row says what happened
    assert [(k, a) for k, a, _ in after["ledger"]] == [("release", Decimal("0"))]


def test_audit_lists_who_did_what(cardd, dsn, stuck, capsys):
    demo, grant = stuck
    assert cardd("reservations", "settle", str(grant.b_uuid), "--billed-seconds", "31", "--by", "alice") == 0
    assert cardd("card", "adjust", demo.card_number, "1.5", "--by", "dave", "--reference", "goodwill") == 0
    capsys.readouterr()
    assert cardd("audit", "--card", demo.card_number) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["time (UTC)", "who", "action", "card", "detail", "args"]
    assert [line.split("\t")[1:4] for line in lines[1:]] == [
        ["alice", "reservations settle", demo.card_number],
        ["dave", "card adjust", demo.card_number],
    ]


def test_a_reservation_not_yet_expired_is_closed_only_with_force(cardd, dsn, capsys):
    with Database(dsn) as db:
        demo = create_demo_data(db.pool)
        live = Ledger(db.pool).grant(
            demo.card_id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4412345", max_call_duration=600
        )
    capsys.readouterr()
    assert cardd("reservations", "release", str(live.b_uuid)) == 2
    err = capsys.readouterr().err
    assert f"reservation {live.b_uuid} has not expired" in err and "--force" in err
    assert state(dsn, live.b_uuid)["status"] == "open" and state(dsn, live.b_uuid)["audit"] == []
    assert cardd("reservations", "release", str(live.b_uuid), "--force", "--by", "frank") == 0
    after = state(dsn, live.b_uuid)
    assert after["status"] == "settled" and after["audit"][0][2]["force"] is True


def test_the_plain_reservations_list_still_works_beside_its_sub_commands(cardd, stuck, capsys):
    demo, grant = stuck
    capsys.readouterr()
    assert cardd("reservations") == 0
    assert str(grant.b_uuid) in capsys.readouterr().out
    assert cardd("reservations", "--expired") == 0
    assert str(grant.b_uuid) in capsys.readouterr().out
    assert cardd("reservations", "release", str(grant.b_uuid)) == 0
    capsys.readouterr()
    assert cardd("reservations") == 0
    assert str(grant.b_uuid) not in capsys.readouterr().out


def test_a_sudoed_operator_is_audited_under_their_own_name(cardd, dsn, stuck, monkeypatch):
    demo, grant = stuck
    monkeypatch.setenv("LOGNAME", "cardd")
    monkeypatch.setenv("USER", "cardd")
    monkeypatch.setenv("SUDO_USER", "gina")
    assert cardd("reservations", "release", str(grant.b_uuid)) == 0
    assert [who for who, *_ in state(dsn, grant.b_uuid)["audit"]] == ["gina (as cardd)"]


def test_what_the_orphan_rule_leaves_open_when_freeswitch_cannot_be_asked_the_operator_settles_once(
    cardd, dsn, tmp_path, capsys
):
    """The issue's case: FreeSWITCH unreachable, no CDR; the orphan rule settles nothing on a guess and
    the reservation would hold the card's credit for ever. The operator settles it; later passes (and a
    late CDR) change nothing."""
    import socket

    from cardd.billing.journal import SettlementJournal
    from cardd.orphans import OrphanReconciler

    with socket.socket() as s:  # a port nobody listens on: the inbound Event Socket cannot be reached
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Database(dsn) as db:
        ledger = Ledger(db.pool)
        demo = create_demo_data(db.pool)
        grant = ledger.grant(
            demo.card_id,
            a_uuid=uuid.uuid4(),
            b_uuid=uuid.uuid4(),
            destination="4412345",
            max_call_duration=120,
            margin_s=0,
        )
        with db.pool.connection() as conn:
            conn.execute(
                "UPDATE reservations SET expires_at = now() - interval '1 second' WHERE b_uuid = %s", (grant.b_uuid,)
            )
        reconciler = OrphanReconciler(
            ledger,
            SettlementJournal(tmp_path / "j.jsonl", ledger),
            esl_address=("127.0.0.1", port),
            esl_password="ClueCon",
            live_a_uuids=set,
        )
        assert reconciler.run_once(startup=True).unknown == 1
        assert [r.b_uuid for r in ledger.open_reservations(demo.card_id)] == [grant.b_uuid]

        assert cardd("reservations", "settle", str(grant.b_uuid), "--billed-seconds", "31", "--by", "ops") == 0
        again = reconciler.run_once(startup=True)
        assert (again.unknown, again.estimated, again.from_cdr) == (0, 0, 0)
        assert ledger.open_reservations(demo.card_id) == []
        assert ledger.get_card(demo.card_id).balance == Decimal("9.86400")
    after = state(dsn, grant.b_uuid)
    assert after["ledger"] == [("call", Decimal("-0.13600"), "4412345")]
    assert [(w, a) for w, a, _, _ in after["audit"]] == [("ops", "reservations settle")]


def test_the_list_shows_what_cardd_recorded_and_a_settle_starts_the_call_at_the_recorded_answer(cardd, dsn, capsys):
    with Database(dsn) as db:
        ledger = Ledger(db.pool)
        demo = create_demo_data(db.pool)
        grant = ledger.grant(
            demo.card_id,
            a_uuid=uuid.uuid4(),
            b_uuid=uuid.uuid4(),
            destination="4412345",
            max_call_duration=600,
            switchname="fs-london-1",
        )
        ledger.mark_dialled(grant.b_uuid)
        ledger.mark_answered(grant.b_uuid)
        with db.pool.connection() as conn:
            conn.execute(
                "UPDATE reservations SET answered_at = created_at + interval '7 seconds',"
                " expires_at = now() - interval '1 second' WHERE b_uuid = %s",
                (grant.b_uuid,),
            )
            answered = conn.execute(
                "SELECT answered_at FROM reservations WHERE b_uuid = %s", (grant.b_uuid,)
            ).fetchone()[0]
    capsys.readouterr()
    assert cardd("reservations") == 0
    header, row = (line.split("\t") for line in capsys.readouterr().out.splitlines())
    shown = dict(zip(header, row))
    assert shown["switch"] == "fs-london-1" and shown["dialled"] != ""
    assert datetime.fromisoformat(shown["answered"]) == answered and shown["expired"] == "yes"
    assert cardd("reservations", "settle", str(grant.b_uuid), "--billed-seconds", "31") == 0
    with psycopg.connect(dsn) as conn:
        cdr_answered, cdr_ended = conn.execute(
            "SELECT answered_at, ended_at FROM cdrs WHERE b_uuid = %s", (grant.b_uuid,)
        ).fetchone()
    assert cdr_answered == answered and cdr_ended == answered + timedelta(seconds=31)


def test_operators_and_the_call_racing_to_settle_one_reservation_charge_it_once(dsn, stuck):
    """Two operators and the call's own late settlement at once: one of them closes it, the others find it
    closed (the operators are refused, the call's settlement returns the CDR): one charge."""
    import gevent

    from cardd.billing import operator

    demo, grant = stuck
    with Database(dsn, pool_size=4) as db:
        ledger = Ledger(db.pool)

        def by(name: str):
            try:
                return operator.close_reservation(db.pool, grant.b_uuid, billed_seconds=31, who=name)
            except operator.OperatorError as exc:
                return exc

        jobs = [
            gevent.spawn(by, "op1"),
            gevent.spawn(by, "op2"),
            gevent.spawn(ledger.settle, grant.b_uuid, billmsec=40_000, hangup_cause="NORMAL_CLEARING"),
        ]
        gevent.joinall(jobs, raise_error=True)
        refused = [j.value for j in jobs[:2] if isinstance(j.value, operator.OperatorError)]
        assert all("already settled" in str(e) for e in refused)
        assert len(refused) in (1, 2)
    after = state(dsn, grant.b_uuid)
    assert len(after["cdrs"]) == 1 and len([r for r in after["ledger"] if r[0] == "call"]) == 1
    assert after["balance"] == after["ledger_sum"] == Decimal("10") + after["ledger"][0][1]
    assert len(after["audit"]) == 2 - len(refused)
