-- The dedup horizon by record time (see likes_domain::DedupHorizon), and how
-- far Redis is known current.
--
-- applied_events remembers, per (item, event_id), the log time of the record
-- that applied it (record_ms: the partition's newest Kafka timestamp up to that
-- record) and its partition. Rows are pruned once their partition's log time
-- (projector_offsets.log_time_ms) passed them by the horizon, never by the wall
-- clock, so a projector outage cannot make a retry count twice. Rows written
-- before this migration keep record_ms and partition NULL: applied_at stands in
-- for their record time, and they are pruned once every partition's log time
-- passed them by the horizon. Nothing is rewritten here: the new columns are
-- nullable or have a constant default, so the migration is instant.
ALTER TABLE applied_events
    ADD COLUMN record_ms bigint,
    ADD COLUMN partition integer;

-- Rows arrive in about record-time order, like they did in applied_at order.
CREATE INDEX applied_events_by_record_time ON applied_events USING brin (record_ms);

-- log_time_ms: the partition's log time after its last applied record (NULL:
-- nothing applied since this migration). cached_until_ms: Redis holds the
-- counts of every batch whose records have a log time below it; after a claim,
-- the items applied at or after it are re-read from PostgreSQL into Redis (0:
-- every row that names the partition).
ALTER TABLE projector_offsets
    ADD COLUMN log_time_ms bigint,
    ADD COLUMN cached_until_ms bigint NOT NULL DEFAULT 0;
