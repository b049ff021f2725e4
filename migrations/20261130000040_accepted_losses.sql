-- Records that were deleted from the log (retention, DeleteRecords) before the
-- projector read them. The projector never moves past such a gap on its own: it
-- parks the partition until an operator accepts the loss with
-- `likes-replay accept-loss`, which writes a row here (who, when, why, exactly
-- which offsets). The projector then moves past exactly that range, and the row
-- stays as the audit trail of every acknowledged like that is not counted.
CREATE TABLE accepted_losses (
    id           bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    partition    integer     NOT NULL CHECK (partition >= 0),
    -- The missing offsets, both ends included.
    from_offset  bigint      NOT NULL CHECK (from_offset >= 0),
    to_offset    bigint      NOT NULL CHECK (to_offset >= from_offset),
    accepted_by  text        NOT NULL CHECK (accepted_by <> ''),
    reason       text,
    accepted_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX accepted_losses_by_partition ON accepted_losses (topic, partition, from_offset);
