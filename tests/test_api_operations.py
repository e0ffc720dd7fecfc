"""What the CLI does that the API does too, on real PostgreSQL through the WSGI application: carriers
(`cardd carrier add|list|enable|disable|rates import|route`), prompts with an uploaded recording
(`cardd prompt create|update|list`, sox converting), tariff rename and delete, the catch-all rate's
delete, the PIN rehash (`cardd card hash-pins`); and that a money request failing in the database
is never stored as its idempotent answer."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from cardd.api.app import ApiConfig, create_app
from cardd.billing import catalog
from cardd.billing.ledger import Ledger
from tests.test_api import PIN_LIMITS, TOPUP_LIMITS, Client, admin_client, api, key  # noqa: F401 (fixture)

HEADER = "prefix,description,price_1,interval_1,price_n,interval_n,connect_fee,free_seconds,grace\n"
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (apt-get install sox)")


def audits(database, action: str) -> list[tuple[str, str]]:
    with psycopg.connect(database.dsn) as conn:
        return conn.execute(
            "SELECT who, detail FROM operator_audit WHERE action = %s ORDER BY id", (action,)
        ).fetchall()


# --- carriers ---------------------------------------------------------------------------------------------------


def test_carriers_are_added_paged_shown_disabled_and_enabled_by_an_admin_and_read_by_readonly(api):
    app, database, _ = api
    client = admin_client(api)
    for name in ("acme", "globex", "initech"):
        made = client.post(
            "/carriers",
            json={
                "name": name,
                "currency": "USD",
                "priority": 10,
                "gateways": [f"sofia/gateway/{name}1/{{number}}", f"sofia/gateway/{name}2/{{number}}"],
            },
        )
        assert made.status_code == 201, made.get_json()
    assert made.get_json() == {
        "name": "initech",
        "currency": "USD",
        "priority": 10,
        "channel_limit": None,
        "enabled": True,
        "rates": 0,
        "open_calls": 0,
        "gateways": ["sofia/gateway/initech1/{number}", "sofia/gateway/initech2/{number}"],
    }
    readonly = Client(app, key(database, "readonly"))
    first = readonly.get("/carriers", query_string={"limit": 2}).get_json()
    rest = readonly.get("/carriers", query_string={"limit": 2, "cursor": first["next_cursor"]}).get_json()
    assert [c["name"] for c in first["items"] + rest["items"]] == ["acme", "globex", "initech"]
    assert rest["next_cursor"] is None
    assert client.post("/carriers/globex/disable").get_json()["enabled"] is False
    assert readonly.get("/carriers/globex").get_json()["enabled"] is False
    assert client.post("/carriers/globex/enable").get_json()["enabled"] is True
    assert [who for who, _ in audits(database, "carrier disable")] == [
        who for who, _ in audits(database, "carrier enable")
    ]
    assert len(audits(database, "carrier add")) == 3 and audits(database, "carrier add")[0][0].endswith("127.0.0.1")
    # refusals: who may not, what is wrong, what does not exist
    assert readonly.post("/carriers/acme/disable").status_code == 403
    assert Client(app, key(database, "reseller", "acme")).get("/carriers").status_code == 403
    dup = client.post("/carriers", json={"name": "acme", "currency": "USD", "gateways": ["x/{number}"]})
    assert dup.status_code == 422 and "already exists" in dup.get_json()["detail"]
    piped = client.post("/carriers", json={"name": "bad", "currency": "USD", "gateways": ["a/{number}|b/{number}"]})
    assert piped.status_code == 422 and piped.content_type == "application/problem+json"
    assert client.post("/carriers", json={"name": "x", "currency": "USD", "gateways": []}).status_code == 422
    for missing in (client.get("/carriers/nobody"), client.post("/carriers/nobody/enable")):
        assert missing.status_code == 404


def test_a_buy_deck_is_imported_by_the_cli_importer_and_refused_whole_with_every_bad_row_named(api):
    app, database, _ = api
    client = admin_client(api)
    client.post("/carriers", json={"name": "acme", "currency": "USD", "gateways": ["sofia/gateway/acme/{number}"]})
    bad = HEADER + "44,UK,0.03,60,0.03,60,0,0,0\n447,UK mobile,abc,60,0.05,60,0,0,0\n44x,Bad,0.05,0,0.05,60,0,0,0\n"
    refused = client.post("/carriers/acme/rates/import", data=bad, content_type="text/csv")
    assert refused.status_code == 422 and "nothing imported" in refused.get_json()["detail"]
    assert [p["name"] for p in refused.get_json()["invalid_params"]][:2] == ["line 3", "line 4"]
    assert client.get("/carriers/acme").get_json()["rates"] == 0
    good = HEADER + "44,UK,0.03,60,0.03,60,0,0,0\n447,UK mobile,0.05,60,0.05,60,0,0,0\n"
    done = client.post("/carriers/acme/rates/import", data=good, content_type="text/csv")
    assert done.status_code == 200 and done.get_json()["inserted"] == 2
    replaced = client.post(
        "/carriers/acme/rates/import",
        query_string={"mode": "replace"},
        data=HEADER + "44,UK,0.02,60,0.02,60,0,0,0\n",
        content_type="text/csv",
    ).get_json()
    assert (replaced["updated"], replaced["deleted"]) == (1, 1)
    assert client.get("/carriers/acme").get_json()["rates"] == 1
    assert client.post("/carriers/nobody/rates/import", data=good, content_type="text/csv").status_code == 404
    [(_, detail)] = audits(database, "carrier rates import")[-1:]
    assert detail.startswith("carrier acme: 1 rows")


def test_the_route_plan_of_a_number_is_the_order_a_call_takes_its_routes(api):
    app, database, _ = api
    client = admin_client(api)
    client.post("/tariffs", json={"name": "std", "currency": "USD"})
    client.request(
        "PUT",
        "/tariffs/std/rates",
        json={"prefix": "44", "price_1": "0.06", "interval_1": 1, "price_n": "0.06", "interval_n": 1},
    )
    decks = {
        "acme": "44,UK,0.031,1,0.031,1,0,0,0",
        "globex": "447,UK mobile,0.035,60,0.035,60,0,0,0",
        "pricey": "44,UK,0.07,60,0.07,60,0,0,0",
    }
    for name, row in decks.items():
        gateways = (
            [f"sofia/gateway/{name}1/{{number}}", f"sofia/gateway/{name}2/{{number}}"]
            if name == "acme"
            else [f"sofia/gateway/{name}/{{number}}"]
        )
        client.post("/carriers", json={"name": name, "currency": "USD", "gateways": gateways})
        client.post(f"/carriers/{name}/rates/import", data=HEADER + row + "\n", content_type="text/csv")
    readonly = Client(app, key(database, "readonly"))
    plan = readonly.get("/carriers/route", query_string={"number": "447700900123", "tariff": "std"}).get_json()
    assert (plan["refused"], plan["sell_prefix"], plan["sell_first_minute"]) == (False, "44", "0.06000")
    # pricey's first minute (0.07) is dearer than the sell price: not a route
    assert [
        (r["carrier"], r["gateway"], r["prefix"], r["buy_first_minute"], r["margin_first_minute"])
        for r in plan["routes"]
    ] == [
        ("acme", "sofia/gateway/acme1/{number}", "44", "0.03100", "0.02900"),
        ("acme", "sofia/gateway/acme2/{number}", "44", "0.03100", "0.02900"),
        ("globex", "sofia/gateway/globex/{number}", "447", "0.03500", "0.02500"),
    ]
    at_a_loss = readonly.get(
        "/carriers/route", query_string={"number": "447700900123", "tariff": "std", "allow_loss": "true"}
    ).get_json()
    assert [r["carrier"] for r in at_a_loss["routes"]][-1] == "pricey"
    assert at_a_loss["routes"][-1]["margin_first_minute"] == "-0.01000"
    no_rate = readonly.get("/carriers/route", query_string={"number": "33123456", "tariff": "std"}).get_json()
    assert no_rate["refused"] is True and no_rate["routes"] == [] and no_rate["sell_prefix"] is None
    unknown = readonly.get("/carriers/route", query_string={"number": "44", "tariff": "nope"})
    assert unknown.status_code == 422 and "unknown tariff" in unknown.get_json()["detail"]
    with psycopg.connect(database.dsn) as conn:  # nothing reserved, no lock left behind
        assert conn.execute("SELECT count(*) FROM reservations").fetchone()[0] == 0


# --- prompts ----------------------------------------------------------------------------------------------------


def tone(path: Path, *, rate: int = 44100, channels: int = 2, seconds: float = 0.3) -> bytes:
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", str(channels), str(path), "synth", str(seconds), "sine", "440"], check=True
    )
    return path.read_bytes()


@pytest.fixture
def prompt_api(database, tmp_path):
    app = create_app(
        database.pool, ApiConfig(limits=PIN_LIMITS, topup_limits=TOPUP_LIMITS, sounds_dir=str(tmp_path / "sounds"))
    )
    return app, database, tmp_path / "sounds"


@needs_sox
def test_a_prompt_is_created_from_an_upload_given_a_language_and_listed(prompt_api, tmp_path):
    app, database, sounds = prompt_api
    client = Client(app, key(database, "admin"))
    made = client.post(
        "/prompts",
        json=None,
        content_type="multipart/form-data",
        data={
            "name": "promo",
            "description": "Christmas promotion",
            "audio": (io.BytesIO(tone(tmp_path / "cd.wav")), "promo.wav"),
        },
    )
    assert made.status_code == 201, made.get_json()
    prompt = made.get_json()
    assert prompt["default_audio"] == f"custom/{prompt['id']}/default.wav" and prompt["languages"] == {}
    with wave.open(str(sounds / prompt["default_audio"])) as w:
        assert (w.getframerate(), w.getsampwidth() * 8, w.getnchannels()) == (8000, 16, 1)
    aiff = tmp_path / "th.aiff"
    subprocess.run(
        ["sox", "-n", "-r", "22050", "-b", "8", "-c", "1", str(aiff), "synth", "0.3", "sine", "300"], check=True
    )
    thai = client.request(
        "PATCH",
        f"/prompts/{prompt['id']}",
        content_type="multipart/form-data",
        data={"lang": "th", "audio": (io.BytesIO(aiff.read_bytes()), "th.aiff")},
    )
    assert thai.status_code == 200 and thai.get_json()["languages"] == {"th": f"custom/{prompt['id']}/th.wav"}
    renamed = client.request(
        "PATCH", f"/prompts/{prompt['id']}", content_type="multipart/form-data", data={"description": "New year"}
    )
    assert renamed.get_json()["description"] == "New year"
    listed = Client(app, key(database, "readonly")).get("/prompts").get_json()
    assert [p["name"] for p in listed["items"]] == ["promo"] and listed["next_cursor"] is None
    assert [action for action in ("prompt create", "prompt update") if audits(database, action)] == [
        "prompt create",
        "prompt update",
    ]
    assert (
        Client(app, key(database, "readonly"))
        .post("/prompts", content_type="multipart/form-data", data={"name": "x", "audio": (io.BytesIO(b"x"), "x.wav")})
        .status_code
        == 403
    )


@needs_sox
def test_a_file_sox_cannot_read_is_refused_and_leaves_no_prompt(prompt_api, tmp_path):
    app, database, sounds = prompt_api
    client = Client(app, key(database, "admin"))
    refused = client.post(
        "/prompts",
        content_type="multipart/form-data",
        data={"name": "junk", "audio": (io.BytesIO(b"this is not audio" * 50), "junk.wav")},
    )
    assert refused.status_code == 422 and refused.content_type == "application/problem+json"
    detail = refused.get_json()["detail"]
    assert detail.startswith("the uploaded audio: ") and "cardd-upload-" not in detail
    assert client.get("/prompts").get_json()["items"] == []
    no_file = client.post("/prompts", content_type="multipart/form-data", data={"name": "nofile"})
    assert no_file.status_code == 422 and no_file.get_json()["invalid_params"][0]["name"] == "audio"
    as_json = client.post("/prompts", json={"name": "x"})
    assert as_json.status_code == 422
    as_text = client.post("/prompts", content_type="multipart/form-data", data={"name": "t", "audio": "RIFF...."})
    assert as_text.status_code == 422 and as_text.get_json()["invalid_params"][0]["name"] == "audio"
    for filename in ("", "../../etc/x.wav", "x.wav;rm -rf", "noext"):
        odd = client.post(
            "/prompts", content_type="multipart/form-data", data={"name": "odd", "audio": (io.BytesIO(b""), filename)}
        )
        assert odd.status_code == 422 and odd.content_type == "application/problem+json", filename
    assert not sounds.exists() or not any(sounds.rglob("*.wav"))
    lang_alone = client.request("PATCH", "/prompts/1", content_type="multipart/form-data", data={"lang": "th"})
    assert lang_alone.status_code == 404  # no prompt 1 yet


def test_without_sox_a_prompt_upload_is_answered_with_what_to_install(prompt_api, tmp_path, monkeypatch):
    app, database, _ = prompt_api
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without sox
    client = Client(app, key(database, "admin"))
    refused = client.post(
        "/prompts",
        content_type="multipart/form-data",
        data={"name": "promo", "audio": (io.BytesIO(b"RIFF" + b"\0" * 100), "promo.wav")},
    )
    assert refused.status_code == 503 and refused.content_type == "application/problem+json"
    assert (
        "sox is not installed" in refused.get_json()["detail"] and "apt-get install sox" in refused.get_json()["detail"]
    )
    assert client.get("/prompts").get_json()["items"] == []


def test_a_prompt_upload_without_sounds_dir_is_refused(api):
    refused = admin_client(api).post(
        "/prompts", content_type="multipart/form-data", data={"name": "promo", "audio": (io.BytesIO(b"x"), "p.wav")}
    )
    assert refused.status_code == 409 and "daemon.sounds_dir" in refused.get_json()["detail"]


# --- tariffs, rates, PINs -----------------------------------------------------------------------------------


def test_a_tariff_is_renamed_and_deleted_only_when_no_card_uses_it(api):
    app, database, demo = api
    client = admin_client(api)
    renamed = client.request("PATCH", "/tariffs/demo", json={"name": "standard"})
    assert renamed.status_code == 200 and renamed.get_json() == {"name": "standard", "currency": "USD", "rates": 4}
    assert Ledger(database.pool).get_card(demo.card_id).tariff_id == demo.tariff_id  # the card follows
    refused = client.request("DELETE", "/tariffs/standard")
    assert refused.status_code == 422 and "used by 1 card" in refused.get_json()["detail"]
    client.post("/tariffs", json={"name": "old", "currency": "USD"})
    client.request(
        "PUT",
        "/tariffs/old/rates",
        json={"prefix": "", "price_1": "0.1", "interval_1": 60, "price_n": "0.1", "interval_n": 60},
    )
    assert client.request("PATCH", "/tariffs/old", json={"name": "standard"}).status_code == 422
    assert client.request("DELETE", "/tariffs/old").status_code == 204
    assert client.request("DELETE", "/tariffs/old").status_code == 422  # unknown tariff
    assert {t["name"] for t in client.get("/tariffs").get_json()["items"]} == {"standard"}
    assert Client(app, key(database, "readonly")).request("DELETE", "/tariffs/standard").status_code == 403
    assert [d for _, d in audits(database, "tariff delete")] == ["tariff old deleted with 1 rates"]
    assert [d for _, d in audits(database, "tariff rename")] == ["tariff demo renamed standard"]


def test_the_catch_all_rate_is_deleted_by_an_empty_prefix(api):
    app, database, demo = api
    client = admin_client(api)
    rate = {"prefix": "", "price_1": "0.5", "interval_1": 60, "price_n": "0.5", "interval_n": 60}
    assert client.request("PUT", "/tariffs/demo/rates", json=rate).status_code == 200
    assert client.get("/tariffs/demo/lookup", query_string={"number": "33123"}).get_json()["rate"]["prefix"] == ""
    assert client.request("DELETE", "/tariffs/demo/rates", query_string={"prefix": ""}).status_code == 204
    assert client.get("/tariffs/demo/lookup", query_string={"number": "33123"}).get_json()["rate"] is None
    assert client.request("DELETE", "/tariffs/demo/rates", query_string={"prefix": ""}).status_code == 404
    assert client.request("DELETE", "/tariffs/demo/rates", query_string={"prefix": "44"}).status_code == 204
    assert client.request("DELETE", "/tariffs/demo/rates").status_code == 422  # prefix is required
    assert [d for _, d in audits(database, "rate delete")] == [
        "tariff demo: rate for (catch-all) deleted",
        "tariff demo: rate for 44 deleted",
    ]


def test_imported_plain_pins_are_hashed_by_an_admin_and_still_sign_in(api):
    app, database, demo = api
    catalog.create_card(database.pool, "5550001", tariff="demo", currency="USD", balance="1")
    with psycopg.connect(database.dsn) as conn:
        conn.execute("UPDATE accounts SET pin_hash = 'plain$2468' WHERE username = '5550001'")
    assert Client(app, key(database, "readonly")).post("/admin/hash-pins").status_code == 403
    client = admin_client(api)
    assert client.post("/admin/hash-pins").get_json() == {"hashed": 1}
    assert client.post("/admin/hash-pins").get_json() == {"hashed": 0}
    with psycopg.connect(database.dsn) as conn:
        stored = conn.execute("SELECT pin_hash FROM accounts WHERE username = '5550001'").fetchone()[0]
    assert not stored.startswith("plain$") and "2468" not in stored
    signed_in = Client(app).post("/session", json={"number": "5550001", "pin": "2468"})
    assert signed_in.status_code in (200, 201) and signed_in.get_json()["token"]
    assert [d for _, d in audits(database, "card hash-pins")] == ["1 plain PINs hashed", "0 plain PINs hashed"]


# --- a database fault is not an answer ------------------------------------------------------------------------


@pytest.mark.parametrize("errcode, status", [("XX000", 500), ("57P01", 503)])
def test_a_money_request_failing_in_the_database_is_not_stored_and_its_retry_moves_money_once(api, errcode, status):
    app, database, demo = api
    client = admin_client(api)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION ledger_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" RAISE EXCEPTION 'injected fault' USING ERRCODE = '{errcode}'; END $$"
        )
        conn.execute("CREATE TRIGGER ledger_fault BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_fault()")
    body = {"amount": "2.50", "reference": "shop order 7"}
    failed = client.post(f"/cards/{demo.card_number}/adjust", json=body, headers={"Idempotency-Key": "order-7"})
    assert failed.status_code == status and failed.content_type == "application/problem+json"
    assert Ledger(database.pool).get_card(demo.card_id).balance == demo.balance
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute("DROP TRIGGER ledger_fault ON ledger")
        assert conn.execute("SELECT count(*) FROM api_idempotency").fetchone()[0] == 0
    retried = client.post(f"/cards/{demo.card_number}/adjust", json=body, headers={"Idempotency-Key": "order-7"})
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert retried.get_json()["balance"] == "12.50000"
    again = client.post(f"/cards/{demo.card_number}/adjust", json=body, headers={"Idempotency-Key": "order-7"})
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == retried.get_json()
    assert Ledger(database.pool).get_card(demo.card_id).balance == demo.balance + Decimal("2.5")
    with psycopg.connect(database.dsn) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM ledger WHERE account_id = %s AND kind = 'adjustment'", (demo.card_id,)
            ).fetchone()[0]
            == 1
        )
