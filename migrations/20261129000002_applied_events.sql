-- Event ids applied recently, so that the same event delivered twice (a client
-- retry that reached the log twice, far apart) is applied once. Keyed by item
-- first like every table, so it shards with the partitions; pruned after the
-- dedup horizon (DEDUP_HORIZON_SECONDS) by the projector. A BRIN index on the
-- insertion time keeps that pruning cheap: rows arrive in time order.
CREATE TABLE applied_events (
    item_id     bigint      NOT NULL,
    item_type   smallint    NOT NULL,
    event_id    uuid        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, item_type, event_id)
);

CREATE INDEX applied_events_by_time ON applied_events USING brin (applied_at);
