-- The durable projection built by the projector from the like-events topic.
-- Every primary key starts with the item (item_id, then item_type), the column the
-- topic is keyed by, so the tables shard by item with the Kafka partitions and one
-- local transaction can hold an event's rows together with its partition's offset.

-- Who likes what, now. One row per (item, user) whose latest state is "liked".
CREATE TABLE user_likes (
    item_id    bigint      NOT NULL,
    item_type  smallint    NOT NULL,
    user_id    bigint      NOT NULL,
    liked_at   timestamptz NOT NULL,
    event_id   uuid        NOT NULL,
    PRIMARY KEY (item_id, item_type, user_id)
);

-- "Does this user like this item" and "what does this user like" without a scan.
CREATE INDEX user_likes_by_user ON user_likes (user_id, item_type, item_id);

-- How many users like each item, now. last_offset is the log offset of the newest
-- event reflected in the count: the Redis projection is stamped with it so that an
-- older write can never overwrite a newer one.
CREATE TABLE counters (
    item_id     bigint      NOT NULL,
    item_type   smallint    NOT NULL,
    count       bigint      NOT NULL CHECK (count >= 0),
    last_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, item_type)
);

-- Where the projection stands in each partition, written in the same transaction as
-- the rows. epoch fences zombies: an owner bumps it when it is assigned the partition,
-- and a batch commits only while the epoch is still its own.
CREATE TABLE projector_offsets (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    next_offset  bigint      NOT NULL,
    epoch        bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
