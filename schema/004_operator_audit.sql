-- What operators did (issue 10): one row per operator action that moves money or changes a
-- card's terms (`cardd reservations settle|release`, `card adjust`, plan and customer changes).
-- Written in the same transaction as the change it records, so an action either happened and
-- is audited or did not happen at all. Append-only, like the ledger.
CREATE TABLE operator_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    who         text NOT NULL CHECK (who <> ''),       -- the OS user, or --by
    action      text NOT NULL CHECK (action <> ''),    -- the command, e.g. 'reservations settle'
    args        jsonb NOT NULL DEFAULT '{}',           -- what it was given
    account_id  bigint REFERENCES accounts(id),        -- the card it touched, if any
    b_uuid      uuid,                                  -- the call it touched, if any
    detail      text NOT NULL DEFAULT ''               -- what it did, in words
);
CREATE INDEX operator_audit_account_idx ON operator_audit (account_id, id) WHERE account_id IS NOT NULL;
CREATE INDEX operator_audit_b_uuid_idx ON operator_audit (b_uuid) WHERE b_uuid IS NOT NULL;

CREATE FUNCTION operator_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the operator audit is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER operator_audit_append_only BEFORE UPDATE OR DELETE ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION operator_audit_append_only();

-- A reservation an operator closes without charging (`reservations release`, or a settle whose
-- billed seconds cost nothing) leaves a zero-amount 'release' row: the card's history shows what
-- happened, and the balance still equals the sum of its ledger.
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check
    CHECK (kind IN ('initial', 'call', 'topup', 'transfer_in', 'transfer_out', 'refund', 'adjustment', 'release'));
ALTER TABLE ledger DROP CONSTRAINT ledger_amount_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_amount_check
    CHECK (amount <> 0 OR (kind = 'release' AND b_uuid IS NOT NULL));
