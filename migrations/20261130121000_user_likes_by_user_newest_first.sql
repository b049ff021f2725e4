-- `GET /v1/users/{user_id}/likes` lists a user's likes newest first, a page
-- at a time after a keyset cursor (liked_at, item_type, item_id). The old
-- user_likes_by_user (user_id, item_type, item_id) served no query; this one
-- serves that listing as one backward range scan per shard, with or without
-- an item_type filter, and covers its columns (an index-only scan where the
-- visibility map allows). Same name, same role: "what this user likes".
-- A rebuild's shadow tables copy it with `LIKE ... INCLUDING ALL`.
DROP INDEX IF EXISTS user_likes_by_user;
CREATE INDEX user_likes_by_user ON user_likes (user_id, liked_at, item_type, item_id);
