-- Snapshots of the PostgreSQL projection (`likes-replay snapshot create`): a copy
-- of counters and user_likes taken in one REPEATABLE READ transaction together
-- with the projector's offsets for the topic, so the rows reflect exactly those
-- offsets. A rebuild can start from a snapshot plus the topic past its offsets,
-- which keeps the projection rebuildable after retention dropped older events.
-- Per-item tables keep the item first in their primary keys (sharding rule).
CREATE TABLE snapshots (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    note        text
);

CREATE TABLE snapshot_counters (
    snapshot_id bigint   NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    item_id     bigint   NOT NULL,
    item_type   smallint NOT NULL,
    count       bigint   NOT NULL,
    last_offset bigint   NOT NULL,
    PRIMARY KEY (item_id, item_type, snapshot_id)
);
CREATE INDEX snapshot_counters_by_snapshot ON snapshot_counters (snapshot_id);

CREATE TABLE snapshot_user_likes (
    snapshot_id bigint      NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    item_id     bigint      NOT NULL,
    item_type   smallint    NOT NULL,
    user_id     bigint      NOT NULL,
    liked_at    timestamptz NOT NULL,
    event_id    uuid        NOT NULL,
    PRIMARY KEY (item_id, item_type, user_id, snapshot_id)
);
CREATE INDEX snapshot_user_likes_by_snapshot ON snapshot_user_likes (snapshot_id);

CREATE TABLE snapshot_offsets (
    snapshot_id bigint  NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (snapshot_id, partition)
);
