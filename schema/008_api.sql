-- The HTTP JSON API (issue 15): keys, card-holder sessions, idempotent money requests,
-- reseller ownership.

-- An API key is shown once (`cardd apikey add`): 'cardd_<key_id>_<secret>'. Only the
-- SHA-256 of the secret is kept: the secret is 256 random bits, so a plain hash is as good
-- as a slow one, and checking a request costs microseconds.
CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    key_id       text NOT NULL UNIQUE CHECK (key_id ~ '^[0-9a-f]{12}$'),   -- public part, in logs
    secret_hash  text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
    name         text NOT NULL CHECK (name <> ''),
    role         text NOT NULL CHECK (role IN ('admin', 'reseller', 'readonly')),
    -- a reseller's name: the customers it owns carry the same owner (keys can be rotated
    -- without moving ownership); only reseller keys have one
    owner        text CHECK (owner <> ''),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CHECK ((role = 'reseller') = (owner IS NOT NULL))
);

-- Which reseller owns a customer (NULL: the operator's own). A reseller's cards are the
-- cards of its customers.
ALTER TABLE customers ADD COLUMN owner text CHECK (owner <> '');
CREATE INDEX customers_owner_idx ON customers (owner) WHERE owner IS NOT NULL;

-- A card holder signed in with card number + PIN. The token is random; only its SHA-256 is kept.
CREATE TABLE card_sessions (
    token_hash  text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    account_id  bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX card_sessions_expiry_idx ON card_sessions (expires_at);

-- The first answer to a money-moving request, per caller and Idempotency-Key: a repeat gets
-- it back and moves nothing. Written in the transaction that moved the money.
CREATE TABLE api_idempotency (
    principal     text NOT NULL,              -- 'key:<key_id>' or 'card:<account id>'
    key           text NOT NULL CHECK (key <> ''),
    method        text NOT NULL,
    path          text NOT NULL,
    request_hash  text NOT NULL,              -- SHA-256 of the body: a reuse with another body is refused
    status        integer NOT NULL,
    body          text NOT NULL,
    content_type  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);

-- The CDR list filters (card, customer, time, destination, cause) page by id.
CREATE INDEX cdrs_ended_idx ON cdrs (ended_at, id);

-- A CDR keeps the customer its card had when the call was billed, so a customer's (or a
-- reseller's) CDRs are one index range instead of a join probed for every CDR: at 10 million
-- CDRs the join took 190 ms a page (bench/bench_api.py). Filled on insert when not given.
ALTER TABLE cdrs ADD COLUMN customer_id bigint REFERENCES customers(id);
CREATE INDEX cdrs_customer_idx ON cdrs (customer_id, id) WHERE customer_id IS NOT NULL;

CREATE FUNCTION cdrs_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.customer_id IS NULL THEN
        SELECT customer_id INTO NEW.customer_id FROM accounts WHERE id = NEW.account_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER cdrs_customer BEFORE INSERT ON cdrs FOR EACH ROW EXECUTE FUNCTION cdrs_customer();
