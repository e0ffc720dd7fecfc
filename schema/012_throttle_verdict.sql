-- The PIN throttle's verdict in one statement (issue 14): identity.gate spends BEGIN, the
-- locks, the counts and COMMIT (four round trips, five on a failure) on every PIN. A PIN
-- check is pure (one HMAC in Python, constant time, cardd.billing.pins), so its result can
-- be sent with the attempt and the whole gate runs here, atomically, in the statement's
-- own transaction (cardd.billing.identity.verdict).
--
-- The guarantee is gate's, and the two exclude each other: the same advisory locks (class
-- lock_class, key hashtext('<scope>:<key>')), taken in one order (scope, then key, by code
-- point: Python's sort of the same strings, so gate and verdict never deadlock), held until
-- the statement's transaction commits. The counts are a statement of their own AFTER the
-- locks: a plpgsql function runs each statement on a fresh snapshot under READ COMMITTED,
-- so they see every failure committed by whoever held the locks before. A full bucket
-- refuses: its scope is returned (the first full one in lock order) and nothing is written,
-- so whatever the attempt was, it is not acted upon. Otherwise a failed attempt (ok false)
-- is recorded in every bucket, with the pruning of rows no window can count again, before
-- the locks are released; a right one is never recorded. NULL: allowed.
CREATE FUNCTION cardd_throttle_verdict(
    scopes text[], keys text[], limits integer[], window_s integer, ok boolean,
    lock_class integer, prune_after_s integer)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    bucket record;
    refused text;
BEGIN
    IF cardinality(scopes) <> cardinality(keys) OR cardinality(scopes) <> cardinality(limits) THEN
        RAISE EXCEPTION 'cardd_throttle_verdict: % scopes, % keys, % limits',
            cardinality(scopes), cardinality(keys), cardinality(limits);
    END IF;
    FOR bucket IN
        SELECT DISTINCT u.scope COLLATE "C" AS scope, u.key COLLATE "C" AS key
          FROM unnest(scopes, keys) AS u(scope, key) ORDER BY 1, 2
    LOOP
        PERFORM pg_advisory_xact_lock(lock_class, hashtext(bucket.scope || ':' || bucket.key));
    END LOOP;
    SELECT u.scope INTO refused
      FROM unnest(scopes, keys, limits) AS u(scope, key, lim)
     WHERE (SELECT count(*) FROM auth_failures f
             WHERE f.scope = u.scope AND f.key = u.key
               AND f.at > clock_timestamp() - make_interval(secs => window_s)) >= u.lim
     ORDER BY u.scope COLLATE "C", u.key COLLATE "C", u.lim
     LIMIT 1;
    IF refused IS NOT NULL THEN
        RETURN refused;
    END IF;
    IF NOT ok THEN
        INSERT INTO auth_failures (scope, key, at)
            SELECT b.scope, b.key, clock_timestamp()
              FROM (SELECT DISTINCT u.scope, u.key FROM unnest(scopes, keys) AS u(scope, key)) AS b;
        DELETE FROM auth_failures WHERE at < now() - make_interval(secs => prune_after_s);
    END IF;
    RETURN NULL;
END
$$;
