"""The HTTP JSON API (cardd/api) on real PostgreSQL, through its WSGI application: keys and roles,
card holders, cards, money moved once per Idempotency-Key, problem documents, the OpenAPI document."""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from cardd.api.app import ApiConfig, create_app
from cardd.billing import apiauth, catalog, operator
from cardd.billing.identity import Limits
from cardd.billing.ledger import Ledger
from tests.dbfixtures import create_demo_data

V1 = "/api/v1"
PIN_LIMITS = Limits(window_s=900, per_cli=10, per_card=5)
TOPUP_LIMITS = Limits(window_s=3600, per_cli=5, per_card=5, service=100)


class Client:
    """The Flask test client with a bearer token and JSON bodies."""

    def __init__(self, app: Any, token: str | None = None):
        self.http = app.test_client()
        self.token = token

    def request(
        self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return self.http.open(V1 + path, method=method, json=json, headers=h, **kwargs)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=json, **kw)


@pytest.fixture
def api(database):
    demo = create_demo_data(database.pool)
    app = create_app(database.pool, ApiConfig(limits=PIN_LIMITS, topup_limits=TOPUP_LIMITS))
    return app, database, demo


def key(database, role: str, owner: str | None = None, name: str = "test") -> str:
    return apiauth.create_key(database.pool, name, role, owner=owner, who="pytest")


def admin_client(api_fixture) -> Client:
    app, database, _ = api_fixture
    return Client(app, key(database, "admin"))


# --- the document and the conventions ---------------------------------------------------


def test_openapi_document_is_valid_and_lists_every_route(api):
    from openapi_spec_validator import validate

    app, _, _ = api
    response = Client(app).get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    validate(doc)
    documented = {
        (path, method)
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "delete", "patch")
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(V1) or rule.rule == V1 + "/openapi.json":
            continue
        path = rule.rule
        for conv in ("<string:", "<uuid:", "<int:", "<"):
            path = path.replace(conv, "{")
        path = path.replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method.lower()))
    assert served and served == documented


def test_a_request_without_a_valid_key_is_refused_as_a_problem_document(api):
    app, _, _ = api
    for token in (None, "cardd_000000000000_" + "x" * 43, "nonsense"):
        response = Client(app, token).get("/cards")
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"
        assert response.get_json()["status"] == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_bad_fields_get_a_reason_each(api):
    client = admin_client(api)
    response = client.post(
        "/cards", json={"number": "12ab", "tariff": "demo", "currency": "usd", "balance": 1.5, "colour": "red"}
    )
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    reasons = {p["name"]: p["reason"] for p in response.get_json()["invalid_params"]}
    assert set(reasons) == {"number", "currency", "balance", "colour"}
    assert "not a JSON number" in reasons["balance"]


def test_money_is_a_five_place_string_and_times_are_utc(api):
    client = admin_client(api)
    card = client.get("/cards/1234567890").get_json()
    assert card["balance"] == "10.00000" and card["available"] == "10.00000" and card["currency"] == "USD"
    assert card["created_at"].endswith("Z")


# --- cards ------------------------------------------------------------------------------


def test_admin_creates_a_card_and_shows_it_with_available_credit_and_history(api):
    app, database, demo = api
    client = admin_client(api)
    created = client.post(
        "/cards", json={"number": "5550001", "tariff": "demo", "currency": "USD", "balance": "12.5", "pin": "9876"}
    )
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["balance"] == "12.50000"
    ledger = Ledger(database.pool)
    card = ledger.find_card("5550001")
    ledger.grant(card.id, a_uuid=uuid.uuid4(), b_uuid=uuid.uuid4(), destination="4420123456")
    shown = client.get("/cards/5550001").get_json()
    assert shown["open_reservations"] == 1
    assert Decimal(shown["available"]) == ledger.available_credit(card.id) < Decimal(shown["balance"])
    assert [h["kind"] for h in shown["history"]] == ["initial"]
    assert client.post("/cards", json={"number": "5550001", "tariff": "demo", "currency": "USD"}).status_code == 422


def test_card_list_filters_and_pages_by_cursor_without_repeats(api):
    app, database, demo = api
    for i in range(7):
        catalog.create_card(database.pool, f"77000{i}", tariff="demo", currency="USD", balance=str(i))
    client = admin_client(api)
    seen, cursor = [], None
    while True:
        page = client.get(
            "/cards", query_string={"limit": 3, "number_prefix": "77000", **({"cursor": cursor} if cursor else {})}
        ).get_json()
        seen += [c["number"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"77000{i}" for i in range(7)]
    below = client.get("/cards", query_string={"balance_below": "2", "number_prefix": "77"}).get_json()
    assert [c["number"] for c in below["items"]] == ["770000", "770001"]
    assert client.get("/cards", query_string={"cursor": "garbage!"}).status_code == 400


def test_adjust_needs_an_idempotency_key_and_a_repeat_moves_nothing(api):
    app, database, demo = api
    client = admin_client(api)
    body = {"amount": "2.50000", "reference": "goodwill"}
    assert client.post("/cards/1234567890/adjust", json=body).status_code == 400
    first = client.post("/cards/1234567890/adjust", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/cards/1234567890/adjust", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json() == {"number": "1234567890", "balance": "12.50000", "currency": "USD"}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Ledger(database.pool).get_card(demo.card_id).balance == Decimal("12.5")
    other = client.post("/cards/1234567890/adjust", json={**body, "amount": "1"}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409
    with psycopg.connect(database.dsn) as conn:
        audited = conn.execute("SELECT who, action FROM operator_audit WHERE action = 'card adjust'").fetchall()
    assert len(audited) == 1 and audited[0][0].startswith("api key test (")


def test_a_refused_debit_is_answered_the_same_on_repeat_and_moves_nothing(api):
    app, database, demo = api
    client = admin_client(api)
    body = {"amount": "-50", "reference": "too much"}
    first = client.post("/cards/1234567890/adjust", json=body, headers={"Idempotency-Key": "debit-1"})
    again = client.post("/cards/1234567890/adjust", json=body, headers={"Idempotency-Key": "debit-1"})
    assert first.status_code == again.status_code == 422
    assert first.get_json() == again.get_json()
    assert Ledger(database.pool).get_card(demo.card_id).balance == Decimal("10")


def test_block_unblock_and_set_pin_are_audited_without_the_pin(api, caplog):
    app, database, demo = api
    client = admin_client(api)
    caplog.set_level(logging.DEBUG)
    assert client.post("/cards/1234567890/block").get_json()["status"] == "blocked"
    assert Ledger(database.pool).get_card(demo.card_id).status == "blocked"
    assert client.post("/cards/1234567890/unblock").get_json()["status"] == "active"
    response = client.request("PUT", "/cards/1234567890/pin", json={"pin": "246813"})
    assert response.status_code == 204
    assert Ledger(database.pool).verify_pin(Ledger(database.pool).get_card(demo.card_id), "246813")
    with psycopg.connect(database.dsn) as conn:
        rows = conn.execute("SELECT action, args::text, detail FROM operator_audit ORDER BY id").fetchall()
    assert [r[0] for r in rows if r[0].startswith("card")] == ["card block", "card unblock", "card set-pin"]
    assert all("246813" not in r[1] + r[2] for r in rows)
    assert "246813" not in caplog.text


# --- keys and roles ---------------------------------------------------------------------------


def _reseller_world(database) -> tuple[str, str]:
    """Two resellers, each with a customer and a card."""
    for owner, card in (("acme", "880001"), ("globex", "880002")):
        with database.pool.connection() as conn, conn.transaction():
            customer_id = operator.add_customer(database.pool, f"{owner} shop", who="pytest")
            conn.execute("UPDATE customers SET owner = %s WHERE id = %s", (owner, customer_id))
        catalog.create_card(database.pool, card, tariff="demo", currency="USD", balance="5", customer=f"{owner} shop")
    return key(database, "reseller", "acme", "acme key"), key(database, "reseller", "globex", "globex key")


def test_a_reseller_sees_and_changes_only_its_own_customers_cards(api):
    app, database, demo = api
    acme, _ = _reseller_world(database)
    client = Client(app, acme)
    assert client.get("/cards/880001").status_code == 200
    for path in ("/cards/880002", "/cards/1234567890"):
        refused = client.get(path)
        assert refused.status_code == 404 and refused.content_type == "application/problem+json"
    assert [c["number"] for c in client.get("/cards").get_json()["items"]] == ["880001"]
    adjust = client.post(
        "/cards/880002/adjust", json={"amount": "1", "reference": "x"}, headers={"Idempotency-Key": "r1"}
    )
    assert adjust.status_code == 404
    assert [c["name"] for c in client.get("/customers").get_json()["items"]] == ["acme shop"]
    # a reseller's new card must belong to one of its own customers
    assert (
        client.post(
            "/cards", json={"number": "880003", "tariff": "demo", "currency": "USD", "customer": "globex shop"}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/cards", json={"number": "880003", "tariff": "demo", "currency": "USD", "customer": "acme shop"}
        ).status_code
        == 201
    )
    # and its new customers are its own
    assert client.post("/customers", json={"name": "acme two"}).get_json()["owner"] == "acme"


def test_a_readonly_key_reads_everything_and_changes_nothing(api):
    app, database, demo = api
    client = Client(app, key(database, "readonly"))
    assert client.get("/cards/1234567890").status_code == 200
    for method, path, body in (
        ("POST", "/cards", {"number": "1", "tariff": "demo", "currency": "USD"}),
        ("POST", "/cards/1234567890/block", None),
        ("POST", "/cards/1234567890/adjust", {"amount": "1", "reference": "x"}),
        ("POST", "/tariffs", {"name": "t", "currency": "USD"}),
    ):
        response = client.request(method, path, json=body, headers={"Idempotency-Key": "ro"})
        assert response.status_code == 403, path
    assert Ledger(database.pool).get_card(demo.card_id).status == "active"


def test_a_revoked_key_stops_working_at_once(api):
    app, database, demo = api
    token = key(database, "admin")
    client = Client(app, token)
    assert client.get("/cards").status_code == 200
    apiauth.revoke_key(database.pool, token.split("_")[1], who="pytest")
    assert client.get("/cards").status_code == 401


def test_keys_are_stored_hashed(api):
    app, database, demo = api
    token = key(database, "admin")
    with psycopg.connect(database.dsn) as conn:
        stored = conn.execute("SELECT key_id, secret_hash FROM api_keys").fetchall()
    secret = token.rsplit("_", 1)[1]
    assert all(secret not in row[1] for row in stored) and token.split("_")[1] == stored[0][0]


# --- card holders -----------------------------------------------------------------------------


def sign_in(app, number: str, pin: str) -> Any:
    return Client(app).post("/session", json={"number": number, "pin": pin})


def test_a_card_holder_signs_in_and_sees_only_their_own_card(api):
    app, database, demo = api
    catalog.create_card(database.pool, "990001", tariff="demo", currency="USD", pin="1111", balance="3")
    signed = sign_in(app, demo.card_number, demo.pin)
    assert signed.status_code == 201
    holder = Client(app, signed.get_json()["token"])
    me = holder.get("/me").get_json()
    assert me["number"] == demo.card_number and me["balance"] == "10.00000"
    assert holder.get("/me/calls").get_json() == {"items": [], "next_cursor": None}
    # the operator's routes are not a card holder's: no other card, no list
    for path in ("/cards/990001", f"/cards/{demo.card_number}", "/cards", "/cdrs"):
        assert holder.get(path).status_code == 403, path
    holder.request("DELETE", "/session")
    assert holder.get("/me").status_code == 401


def test_wrong_pin_and_unknown_card_get_the_same_answer_and_are_throttled_per_card(api):
    app, database, demo = api
    wrong = sign_in(app, demo.card_number, "0000")
    unknown = sign_in(app, "31337", "0000")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()
    for _ in range(PIN_LIMITS.per_card - 1):
        assert sign_in(app, demo.card_number, "0000").status_code == 401
    # the card's bucket is full: even the right PIN is not checked
    assert sign_in(app, demo.card_number, demo.pin).status_code == 429
    with psycopg.connect(database.dsn) as conn:
        counted = conn.execute(
            "SELECT count(*) FROM auth_failures WHERE scope = 'card' AND key = %s", (str(demo.card_id),)
        ).fetchone()[0]
    assert counted == PIN_LIMITS.per_card  # the same bucket the IVR counts in


def test_a_card_holder_tops_up_with_a_voucher_once(api):
    from cardd.billing import vouchers

    app, database, demo = api
    [number] = vouchers.generate(database.pool, 1, amount="5", currency="USD")
    holder = Client(app, sign_in(app, demo.card_number, demo.pin).get_json()["token"])
    first = holder.post("/me/topup", json={"voucher": number}, headers={"Idempotency-Key": "t1"})
    again = holder.post("/me/topup", json={"voucher": number}, headers={"Idempotency-Key": "t1"})
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json()
    assert first.get_json()["balance"] == "15.00000"
    history = holder.get("/me/history").get_json()["items"]
    assert [(h["kind"], h["amount"]) for h in history] == [("topup", "5.00000"), ("initial", "10.00000")]
    reuse = holder.post("/me/topup", json={"voucher": number}, headers={"Idempotency-Key": "t2"})
    assert reuse.status_code == 422
    assert Ledger(database.pool).get_card(demo.card_id).balance == Decimal("15")
    with psycopg.connect(database.dsn) as conn:
        [(who, args)] = conn.execute("SELECT who, args FROM operator_audit WHERE action = 'voucher redeem'").fetchall()
    assert who == f"card holder {demo.card_number} from 127.0.0.1" and args["voucher"] == number[-4:]


def test_no_response_or_log_line_carries_a_pin_or_a_key(api, caplog):
    app, database, demo = api
    caplog.set_level(logging.DEBUG)
    token = key(database, "admin")
    client = Client(app, token)
    bodies = [
        client.post(
            "/cards", json={"number": "4440001", "tariff": "demo", "currency": "USD", "pin": "80808080"}
        ).get_data(as_text=True),
        client.get("/cards/4440001").get_data(as_text=True),
        client.request("PUT", "/cards/4440001/pin", json={"pin": "70707070"}).get_data(as_text=True),
        sign_in(app, "4440001", "70707070").get_data(as_text=True),
        sign_in(app, "4440001", "60606060").get_data(as_text=True),
    ]
    secret = token.rsplit("_", 1)[1]
    for text in bodies + [caplog.text]:
        for needle in ("80808080", "70707070", "60606060", secret):
            assert needle not in text


def test_racing_repeats_of_one_idempotency_key_move_money_once(api):
    import gevent

    app, database, demo = api
    token = key(database, "admin")
    body = {"amount": "1.00000", "reference": "race"}

    def attempt(_: int) -> tuple[int, str]:
        response = Client(app, token).post("/cards/1234567890/adjust", json=body, headers={"Idempotency-Key": "race"})
        return response.status_code, response.get_data(as_text=True)

    racers = [gevent.spawn(attempt, i) for i in range(12)]
    gevent.joinall(racers, raise_error=True)
    answers = {r.value for r in racers}
    assert len(answers) == 1 and next(iter(answers))[0] == 200
    assert Ledger(database.pool).get_card(demo.card_id).balance == Decimal("11")
    with psycopg.connect(database.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ledger WHERE kind = 'adjustment'").fetchone()[0] == 1


def test_a_session_ends_at_its_expiry_and_when_the_pin_changes(api):
    app, database, demo = api
    first = Client(app, sign_in(app, demo.card_number, demo.pin).get_json()["token"])
    second = Client(app, sign_in(app, demo.card_number, demo.pin).get_json()["token"])
    assert first.get("/me").status_code == second.get("/me").status_code == 200
    with psycopg.connect(database.dsn) as conn:
        conn.execute(
            "UPDATE card_sessions SET expires_at = now() - interval '1 second'"
            " WHERE token_hash = encode(sha256(%s::bytea), 'hex')",
            (first.token[3:],),
        )
    assert first.get("/me").status_code == 401 and second.get("/me").status_code == 200
    admin_client(api).request("PUT", f"/cards/{demo.card_number}/pin", json={"pin": "97531"})
    assert second.get("/me").status_code == 401
    assert sign_in(app, demo.card_number, "97531").status_code == 201


def test_unknown_routes_and_methods_are_problem_documents(api):
    client = admin_client(api)
    for response, status in ((client.get("/nowhere"), 404), (client.request("DELETE", "/cards"), 405)):
        assert response.status_code == status and response.content_type == "application/problem+json"
        assert response.get_json()["status"] == status


def test_a_card_holders_failed_top_ups_are_throttled_like_the_ivrs(api):
    from cardd.billing import vouchers

    app, database, demo = api
    [good] = vouchers.generate(database.pool, 1, amount="5", currency="USD")
    holder = Client(app, sign_in(app, demo.card_number, demo.pin).get_json()["token"])
    for i in range(TOPUP_LIMITS.per_card):
        wrong = holder.post("/me/topup", json={"voucher": f"99999999{i}"}, headers={"Idempotency-Key": f"w{i}"})
        assert wrong.status_code == 422
    # the card's top-up bucket is full: even a good voucher is not looked at
    refused = holder.post("/me/topup", json={"voucher": good}, headers={"Idempotency-Key": "good"})
    assert refused.status_code == 429
    assert Ledger(database.pool).get_card(demo.card_id).balance == Decimal("10")
