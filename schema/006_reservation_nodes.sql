-- Node-aware orphan settlement (issue 12, sections 1 and 2).
--
-- Which FreeSWITCH box and which cardd process granted a reservation, so that
-- the orphan rule of one cardd never settles a call that is still up on another
-- node, and asks the right FreeSWITCH about it. Rows granted before this
-- migration have NULL here and are treated as before (any cardd may settle them).
ALTER TABLE reservations ADD COLUMN switchname text;   -- FreeSWITCH-Switchname of the A leg
ALTER TABLE reservations ADD COLUMN node text;         -- cardd_nodes.node of the granting process

-- What cardd knew about the call, written as it happened, so an estimate after a
-- crash is bounded by it: no bridge sent -> no cost; sent, never answered -> no
-- cost; answered at T -> at most the time since T, within the grant.
ALTER TABLE reservations ADD COLUMN bridge_sent_at timestamptz;
ALTER TABLE reservations ADD COLUMN answered_at timestamptz;
CREATE INDEX reservations_open_node_idx ON reservations (node) WHERE status = 'open';

-- One row per running cardd process; heartbeat_at is refreshed every
-- daemon.node_heartbeat_interval seconds. A process whose heartbeat is older than
-- three intervals (or whose pid is gone on the same host) is dead: its open
-- reservations are orphans. A clean stop deletes the row.
CREATE TABLE cardd_nodes (
    node          text PRIMARY KEY,          -- host:pid:start-time:random
    host          text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stale_after   interval NOT NULL          -- three heartbeat intervals of that process
);
