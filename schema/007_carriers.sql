-- Carriers and least-cost routing (issue 17).
--
-- A carrier terminates calls through one or more FreeSWITCH gateways (dial-string
-- templates with {number}, tried in order) and charges by its own buy-rate deck,
-- which has the shape and arithmetic of a tariff (cardd/billing/rating.py).
-- With no row in `carriers` cardd dials daemon.dial_string as before.
CREATE TABLE carriers (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    -- the deck's currency: a carrier routes only cards of the same currency (margin = sell - buy)
    currency       char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    gateways       text[] NOT NULL CHECK (cardinality(gateways) >= 1),
    enabled        boolean NOT NULL DEFAULT true,
    -- ties of the first minute's buy price: the lower priority number goes first
    priority       integer NOT NULL DEFAULT 100,
    -- calls up at once through this carrier (open reservations); NULL: no limit
    channel_limit  integer CHECK (channel_limit >= 1),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The buy deck: the columns of `rates`, keyed by carrier. A forbidden prefix is one
-- the carrier does not terminate (its longest match takes the carrier out of the route).
CREATE TABLE carrier_rates (
    carrier_id    bigint NOT NULL REFERENCES carriers(id) ON DELETE CASCADE,
    prefix        text NOT NULL CHECK (prefix ~ '^[0-9]{0,32}$'),
    price_1       numeric(18,5) NOT NULL CHECK (price_1 >= 0),
    interval_1    integer NOT NULL CHECK (interval_1 >= 1),
    price_n       numeric(18,5) NOT NULL CHECK (price_n >= 0),
    interval_n    integer NOT NULL CHECK (interval_n >= 1),
    connect_fee   numeric(18,5) NOT NULL DEFAULT 0 CHECK (connect_fee >= 0),
    free_seconds  integer NOT NULL DEFAULT 0 CHECK (free_seconds >= 0),
    grace         integer NOT NULL DEFAULT 0 CHECK (grace >= 0),
    forbidden     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (carrier_id, prefix)
);
-- Route selection probes every prefix of the number across all carriers at once:
-- WHERE prefix = ANY($1), then the longest per carrier.
CREATE INDEX carrier_rates_prefix_idx ON carrier_rates (prefix);

-- The route a reservation was granted on, and the buy rate copied in (as the sell
-- rate is), so a deck edited mid-call cannot change what the call costs the business.
ALTER TABLE reservations
    ADD COLUMN carrier_id        bigint REFERENCES carriers(id),
    ADD COLUMN gateway           text,
    ADD COLUMN buy_prefix        text,
    ADD COLUMN buy_price_1       numeric(18,5),
    ADD COLUMN buy_interval_1    integer,
    ADD COLUMN buy_price_n       numeric(18,5),
    ADD COLUMN buy_interval_n    integer,
    ADD COLUMN buy_connect_fee   numeric(18,5),
    ADD COLUMN buy_free_seconds  integer,
    ADD COLUMN buy_grace         integer,
    ADD CHECK ((carrier_id IS NULL) = (gateway IS NULL) AND (carrier_id IS NULL) = (buy_price_1 IS NULL));
-- The channel limit counts a carrier's open reservations (across every cardd process).
CREATE INDEX reservations_open_carrier_idx ON reservations (carrier_id)
    WHERE status = 'open' AND carrier_id IS NOT NULL;

-- What carried the call and what it cost the business. NULL without carriers.
ALTER TABLE cdrs
    ADD COLUMN carrier_id  bigint REFERENCES carriers(id),
    ADD COLUMN carrier     text,
    ADD COLUMN gateway     text,
    ADD COLUMN buy_cost    numeric(18,5) CHECK (buy_cost >= 0),
    ADD COLUMN margin      numeric(18,5);   -- cost - buy_cost, negative for a call at a loss
