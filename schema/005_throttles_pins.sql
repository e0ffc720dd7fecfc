-- Race-free throttles and keyed PIN hashes (issue 12, README "Security").
--
-- auth_failures now counts every throttled attempt, not only wrong PINs and card
-- numbers: an attempt is written BEFORE its secret is evaluated (under an advisory
-- lock per bucket, cardd.billing.identity.begin_attempt) and deleted again when it
-- proves right. Top-ups get buckets of their own: per CLI, per card and one for the
-- whole service.
ALTER TABLE auth_failures DROP CONSTRAINT auth_failures_scope_check;
ALTER TABLE auth_failures ADD CONSTRAINT auth_failures_scope_check
    CHECK (scope IN ('cli', 'card', 'topup_cli', 'topup_card', 'topup_service'));
-- Pruning deletes by age alone.
CREATE INDEX auth_failures_at_idx ON auth_failures (at);

-- PINs are now HMAC-SHA256 under a key file outside the database
-- ('hmac-sha256$<salt>$<mac>', cardd/billing/pins.py). scrypt hashes and imported
-- plain PINs stay valid and are rehashed on their next right PIN; this view shows
-- the cards still in a legacy form (a leaked database exposes those to offline guessing).
CREATE VIEW accounts_with_legacy_pins AS
    SELECT id, username, split_part(pin_hash, '$', 1) AS scheme FROM accounts
     WHERE pin_hash IS NOT NULL AND pin_hash NOT LIKE 'hmac-sha256$%';
