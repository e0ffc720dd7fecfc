-- The web console's searches at 1,000,000 cards and 10,000,000 CDRs (issue 16).

-- CDRs by destination prefix (translated_cld LIKE '44207%', newest first): a range scan of the
-- matching destinations, then a sort of only those; text_pattern_ops serves LIKE 'x%' under any
-- collation. Without it the newest-first scan filtered every CDR (1.3 s for a rare prefix).
CREATE INDEX cdrs_translated_cld_idx ON cdrs (translated_cld text_pattern_ops, id);

-- Cards by status, in id order (the pages' keyset): a rare status (blocked) no longer reads every card.
CREATE INDEX accounts_status_idx ON accounts (status, id);

-- The dashboard's last 24 hours: an index-only range scan on ended_at carrying every column the
-- figures read, instead of one heap visit per CDR of the day.
CREATE INDEX cdrs_ended_figures_idx ON cdrs (ended_at)
    INCLUDE (currency, hangup_cause, answered_at, cost, billed_seconds, account_id);
