-- The build in progress of `likes-replay rebuild postgres` (one per database: the
-- shadow tables user_likes_rebuild / counters_rebuild are not per topic either).
-- rebuild_runs says which topic and which start (`earliest` or `snapshot:<id>`)
-- the shadow tables were begun from; rebuild_progress holds, per partition, the
-- next offset the shadow rows reflect. Each batch writes its progress row in the
-- same transaction as its shadow rows, so a rebuild that was killed resumes
-- exactly where its last commit ended. The swap deletes the run in the same
-- transaction as the rename: a finished build never looks resumable.
CREATE TABLE rebuild_runs (
    topic       text        PRIMARY KEY,
    source      text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rebuild_progress (
    topic        text        NOT NULL REFERENCES rebuild_runs (topic) ON DELETE CASCADE,
    partition    integer     NOT NULL,
    next_offset  bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
