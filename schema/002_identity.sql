-- Caller identity (issue 4): throttling of wrong card-number and PIN entries.
--
-- One row per wrong entry. Throttling counts the rows of a CLI or a card inside
-- a sliding window (now() - window .. now()), so the limit holds across calls and
-- across cardd processes sharing this database; rows older than any window are
-- pruned as new ones are written.
CREATE TABLE auth_failures (
    id      bigserial PRIMARY KEY,
    scope   text NOT NULL CHECK (scope IN ('cli', 'card')),
    key     text NOT NULL CHECK (key <> ''),   -- the CLI as received, or the account id
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_failures_key_idx ON auth_failures (scope, key, at);

-- Vouchers generated together (`cardd voucher generate`) share a batch label, so an
-- operator can list or void what one print run produced.
ALTER TABLE vouchers ADD COLUMN batch text NOT NULL DEFAULT '';
CREATE INDEX vouchers_batch_idx ON vouchers (batch) WHERE batch <> '';

-- Imported cards may arrive with plain PINs. They are stored as pin_hash = 'plain$<pin>'
-- (check_pin never accepts that form), hashed on their first successful use or by
-- `cardd card hash-pins`; this view shows how many are left.
CREATE VIEW accounts_with_plain_pins AS
    SELECT id, username FROM accounts WHERE pin_hash LIKE 'plain$%';
