-- The grant's write and the call's settlement, each one statement (issue 14): a call used to
-- spend 16 round trips on them (BEGIN, eight statements, COMMIT twice over). The arithmetic
-- stays in Python (cardd.billing.rating, the one tariff arithmetic); these functions only take
-- the locks, check what the arithmetic assumed still holds, and write the rows, in the same
-- lock order as before (the card's account row, then the reservation or the carrier).

-- Write a reservation priced in Python from a snapshot read without locks (Ledger.grant).
-- Under the account's row lock it checks what that price assumed: the card still usable, a
-- call free under its limit, the credit (balance minus open reservations) still buying the seconds priced, the
-- plan seconds still free, the carrier under its channel limit (its row locked, as routing
-- did). Outcomes: 'ok' (written; until = the reservation's expiry), 'not_found', 'blocked',
-- 'expired', 'too_many_calls' (calls_up, calls_limit), 'carrier_full' (try the next route),
-- 'moved' (credit or plan seconds were taken meanwhile: read again and price again).
-- A B-leg UUID granted before raises unique_violation, as the INSERT did.
CREATE FUNCTION cardd_reserve(
    p_b_uuid uuid, p_a_uuid uuid, p_account bigint, p_amount numeric, p_duration integer,
    p_paid_seconds integer, p_needed numeric, p_plan_id bigint, p_plan_seconds integer, p_plan_prefix text, p_plan_minutes integer,
    p_cli text, p_cld text, p_translated_cli text, p_translated_cld text,
    p_rate_id bigint, p_rate_prefix text, p_price_1 numeric, p_interval_1 integer,
    p_price_n numeric, p_interval_n integer, p_connect_fee numeric, p_free_seconds integer,
    p_grace integer, p_margin_s integer, p_switchname text, p_node text,
    p_carrier_id bigint, p_gateway text, p_buy_prefix text, p_buy_price_1 numeric,
    p_buy_interval_1 integer, p_buy_price_n numeric, p_buy_interval_n integer,
    p_buy_connect_fee numeric, p_buy_free_seconds integer, p_buy_grace integer,
    OUT outcome text, OUT until timestamptz, OUT calls_up bigint, OUT calls_limit integer)
LANGUAGE plpgsql AS $$
DECLARE
    acct record;
    held numeric;
    plan_used bigint;
    plan_off boolean;
    channels integer;
    busy bigint;
BEGIN
    SELECT status, balance, expires_at, max_concurrent_calls, service_plan_id INTO acct
      FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    IF acct.status IN ('blocked', 'closed') THEN
        outcome := 'blocked';
        RETURN;
    END IF;
    IF acct.expires_at IS NOT NULL AND acct.expires_at <= now() THEN
        outcome := 'expired';
        RETURN;
    END IF;
    SELECT count(*), coalesce(sum(amount), 0) INTO calls_up, held
      FROM reservations WHERE account_id = p_account AND status = 'open';
    calls_limit := acct.max_concurrent_calls;
    IF calls_limit IS NOT NULL AND calls_up >= calls_limit THEN
        outcome := 'too_many_calls';
        RETURN;
    END IF;
    -- The price holds while the credit still buys the paid (non-plan) seconds priced: they
    -- cost p_needed (the connect fee left out under ignore_connect_fee), and no credit buys
    -- any (cardd.billing.rating.tariff_duration).
    IF acct.balance - held < p_needed OR (p_paid_seconds > 0 AND acct.balance - held <= 0) THEN
        outcome := 'moved';
        RETURN;
    END IF;
    IF p_plan_seconds > 0 THEN
        SELECT suspended INTO plan_off FROM service_plans WHERE id = acct.service_plan_id;
        SELECT coalesce((SELECT used_seconds FROM account_plan_usage
                          WHERE account_id = p_account AND prefix = p_plan_prefix), 0)
             + coalesce((SELECT sum(plan_seconds) FROM reservations
                          WHERE account_id = p_account AND plan_prefix = p_plan_prefix AND status = 'open'), 0)
          INTO plan_used;
        IF acct.service_plan_id IS DISTINCT FROM p_plan_id OR coalesce(plan_off, true)
           OR p_plan_minutes * 60 - plan_used < p_plan_seconds THEN
            outcome := 'moved';
            RETURN;
        END IF;
    END IF;
    IF p_carrier_id IS NOT NULL THEN
        -- Only a carrier with a channel limit is locked: the others' calls never queue on a row.
        SELECT channel_limit INTO channels FROM carriers WHERE id = p_carrier_id;
        IF channels IS NOT NULL THEN
            SELECT channel_limit INTO channels FROM carriers WHERE id = p_carrier_id FOR UPDATE;
            SELECT count(*) INTO busy FROM reservations WHERE status = 'open' AND carrier_id = p_carrier_id;
            IF busy >= channels THEN
                outcome := 'carrier_full';
                RETURN;
            END IF;
        END IF;
    END IF;
    IF acct.status = 'new' THEN
        -- Activation on first use: the validity period starts now.
        UPDATE accounts SET status = 'active', first_used_at = now(),
               expires_at = CASE WHEN valid_days IS NULL THEN expires_at
                                 ELSE now() + valid_days * interval '1 day' END
         WHERE id = p_account;
    END IF;
    until := now() + make_interval(secs => p_duration + p_margin_s);
    INSERT INTO reservations (b_uuid, a_uuid, account_id, amount, duration_s, plan_seconds, plan_prefix,
                              cli, cld, translated_cli, translated_cld, rate_id, rate_prefix, price_1,
                              interval_1, price_n, interval_n, connect_fee, free_seconds, grace, expires_at,
                              switchname, node, carrier_id, gateway, buy_prefix, buy_price_1, buy_interval_1,
                              buy_price_n, buy_interval_n, buy_connect_fee, buy_free_seconds, buy_grace)
    VALUES (p_b_uuid, p_a_uuid, p_account, p_amount, p_duration, p_plan_seconds, p_plan_prefix,
            p_cli, p_cld, p_translated_cli, p_translated_cld, p_rate_id, p_rate_prefix, p_price_1,
            p_interval_1, p_price_n, p_interval_n, p_connect_fee, p_free_seconds, p_grace, until,
            p_switchname, p_node, p_carrier_id, p_gateway, p_buy_prefix, p_buy_price_1, p_buy_interval_1,
            p_buy_price_n, p_buy_interval_n, p_buy_connect_fee, p_buy_free_seconds, p_buy_grace);
    outcome := 'ok';
END
$$;

-- Settle a call this process granted (Ledger.settle's common case), priced in Python from the
-- grant it holds: the reservation's rate, duration and plan seconds never change after the
-- grant. Under the account's row lock, then the reservation's: plan usage, the ledger debit,
-- the reservation closed and the CDR, returned. No row when the reservation is not open (a
-- repeat, an estimate to correct) or not the one priced: Ledger.settle then takes its general
-- path, which knows those cases.
CREATE FUNCTION cardd_settle_granted(
    p_b_uuid uuid, p_account bigint, p_duration integer, p_billed integer, p_cost numeric,
    p_plan_used integer, p_answered timestamptz, p_answered_ms_before_end bigint, p_ended timestamptz,
    p_cause text, p_buy_cost numeric, p_margin numeric)
RETURNS SETOF cdrs
LANGUAGE plpgsql AS $$
DECLARE
    acct record;
    res reservations;
    ended timestamptz;
    answered timestamptz;
BEGIN
    SELECT username, currency INTO acct FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO res FROM reservations WHERE b_uuid = p_b_uuid FOR UPDATE;
    IF NOT FOUND OR res.status <> 'open' OR res.account_id <> p_account OR res.duration_s <> p_duration THEN
        RETURN;
    END IF;
    ended := coalesce(p_ended, now());
    answered := p_answered;
    IF answered IS NULL AND p_billed > 0 THEN
        answered := ended - p_answered_ms_before_end * interval '1 millisecond';
    END IF;
    IF p_plan_used > 0 AND res.plan_prefix IS NOT NULL THEN
        INSERT INTO account_plan_usage (account_id, prefix, used_seconds)
        VALUES (res.account_id, res.plan_prefix, p_plan_used)
        ON CONFLICT (account_id, prefix)
        DO UPDATE SET used_seconds = account_plan_usage.used_seconds + EXCLUDED.used_seconds;
    END IF;
    IF p_cost > 0 THEN
        INSERT INTO ledger (account_id, amount, kind, b_uuid, reference)
        VALUES (res.account_id, -p_cost, 'call', p_b_uuid, res.translated_cld);
    END IF;
    UPDATE reservations SET status = 'settled', settled_at = now() WHERE b_uuid = p_b_uuid;
    RETURN QUERY
    INSERT INTO cdrs (b_uuid, a_uuid, account_id, username, currency, cli, cld, translated_cli,
                      translated_cld, rate_id, rate_prefix, started_at, answered_at, ended_at,
                      granted_seconds, billed_seconds, plan_seconds_used, cost, hangup_cause, estimated,
                      carrier_id, carrier, gateway, buy_cost, margin)
    VALUES (p_b_uuid, res.a_uuid, res.account_id, acct.username, acct.currency, res.cli, res.cld,
            res.translated_cli, res.translated_cld, res.rate_id, res.rate_prefix, res.created_at, answered,
            ended, res.duration_s, p_billed, p_plan_used, p_cost, p_cause, false, res.carrier_id,
            (SELECT name FROM carriers WHERE id = res.carrier_id), res.gateway, p_buy_cost, p_margin)
    RETURNING *;
END
$$;
