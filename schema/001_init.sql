-- cardd schema, version 1. Applied by `cardd db migrate` (cardd/db.py), once, in one transaction.
-- Money is NUMERIC(18,5). Never UPDATE accounts.balance directly: insert a ledger row,
-- and the ledger trigger moves the balance, so the balance always equals the sum of its ledger.

CREATE TABLE customers (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tariffs (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- lets accounts reference (tariff, currency): a card uses only a tariff in its own currency
    UNIQUE (id, currency)
);

CREATE TABLE rates (
    id            bigserial PRIMARY KEY,
    tariff_id     bigint NOT NULL REFERENCES tariffs(id) ON DELETE CASCADE,
    -- '' is a catch-all route that every number matches
    prefix        text NOT NULL CHECK (prefix ~ '^[0-9]{0,32}$'),
    price_1       numeric(18,5) NOT NULL CHECK (price_1 >= 0),     -- per minute, first interval
    interval_1    integer NOT NULL CHECK (interval_1 >= 1),        -- seconds
    price_n       numeric(18,5) NOT NULL CHECK (price_n >= 0),     -- per minute, each next interval
    interval_n    integer NOT NULL CHECK (interval_n >= 1),
    connect_fee   numeric(18,5) NOT NULL DEFAULT 0 CHECK (connect_fee >= 0),
    free_seconds  integer NOT NULL DEFAULT 0 CHECK (free_seconds >= 0),
    grace         integer NOT NULL DEFAULT 0 CHECK (grace >= 0),
    forbidden     boolean NOT NULL DEFAULT false,
    -- The longest-prefix lookup probes this btree with every prefix of the number:
    -- WHERE tariff_id = $1 AND prefix = ANY($2) ORDER BY length(prefix) DESC LIMIT 1
    UNIQUE (tariff_id, prefix)
);

CREATE TABLE service_plans (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    suspended   boolean NOT NULL DEFAULT false,
    -- a minutes plan: the balance is not announced
    minutes_plan boolean NOT NULL DEFAULT false
);

-- Free minutes of a plan per destination prefix (longest prefix wins).
CREATE TABLE service_plan_minutes (
    plan_id     bigint NOT NULL REFERENCES service_plans(id) ON DELETE CASCADE,
    prefix      text NOT NULL CHECK (prefix ~ '^[0-9]{0,32}$'),
    minutes     integer NOT NULL CHECK (minutes >= 0),
    PRIMARY KEY (plan_id, prefix)
);

CREATE TABLE accounts (
    id                    bigserial PRIMARY KEY,
    username              text NOT NULL UNIQUE CHECK (username ~ '^[0-9]{1,32}$'),  -- the card number
    authname              text UNIQUE CHECK (authname <> ''),                      -- VoIP login
    pin_hash              text,            -- NULL: the card has an empty PIN
    balance               numeric(18,5) NOT NULL DEFAULT 0,  -- moved only by the ledger trigger
    currency              char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status                text NOT NULL DEFAULT 'active'
                          CHECK (status IN ('new', 'active', 'blocked', 'closed')),
    customer_id           bigint REFERENCES customers(id),
    tariff_id             bigint NOT NULL,
    service_plan_id       bigint REFERENCES service_plans(id),
    expires_at            timestamptz,
    -- activation on first use: expires_at = first use + this many days
    valid_days            integer CHECK (valid_days >= 1),
    first_used_at         timestamptz,
    max_concurrent_calls  integer CHECK (max_concurrent_calls >= 1),  -- NULL: no limit
    language              text CHECK (language ~ '^[a-z]{2}$'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tariff_id, currency) REFERENCES tariffs(id, currency)
);
CREATE INDEX accounts_customer_idx ON accounts (customer_id);

-- Plan seconds an account has used, per plan prefix.
CREATE TABLE account_plan_usage (
    account_id    bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    prefix        text NOT NULL,
    used_seconds  integer NOT NULL DEFAULT 0 CHECK (used_seconds >= 0),
    PRIMARY KEY (account_id, prefix)
);

CREATE TABLE calling_card_cli_map (
    cli         text PRIMARY KEY CHECK (cli ~ '^\+?[0-9]{1,32}$'),
    account_id  bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calling_card_cli_map_account_idx ON calling_card_cli_map (account_id);

CREATE TABLE vouchers (
    id          bigserial PRIMARY KEY,
    number      text NOT NULL UNIQUE CHECK (number ~ '^[0-9]{1,32}$'),
    amount      numeric(18,5) NOT NULL CHECK (amount > 0),
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status      text NOT NULL DEFAULT 'unused' CHECK (status IN ('unused', 'used', 'void')),
    used_by     bigint REFERENCES accounts(id),
    used_at     timestamptz,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'used') = (used_by IS NOT NULL AND used_at IS NOT NULL))
);

CREATE TABLE hot_dial (
    account_id   bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key          text NOT NULL CHECK (key ~ '^[0-9]{1,2}$'),
    destination  text NOT NULL CHECK (destination ~ '^[0-9]{1,32}$'),
    PRIMARY KEY (account_id, key)
);

CREATE TABLE smart_dial (
    id           bigserial PRIMARY KEY,
    did          text NOT NULL CHECK (did ~ '^\+?[0-9]{1,32}$'),
    account_id   bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    destination  text NOT NULL CHECK (destination ~ '^[0-9]{1,32}$'),
    -- exclusive DIDs belong to one account; shared ones are resolved by the caller's CLI
    exclusive    boolean NOT NULL DEFAULT false,
    UNIQUE (did, account_id)
);
CREATE UNIQUE INDEX smart_dial_exclusive_idx ON smart_dial (did) WHERE exclusive;

CREATE TABLE blacklist (
    cli              text PRIMARY KEY CHECK (cli <> ''),
    failed_attempts  integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    blocked          boolean NOT NULL DEFAULT false,
    blocked_at       timestamptz,
    reason           text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ivr_prompts (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name <> ''),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ivr_prompt_audio (
    prompt_id   bigint NOT NULL REFERENCES ivr_prompts(id) ON DELETE CASCADE,
    lang        text NOT NULL CHECK (lang ~ '^[a-z]{2}$'),
    path        text NOT NULL CHECK (path <> ''),   -- under the sounds_dir setting
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (prompt_id, lang)
);

-- One row per call attempt, keyed by the B-leg UUID cardd chose (origination_uuid).
-- The rate is copied in, so a tariff edited mid-call cannot change what the call costs.
CREATE TABLE reservations (
    b_uuid          uuid PRIMARY KEY,
    a_uuid          uuid NOT NULL,
    account_id      bigint NOT NULL REFERENCES accounts(id),
    amount          numeric(18,5) NOT NULL CHECK (amount >= 0),   -- the most the call can cost
    duration_s      integer NOT NULL CHECK (duration_s >= 0),    -- granted, plan seconds included
    plan_seconds    integer NOT NULL DEFAULT 0 CHECK (plan_seconds >= 0),
    plan_prefix     text,
    cli             text NOT NULL DEFAULT '',
    cld             text NOT NULL,
    translated_cli  text NOT NULL DEFAULT '',
    translated_cld  text NOT NULL,
    rate_id         bigint,
    rate_prefix     text NOT NULL,
    price_1         numeric(18,5) NOT NULL,
    interval_1      integer NOT NULL,
    price_n         numeric(18,5) NOT NULL,
    interval_n      integer NOT NULL,
    connect_fee     numeric(18,5) NOT NULL,
    free_seconds    integer NOT NULL,
    grace           integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- granted duration + margin: past it the orphan check asks FreeSWITCH; money is never silently released
    expires_at      timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'settled')),
    settled_at      timestamptz,
    CHECK ((status = 'settled') = (settled_at IS NOT NULL))
);
CREATE INDEX reservations_open_account_idx ON reservations (account_id) WHERE status = 'open';
CREATE INDEX reservations_open_expiry_idx ON reservations (expires_at) WHERE status = 'open';
CREATE INDEX reservations_a_uuid_idx ON reservations (a_uuid);

CREATE TABLE cdrs (
    id                 bigserial PRIMARY KEY,
    b_uuid             uuid NOT NULL UNIQUE,   -- a repeat settlement can never write a second CDR
    a_uuid             uuid NOT NULL,
    account_id         bigint NOT NULL REFERENCES accounts(id),
    username           text NOT NULL,
    currency           char(3) NOT NULL,
    cli                text NOT NULL DEFAULT '',
    cld                text NOT NULL,
    translated_cli     text NOT NULL DEFAULT '',
    translated_cld     text NOT NULL,
    rate_id            bigint,
    rate_prefix        text NOT NULL,
    started_at         timestamptz NOT NULL,   -- when the attempt was granted
    answered_at        timestamptz,
    ended_at           timestamptz NOT NULL,
    granted_seconds    integer NOT NULL CHECK (granted_seconds >= 0),
    billed_seconds     integer NOT NULL CHECK (billed_seconds >= 0),
    plan_seconds_used  integer NOT NULL DEFAULT 0 CHECK (plan_seconds_used >= 0),
    cost               numeric(18,5) NOT NULL CHECK (cost >= 0),
    hangup_cause       text NOT NULL DEFAULT '',
    -- settled at the reserved amount without FreeSWITCH's CDR (orphan rule); corrected by a refund later
    estimated          boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (billed_seconds <= granted_seconds)
);
CREATE INDEX cdrs_account_idx ON cdrs (account_id, id DESC);
CREATE INDEX cdrs_a_uuid_idx ON cdrs (a_uuid);

-- Every balance change is a row here; accounts.balance = sum(amount) of the account's rows.
CREATE TABLE ledger (
    id             bigserial PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts(id),
    amount         numeric(18,5) NOT NULL CHECK (amount <> 0),  -- negative debits, positive credits
    kind           text NOT NULL CHECK (kind IN ('initial', 'call', 'topup', 'transfer_in', 'transfer_out',
                                                 'refund', 'adjustment')),
    b_uuid         uuid,           -- the call, for kind 'call' and 'refund'
    voucher_id     bigint REFERENCES vouchers(id),
    reference      text NOT NULL DEFAULT '',
    balance_after  numeric(18,5) NOT NULL,   -- filled by the trigger
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'call' OR (b_uuid IS NOT NULL AND amount < 0))
);
CREATE INDEX ledger_account_idx ON ledger (account_id, id);
-- A call is charged at most once, whatever happens upstream.
CREATE UNIQUE INDEX ledger_one_charge_per_call_idx ON ledger (b_uuid) WHERE kind = 'call';

CREATE FUNCTION ledger_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET balance = balance + NEW.amount
     WHERE id = NEW.account_id
    RETURNING balance INTO NEW.balance_after;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ledger row for unknown account %', NEW.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER ledger_apply BEFORE INSERT ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_apply();

-- The ledger is append-only: corrections are new rows (refund, adjustment).
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
