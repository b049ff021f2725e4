-- Which slice of a topic's partitions this database holds (infra/src/postgres/shards.rs).
-- Written once, when a process first meets the database with its map; every
-- process compares its own map with it at start and refuses to run on a
-- difference, since rows of partitions this shard does not own would never be
-- read again (and offsets of partitions it does own would be missed).
CREATE TABLE shard_map (
    topic text PRIMARY KEY,
    shard integer NOT NULL,
    shards integer NOT NULL,
    -- NULL when written by a one-shard process that had no need to ask Kafka.
    partitions integer,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK (shards >= 1 AND shard >= 0 AND shard < shards),
    CHECK (partitions IS NULL OR partitions >= shards)
);
