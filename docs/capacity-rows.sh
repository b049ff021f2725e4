#!/usr/bin/env bash
# Measures the per-row, per-key and per-event sizes and costs that docs/capacity.md is built on:
#
#   1. PostgreSQL: a fresh scratch database with the project's migrations, user_likes filled with
#      ROWS realistic rows (Zipf-ish items, many uniform users, inserted in random key order as the
#      projector would), counters with the matching per-item counts, applied_events with APPLIED
#      rows; VACUUM ANALYZE; bytes per row of the heap and of each index.
#      Then the projector's write path (the statements of infra/src/postgres/{writer,changes}.rs, one
#      transaction per batch) on top of that: backend CPU µs and WAL bytes per event, by statement;
#      and the ingest's optimistic lookup (reads::states) per pair at a few batch sizes.
#      Then REINDEX and the sizes again (freshly built = densest indexes). The database is dropped.
#   2. Redis: memory per cached count key, per recent-likers sorted-set entry, per dedup memo and
#      per rate-limit bucket (GCRA), written with the real key shapes and the real Lua scripts (read from
#      infra/src/redis/{counts,ratelimit,dedup,admission}.rs), and Redis CPU per command: a single
#      like's protections both as two scripts (token bucket, recall) and as the one the ingest
#      sends when both are on (admission), a batch event's the same way (token bucket and mark, or
#      admit_marks), then the settle after the ack.
#   3. Kafka: the Avro value and record size computed from schemas/like_event.avsc, and, when the
#      broker's log directory is readable, bytes per record actually on disk by batch size.
#
# Usage: docs/capacity-rows.sh            (from anywhere; about 2-4 minutes on the 2-core dev box)
# Environment (defaults in brackets):
#   PARTS [postgres,redis,kafka]  which of the three parts to run (PARTS=redis: Redis alone)
#   DATABASE_URL [postgres://likes:likes@127.0.0.1:5432/likes]  any database on the server; the
#                script creates and drops its own scratch database next to it (needs CREATEDB).
#                Backend CPU per statement is read from /proc/self/stat through pg_read_file,
#                which needs a superuser (or pg_read_server_files); without it the CPU column is blank.
#   ROWS [2000000] ITEMS [200000] USERS [500000000] APPLIED [1000000]
#   BATCHES [20] BATCH [10000]    projector write-path batches x events per batch (3 in 4 likes)
#   REDIS_MODE [private|shared]   private (default when redis-server is installed): a throwaway
#                redis-server on REDIS_PRIVATE_PORT [6399], so other clients cannot blur
#                used_memory; shared: REDIS_HOST [127.0.0.1] REDIS_PORT [6379], keys under the
#                scratch prefix "capac:" (deleted afterwards).
#   REDIS_KEYS [100000]           keys per Redis measurement
#   KAFKA_LOG_DIR [<repo>/.stack/data/kafka]  skipped when absent or python3 is missing
#   FREE_GB_MIN [3]               refuse to fill when a local server's data directory has less free
#                space (GB); lower it for a small run (e.g. ROWS=20000 ... FREE_GB_MIN=1)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
DATABASE_URL=${DATABASE_URL:-postgres://likes:likes@127.0.0.1:5432/likes}
ROWS=${ROWS:-2000000}
ITEMS=${ITEMS:-200000}
USERS=${USERS:-500000000}
APPLIED=${APPLIED:-1000000}
BATCHES=${BATCHES:-20}
BATCH=${BATCH:-10000}
REDIS_KEYS=${REDIS_KEYS:-100000}
PARTS=${PARTS:-postgres,redis,kafka}
REDIS_PRIVATE_PORT=${REDIS_PRIVATE_PORT:-6399}
KAFKA_LOG_DIR=${KAFKA_LOG_DIR:-$here/.stack/data/kafka}
if [[ -z ${REDIS_MODE:-} ]]; then
  if command -v redis-server >/dev/null; then REDIS_MODE=private; else REDIS_MODE=shared; fi
fi

scratch_db="likes_capacity_$$_${RANDOM}"
url_noq=${DATABASE_URL%%\?*}
url_q=${DATABASE_URL#"$url_noq"}
SCRATCH_URL="${url_noq%/*}/${scratch_db}${url_q}"
tmp=$(mktemp -d)
redis_pid=""

cleanup() {
  set +e
  psql -X -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS ${scratch_db} WITH (FORCE)" >/dev/null 2>&1
  if [[ -n $redis_pid ]]; then
    kill "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

section() { printf '\n## %s\n\n' "$*"; }
pg() { psql -X -q -v ON_ERROR_STOP=1 -P pager=off "$@"; }
want() { [[ ,$PARTS, == *,$1,* ]]; }

echo "# capacity-rows.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -n)"
echo "PARTS=$PARTS ROWS=$ROWS ITEMS=$ITEMS USERS=$USERS APPLIED=$APPLIED BATCHES=$BATCHES BATCH=$BATCH REDIS_MODE=$REDIS_MODE REDIS_KEYS=$REDIS_KEYS"
if want postgres; then
pg "$DATABASE_URL" -Atc "SELECT version()"

# The scratch data (~0.6 GB at the defaults) and its WAL (~1.5 GB before checkpoints recycle it)
# land on the server's disk: refuse when a local server's data directory has too little room.
datadir=$(pg "$DATABASE_URL" -Atc "SHOW data_directory" 2>/dev/null || true)
if [[ -n $datadir && -d $datadir ]]; then
  free_kb=$(df -Pk "$datadir" | awk 'NR == 2 { print $4 }')
  if (( free_kb < ${FREE_GB_MIN:-3} * 1024 * 1024 )); then
    echo "only $(( free_kb / 1024 )) MB free under $datadir (FREE_GB_MIN=${FREE_GB_MIN:-3}); not filling" >&2
    exit 1
  fi
fi

# ---------------------------------------------------------------- PostgreSQL: schema and fill
section "PostgreSQL: scratch database ${scratch_db}, migrations, fill"
pg "$DATABASE_URL" -c "CREATE DATABASE ${scratch_db}"
for f in "$here"/migrations/*.sql; do
  echo "migration $(basename "$f")"
  pg "$SCRATCH_URL" -f "$f" >/dev/null
done

start=$(date +%s)
# Items: rank r drawn log-uniformly in [1, ITEMS] (P(r) ~ 1/r, i.e. Zipf s = 1: a few very hot
# items, a long tail), scattered over a 10-billion id space by a multiplicative hash (9999999967
# is prime, so distinct ranks keep distinct ids); one item in ten has item_type 2. Users uniform
# in [1, USERS]. Rows go in generation order, which is random key order for both indexes, so the
# B-trees grow by page splits exactly like the projector's inserts make them grow.
pg "$SCRATCH_URL" -v rows="$ROWS" -v items="$ITEMS" -v users="$USERS" -v applied="$APPLIED" <<'SQL'
\timing on
INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id)
SELECT (r * 2654435761 % 9999999967) + 1, (1 + (r % 10 = 0)::int)::smallint, u,
       now() - random() * interval '400 days', gen_random_uuid()
FROM (SELECT floor(exp(random() * ln(:items)))::bigint AS r,
             1 + floor(random() * :users)::bigint AS u
      FROM generate_series(1, :rows) AS g) AS s
ON CONFLICT DO NOTHING;

-- One counter per liked item, inserted in random key order (as new items appear).
INSERT INTO counters (item_id, item_type, count, last_offset, updated_at)
SELECT item_id, item_type, n, (random() * 1e9)::bigint, at
FROM (SELECT item_id, item_type, count(*) AS n, max(liked_at) AS at
      FROM user_likes GROUP BY item_id, item_type) AS c
ORDER BY md5(item_id::text || ':' || item_type);

-- The dedup window: one row per applied event over the last hour, in time order.
INSERT INTO applied_events (item_id, item_type, event_id, applied_at)
SELECT (r * 2654435761 % 9999999967) + 1, (1 + (r % 10 = 0)::int)::smallint, gen_random_uuid(),
       now() - interval '1 hour' + g * (interval '1 hour' / :applied)
FROM (SELECT floor(exp(random() * ln(:items)))::bigint AS r, g
      FROM generate_series(1, :applied) AS g) AS s;

INSERT INTO projector_offsets (topic, partition, next_offset, epoch)
SELECT 'like-events', p, 0, 1 FROM generate_series(0, 63) AS p;
SQL
pg "$SCRATCH_URL" -c "VACUUM ANALYZE user_likes" -c "VACUUM ANALYZE counters" \
  -c "VACUUM ANALYZE applied_events" -c "VACUUM ANALYZE projector_offsets"
echo "fill + vacuum: $(( $(date +%s) - start )) s"

pg "$SCRATCH_URL" <<'SQL'
SELECT count(*) AS user_likes_rows, count(DISTINCT (item_id, item_type)) AS items,
       count(DISTINCT user_id) AS users,
       round(count(*)::numeric / count(DISTINCT (item_id, item_type)), 1) AS likes_per_item
FROM user_likes;
SELECT item_id, item_type, count FROM counters ORDER BY count DESC LIMIT 3;
SQL

# Sizes: bytes per row of the heap (main fork), of each index, of all indexes, and of the whole
# relation (pg_total_relation_size: heap + indexes + FSM/VM + TOAST).
cat >"$tmp/sizes.sql" <<'SQL'
CREATE TEMP TABLE cap_rows AS
SELECT 'user_likes'::regclass AS rel, count(*) AS n FROM user_likes
UNION ALL SELECT 'counters'::regclass, count(*) FROM counters
UNION ALL SELECT 'applied_events'::regclass, count(*) FROM applied_events;
SELECT r.rel::text AS relation, p.part, r.n AS rows, p.bytes,
       pg_size_pretty(p.bytes) AS size, round(p.bytes::numeric / r.n, 1) AS bytes_per_row
FROM cap_rows AS r
CROSS JOIN LATERAL (
  SELECT 1 AS o, 'heap' AS part, pg_relation_size(r.rel) AS bytes
  UNION ALL
  SELECT 2, 'index ' || i.indexrelid::regclass::text, pg_relation_size(i.indexrelid)
  FROM pg_index AS i WHERE i.indrelid = r.rel
  UNION ALL SELECT 3, 'all indexes (pg_indexes_size)', pg_indexes_size(r.rel)
  UNION ALL SELECT 4, 'total (pg_total_relation_size)', pg_total_relation_size(r.rel)
) AS p
ORDER BY r.rel::text DESC, p.o, p.part;
SELECT relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables
WHERE relname IN ('user_likes', 'counters', 'applied_events') ORDER BY relname DESC;
SQL
section "PostgreSQL: bytes per row, indexes as grown by random-order inserts (steady state)"
pg "$SCRATCH_URL" -f "$tmp/sizes.sql"

# ---------------------------------------------------------------- PostgreSQL: write path
section "PostgreSQL: projector write path, $BATCHES batches x $BATCH events (3 in 4 likes), one transaction each"
cat <<'EOF'
Each statement runs under EXPLAIN (ANALYZE, WAL, TIMING OFF) so its WAL is counted for this
backend alone; backend CPU is read from /proc/self/stat (10 ms ticks) around each statement.
Events come from a staging table (index on batch) instead of bound arrays; the counters insert
probes for existing rows itself (the real writer knows them from the UPDATE's RETURNING); the
inserted/deleted keys go to a temp table. These extras make the figures slightly pessimistic.
EOF
pg "$SCRATCH_URL" -v nb="$BATCHES" -v bs="$BATCH" -v items="$ITEMS" -v users="$USERS" <<'SQL'
CREATE FUNCTION cap_ticks() RETURNS bigint LANGUAGE sql AS $$
  SELECT split_part(s, ' ', 12)::bigint + split_part(s, ' ', 13)::bigint
  FROM (SELECT substr(f, strpos(f, ') ') + 2) AS s
        FROM (SELECT pg_read_file('/proc/self/stat') AS f) AS a) AS b $$;
DO $$ BEGIN PERFORM cap_ticks();
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'no CPU figures: pg_read_file(/proc/self/stat) failed: %', SQLERRM;
  CREATE OR REPLACE FUNCTION cap_ticks() RETURNS bigint LANGUAGE sql AS 'SELECT NULL::bigint';
END $$;

CREATE TABLE cap_steps (ord int, step text PRIMARY KEY, events bigint DEFAULT 0, ticks bigint DEFAULT 0,
                        wal_records bigint DEFAULT 0, wal_fpi bigint DEFAULT 0, wal_bytes numeric DEFAULT 0);
INSERT INTO cap_steps (ord, step) VALUES
  (1, 'UPDATE projector_offsets (8 partitions, fenced by epoch)'),
  (2, 'INSERT applied_events ON CONFLICT DO NOTHING RETURNING'),
  (3, 'INSERT user_likes ON CONFLICT DO NOTHING RETURNING'),
  (4, 'DELETE user_likes USING ... RETURNING'),
  (5, 'UPDATE counters by per-item delta RETURNING'),
  (6, 'INSERT counters (new items) RETURNING'),
  (7, 'COMMIT');

CREATE FUNCTION cap_run(p_step text, p_sql text, p_events bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 bigint; t1 bigint; j json; p json;
BEGIN
  t0 := cap_ticks();
  EXECUTE 'EXPLAIN (ANALYZE, WAL, TIMING OFF, COSTS OFF, SUMMARY OFF, FORMAT JSON) ' || p_sql INTO j;
  t1 := cap_ticks();
  p := j -> 0 -> 'Plan';
  UPDATE cap_steps SET events = events + p_events, ticks = ticks + coalesce(t1 - t0, 0),
         wal_records = wal_records + coalesce((p ->> 'WAL Records')::bigint, 0),
         wal_fpi = wal_fpi + coalesce((p ->> 'WAL FPI')::bigint, 0),
         wal_bytes = wal_bytes + coalesce((p ->> 'WAL Bytes')::numeric, 0)
  WHERE step LIKE p_step || '%';
END $$;

CREATE PROCEDURE cap_write_path(nbatches int) LANGUAGE plpgsql AS $$
DECLARE b int; n bigint; t0 bigint; t1 bigint; agg text;
BEGIN
  FOR b IN 1..nbatches LOOP
    SELECT count(*) INTO n FROM cap_stage WHERE batch = b;
    TRUNCATE cap_moved;
    PERFORM cap_run('UPDATE projector_offsets', format(
      'UPDATE projector_offsets AS o SET next_offset = o.next_offset + 1250, updated_at = now()
         FROM unnest(ARRAY[%s]::int[]) AS v(partition)
        WHERE o.topic = %L AND o.partition = v.partition AND o.epoch = 1 RETURNING o.partition',
      (SELECT string_agg(((b * 8 + i) % 64)::text, ',') FROM generate_series(0, 7) AS i),
      'like-events'), n);
    PERFORM cap_run('INSERT applied_events', format(
      'INSERT INTO applied_events (item_id, item_type, event_id)
       SELECT item_id, item_type, event_id FROM cap_stage WHERE batch = %s
       ON CONFLICT DO NOTHING RETURNING event_id', b), n);
    PERFORM cap_run('INSERT user_likes', format(
      'WITH ins AS (
         INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id)
         SELECT item_id, item_type, user_id, at, event_id FROM cap_stage
          WHERE batch = %s AND liked ORDER BY item_id, item_type, user_id
         ON CONFLICT DO NOTHING RETURNING item_id, item_type)
       INSERT INTO cap_moved SELECT item_id, item_type, 1 FROM ins', b), n);
    PERFORM cap_run('DELETE user_likes', format(
      'WITH del AS (
         DELETE FROM user_likes AS u
          USING (SELECT item_id, item_type, user_id FROM cap_stage WHERE batch = %s AND NOT liked) AS v
          WHERE u.item_id = v.item_id AND u.item_type = v.item_type AND u.user_id = v.user_id
         RETURNING u.item_id, u.item_type)
       INSERT INTO cap_moved SELECT item_id, item_type, -1 FROM del', b), n);
    agg := format('(SELECT item_id, item_type, sum(delta) AS delta, %s::bigint AS off FROM cap_moved
                     GROUP BY item_id, item_type HAVING sum(delta) <> 0)', b * 100000);
    PERFORM cap_run('UPDATE counters', format(
      'UPDATE counters AS c SET count = c.count + v.delta,
              last_offset = GREATEST(c.last_offset, v.off), updated_at = now()
         FROM %s AS v
        WHERE c.item_id = v.item_id AND c.item_type = v.item_type
       RETURNING c.item_id, c.item_type, c.count, c.last_offset', agg), n);
    PERFORM cap_run('INSERT counters', format(
      'INSERT INTO counters (item_id, item_type, count, last_offset)
       SELECT v.item_id, v.item_type, v.delta, v.off FROM %s AS v
        WHERE NOT EXISTS (SELECT 1 FROM counters AS c
                           WHERE c.item_id = v.item_id AND c.item_type = v.item_type)
       RETURNING item_id, item_type, count, last_offset', agg), n);
    t0 := cap_ticks();
    COMMIT;
    t1 := cap_ticks();
    UPDATE cap_steps SET events = events + n, ticks = ticks + coalesce(t1 - t0, 0) WHERE step = 'COMMIT';
    COMMIT;
  END LOOP;
END $$;

-- Staging (not measured): 3 in 4 events like (Zipf item, random user: a new row), 1 in 4
-- unlike an existing row (sampled uniformly over rows, so hot items get more unlikes).
CREATE TEMP TABLE cap_moved (item_id bigint, item_type smallint, delta int);
CREATE TEMP TABLE cap_stage AS
SELECT 1 + (g % :nb) AS batch, (r * 2654435761 % 9999999967) + 1 AS item_id,
       (1 + (r % 10 = 0)::int)::smallint AS item_type, u AS user_id, now() AS at,
       gen_random_uuid() AS event_id, true AS liked
FROM (SELECT g, floor(exp(random() * ln(:items)))::bigint AS r, 1 + floor(random() * :users)::bigint AS u
      FROM generate_series(1, (:nb * :bs * 3) / 4) AS g) AS s
UNION ALL
SELECT 1 + ((row_number() OVER ()) % :nb), item_id, item_type, user_id, now(), gen_random_uuid(), false
FROM (SELECT item_id, item_type, user_id FROM user_likes ORDER BY random() LIMIT (:nb * :bs) / 4) AS x;
CREATE INDEX ON cap_stage (batch);
ANALYZE cap_stage;

\timing on
CALL cap_write_path(:nb);
\timing off

SELECT ord, step, events,
       CASE WHEN cap_ticks() IS NULL THEN NULL ELSE round(ticks * 10000.0 / events, 2) END AS cpu_us_per_event,
       round(wal_records::numeric / events, 2) AS wal_records_per_event,
       round(wal_fpi::numeric / events, 3) AS fpi_per_event,
       round(wal_bytes / events, 1) AS wal_bytes_per_event
FROM cap_steps
UNION ALL
SELECT 99, 'total', max(events),
       CASE WHEN cap_ticks() IS NULL THEN NULL ELSE round(sum(ticks) * 10000.0 / max(events), 2) END,
       round(sum(wal_records)::numeric / max(events), 2), round(sum(wal_fpi)::numeric / max(events), 3),
       round(sum(wal_bytes) / max(events), 1)
FROM cap_steps
ORDER BY 1;
SELECT (SELECT count(*) FROM cap_moved) AS last_batch_moved_rows,
       (SELECT count(DISTINCT (item_id, item_type)) FROM cap_moved) AS last_batch_items_moved;
SQL

section "PostgreSQL: the ingest's optimistic lookup (reads::states), backend CPU per (user, item) pair"
pg "$SCRATCH_URL" -v items="$ITEMS" -v users="$USERS" <<'SQL'
-- The statement of infra/src/store/reads.rs::states, static in PL/pgSQL (a cached plan, like
-- sqlx's prepared statements). Pairs: Zipf items; 3 in 4 with a random user (not liked yet),
-- 1 in 4 an existing row (already liked).
CREATE FUNCTION cap_lookups(p_batch int, p_total int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE ids bigint[]; types smallint[]; users bigint[]; t0 bigint; t bigint := 0; s bigint; i int;
BEGIN
  FOR i IN 1..(p_total / p_batch) LOOP
    SELECT l.ids, l.types, l.users INTO ids, types, users FROM cap_lk AS l
     WHERE l.size = p_batch AND l.k = i;
    t0 := cap_ticks();
    SELECT sum(q.count + q.liked::int) INTO s FROM (
      SELECT v.ord, COALESCE(c.count, 0) AS count, u.user_id IS NOT NULL AS liked
      FROM UNNEST(ids, types, users) WITH ORDINALITY AS v(item_id, item_type, user_id, ord)
      LEFT JOIN counters AS c ON c.item_id = v.item_id AND c.item_type = v.item_type
      LEFT JOIN user_likes AS u
        ON u.item_id = v.item_id AND u.item_type = v.item_type AND u.user_id = v.user_id) AS q;
    t := t + (cap_ticks() - t0);
  END LOOP;
  RETURN round(t * 10000.0 / p_total, 2);
END $$;
CREATE TEMP TABLE cap_pairs AS
SELECT row_number() OVER () AS n, * FROM (
  SELECT (r * 2654435761 % 9999999967) + 1 AS item_id, (1 + (r % 10 = 0)::int)::smallint AS item_type,
         1 + floor(random() * :users)::bigint AS user_id
  FROM (SELECT floor(exp(random() * ln(:items)))::bigint AS r FROM generate_series(1, 49152)) AS s
  UNION ALL
  (SELECT item_id, item_type, user_id FROM user_likes ORDER BY random() LIMIT 16384)) AS x
ORDER BY random();
CREATE TEMP TABLE cap_lk AS
SELECT b.size, (p.n - 1) / b.size + 1 AS k, array_agg(p.item_id) AS ids,
       array_agg(p.item_type) AS types, array_agg(p.user_id) AS users
FROM (VALUES (16), (64), (512)) AS b(size) CROSS JOIN cap_pairs AS p
WHERE p.n <= 65536 GROUP BY 1, 2;
SELECT size AS pairs_per_query, 65536 AS pairs, cap_lookups(size, 65536) AS cpu_us_per_pair
FROM (VALUES (16), (64), (512)) AS b(size);
SQL

section "PostgreSQL: bytes per row after REINDEX + VACUUM (freshly built indexes: the densest they get)"
pg "$SCRATCH_URL" -c "REINDEX TABLE user_likes" -c "REINDEX TABLE counters" -c "REINDEX TABLE applied_events" \
  -c "VACUUM ANALYZE user_likes" -c "VACUUM ANALYZE counters" -c "VACUUM ANALYZE applied_events"
pg "$SCRATCH_URL" -f "$tmp/sizes.sql"
pg "$DATABASE_URL" -c "DROP DATABASE ${scratch_db} WITH (FORCE)"
echo "scratch database dropped"
fi # want postgres

# ---------------------------------------------------------------- Redis
if want redis; then
section "Redis: memory and CPU per key of the real shapes"
if [[ $REDIS_MODE == private ]]; then
  if redis-cli -h 127.0.0.1 -p "$REDIS_PRIVATE_PORT" PING >/dev/null 2>&1; then
    echo "port $REDIS_PRIVATE_PORT is taken; set REDIS_PRIVATE_PORT" >&2
    exit 1
  fi
  redis-server --port "$REDIS_PRIVATE_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$tmp" --logfile "$tmp/redis.log" &
  redis_pid=$!
  RH=127.0.0.1 RP=$REDIS_PRIVATE_PORT
  for _ in $(seq 50); do redis-cli -h $RH -p $RP PING >/dev/null 2>&1 && break; sleep 0.1; done
  echo "private redis-server (pid $redis_pid) on port $RP, default configuration"
else
  RH=${REDIS_HOST:-127.0.0.1} RP=${REDIS_PORT:-6379}
  echo "shared Redis at $RH:$RP, scratch prefix capac: (other clients may blur used_memory)"
fi
rc() { redis-cli -h "$RH" -p "$RP" "$@"; }
rc INFO server | grep -E '^redis_version' | tr -d '\r'
for k in zset-max-listpack-entries zset-max-listpack-value hash-max-listpack-entries; do
  printf '%s %s\n' "$k" "$(rc CONFIG GET "$k" | tail -1)"
done
mem() { rc INFO memory | awk -F: '/^used_memory:/ { gsub("\r", ""); print $2 }'; }
cpu() { rc INFO cpu | awk -F: '/^used_cpu_(sys|user):/ { gsub("\r", ""); s += $2 } END { printf "%.6f", s }'; }
# Lua bodies straight from the source, so the measured scripts are the deployed ones (a script
# built of parts is loaded as the ingest builds it: the parts' texts one after the other).
lua() { awk -v name="$2" '$0 ~ "const " name ": &str = r#\"" { on = 1; next } on && /^"#;/ { exit } on { print }' "$here/$1"; }
r=infra/src/redis
set_if_newer=$(lua $r/counts.rs SET_IF_NEWER)
take=$(lua $r/ratelimit.rs TAKE)
token_bucket="$take
$(lua $r/ratelimit.rs TOKEN_BUCKET)"
mark_fn=$(lua $r/dedup.rs MARK_FN)
recall_fn=$(lua $r/dedup.rs RECALL_FN)
recall="$mark_fn
$recall_fn
$(lua $r/dedup.rs RECALL)"
mark="$mark_fn
$(lua $r/dedup.rs MARK)"
settle=$(lua $r/dedup.rs SETTLE)
admission="$take
$mark_fn
$recall_fn
$(lua $r/admission.rs ADMIT)"
admit_marks="$take
$mark_fn
$(lua $r/admission.rs ADMIT_MARKS)"
for body in "$set_if_newer" "$take" "$mark_fn" "$recall_fn" "$settle" "$(lua $r/admission.rs ADMIT)" \
  "$(lua $r/dedup.rs MARK)" "$(lua $r/admission.rs ADMIT_MARKS)"; do
  [[ -n $body ]] || { echo "Lua scripts not found in $r" >&2; exit 1; }
done
sha_count=$(rc SCRIPT LOAD "$set_if_newer")
sha_rate=$(rc SCRIPT LOAD "$token_bucket")
sha_recall=$(rc SCRIPT LOAD "$recall")
sha_settle=$(rc SCRIPT LOAD "$settle")
sha_admit=$(rc SCRIPT LOAD "$admission")
sha_mark=$(rc SCRIPT LOAD "$mark")
sha_admit_marks=$(rc SCRIPT LOAD "$admit_marks")
# RESP for redis-cli --pipe: each input line is one command, arguments separated by spaces.
# (The generators print integers with %.0f: mawk's %d stops at 2^31.)
resp() { awk '{ printf "*%d\r\n", NF; for (i = 1; i <= NF; i++) printf "$%d\r\n%s\r\n", length($i), $i }'; }
printf '\n%-52s %8s %9s %12s %12s %13s\n' measurement keys entries "bytes/key" "bytes/entry" "cpu us/cmd"
measure() { # label keys entries generator...
  local label=$1 keys=$2 entries=$3; shift 3
  local m0 c0 m1 c1 lines
  "$@" >"$tmp/cmds"
  lines=$(wc -l <"$tmp/cmds")
  resp <"$tmp/cmds" >"$tmp/cmds.resp"
  sleep 1; m0=$(mem); c0=$(cpu)
  rc --pipe <"$tmp/cmds.resp" >"$tmp/pipe.out" 2>&1
  grep -q 'errors: 0,' "$tmp/pipe.out" || { echo "redis-cli --pipe failed for $label:" >&2; cat "$tmp/pipe.out" >&2; exit 1; }
  sleep 1; m1=$(mem); c1=$(cpu)
  awk -v l="$label" -v k="$keys" -v e="$entries" -v m0="$m0" -v m1="$m1" -v c0="$c0" -v c1="$c1" -v n="$lines" \
    'BEGIN { printf "%-52s %8d %9d %12.1f %12s %13.2f\n", l, k, e, (m1 - m0) / k,
             (e > 0 ? sprintf("%.1f", (m1 - m0) / e) : "-"), (c1 - c0) * 1e6 / n }'
}
gen_counts() { # EVALSHA of cache.rs's script: "<count>:<stamp>" under capac:count:<type>:<10-digit id>
  awk -v n="$REDIS_KEYS" -v sha="$sha_count" 'BEGIN { srand(7); for (i = 1; i <= n; i++) {
    id = 1000000000 + (i * 7919) % 8999999999; c = int(exp(rand() * log(100000)));
    printf "EVALSHA %s 1 capac:count:1:%.0f %.0f %.0f\n", sha, id, c, 1000000000 + int(rand() * 90000000000) } }'
}
gen_likers() { # sets members base: ZADD + ZREMRANGEBYRANK per liker, as likers.rs writes them
  awk -v sets="$1" -v m="$2" -v base="$3" 'BEGIN { srand(11); for (s = 1; s <= sets; s++) for (j = 1; j <= m; j++) {
    key = sprintf("capac:likers:1:%.0f", base + s * 7919);
    printf "ZADD %s %.0f %.0f\n", key, 1764400000000 + int(rand() * 1e9), 100000000 + int(rand() * 900000000);
    printf "ZREMRANGEBYRANK %s 0 -101\n", key } }'
}
gen_rate() { # ratelimit.rs token bucket (rate 0.01/s so the buckets outlive the measurement)
  awk -v n="$REDIS_KEYS" -v sha="$sha_rate" 'BEGIN { for (i = 1; i <= n; i++)
    printf "EVALSHA %s 1 capac:bucket:{%.0f} 0.01 40 1\n", sha, 100000000 + i * 7 }'
}
# A like's memo: capac:dedup:{user}:1:item for REDIS_KEYS users (base) on item 1000000000 + user,
# window 2 s and hold 32 s as the defaults give (DEDUP_WINDOW_MS, PRODUCE_TIMEOUT_MS + 30 s).
gen_recall() { # dedup.rs recall of a pair never seen: marks it
  awk -v n="$REDIS_KEYS" -v sha="$sha_recall" -v base="$1" 'BEGIN { for (i = 1; i <= n; i++) { u = base + i * 7;
    printf "EVALSHA %s 1 capac:dedup:{%.0f}:1:%.0f LIKE 2000 32000\n", sha, u, 1000000000 + u } }'
}
gen_admit() { # admission.rs: the token, then the recall, in one script
  awk -v n="$REDIS_KEYS" -v sha="$sha_admit" -v base="$1" 'BEGIN { for (i = 1; i <= n; i++) { u = base + i * 7;
    printf "EVALSHA %s 2 capac:bucket:{%.0f} capac:dedup:{%.0f}:1:%.0f 0.01 40 LIKE 2000 32000\n", sha, u, u, 1000000000 + u } }'
}
gen_mark() { # dedup.rs mark of a batch event's publish (dedup alone on)
  awk -v n="$REDIS_KEYS" -v sha="$sha_mark" -v base="$1" 'BEGIN { for (i = 1; i <= n; i++) { u = base + i * 7;
    printf "EVALSHA %s 1 capac:dedup:{%.0f}:1:%.0f 32000\n", sha, u, 1000000000 + u } }'
}
gen_admit_marks() { # admission.rs for a batch: one user's token and mark, one event of the user (as most are)
  awk -v n="$REDIS_KEYS" -v sha="$sha_admit_marks" -v base="$1" 'BEGIN { for (i = 1; i <= n; i++) { u = base + i * 7;
    printf "EVALSHA %s 2 capac:bucket:{%.0f} capac:dedup:{%.0f}:1:%.0f 0.01 40 32000\n", sha, u, u, 1000000000 + u } }'
}
gen_settle() { # dedup.rs settle of the marked publish's ack (as the ingest sends it after the ack)
  awk -v n="$REDIS_KEYS" -v sha="$sha_settle" -v base="$1" 'BEGIN { srand(13); for (i = 1; i <= n; i++) { u = base + i * 7;
    printf "EVALSHA %s 1 capac:dedup:{%.0f}:1:%.0f ack 1 2000 32000 LIKE %.0f %.0f %08x-%04x-7%03x-%04x-%04x%08x\n",
      sha, u, 1000000000 + u, int(rand() * 64), 1000000000 + int(rand() * 9e9), int(rand() * 4294967295),
      int(rand() * 65535), int(rand() * 4095), 32768 + int(rand() * 16383), int(rand() * 65535), int(rand() * 4294967295) } }'
}
measure "count key (EVALSHA set-if-newer)" "$REDIS_KEYS" 0 gen_counts
measure "likers set, 100 members (the kept maximum)" $(( REDIS_KEYS / 100 )) "$REDIS_KEYS" gen_likers $(( REDIS_KEYS / 100 )) 100 2000000000
measure "likers set, 10 members (seed average: 10 likes/item)" $(( REDIS_KEYS / 10 )) "$REDIS_KEYS" gen_likers $(( REDIS_KEYS / 10 )) 10 3000000000
measure "rate-limit bucket (EVALSHA token bucket)" "$REDIS_KEYS" 0 gen_rate
measure "dedup recall, marking (EVALSHA recall)" "$REDIS_KEYS" 0 gen_recall 200000000
measure "token + recall in one (EVALSHA admission)" "$REDIS_KEYS" 0 gen_admit 300000000
measure "batch event's mark (EVALSHA mark)" "$REDIS_KEYS" 0 gen_mark 400000000
measure "batch user's token + mark in one (EVALSHA admit_marks)" "$REDIS_KEYS" 0 gen_admit_marks 500000000
measure "dedup settle of an ack (EVALSHA settle)" "$REDIS_KEYS" 0 gen_settle 200000000
measure "dedup settle after the admission (EVALSHA settle)" "$REDIS_KEYS" 0 gen_settle 300000000
printf '(a protected like: token bucket + recall + settle as three scripts, or admission + settle as two;\n'
printf ' a protected batch event of its own user: token bucket + mark + settle, or admit_marks + settle;\n'
printf ' bytes/key: the recall row a mark alone, the admission row a bucket and a mark; not the settle\n'
printf ' rows, whose memos expire 2 s after their settle, some before the reading)\n'
printf '(likers: the 10-member row is written over fresh keys; the cpu column is per ZADD or ZREMRANGEBYRANK)\n'
rc OBJECT ENCODING "capac:likers:1:$(( 2000000000 + 7919 ))" | sed 's/^/likers set encoding: /'
if [[ $REDIS_MODE == shared ]]; then
  rc --scan --pattern 'capac:*' | xargs -r -n 1000 redis-cli -h "$RH" -p "$RP" UNLINK >/dev/null
  echo "scratch keys deleted"
fi
fi # want redis

# ---------------------------------------------------------------- Kafka
if want kafka; then
section "Kafka: the event on the wire, from schemas/like_event.avsc"
varint() { local z=$1 n=1; while (( z >= 128 )); do z=$(( z >> 7 )); n=$(( n + 1 )); done; echo $n; }
zz() { varint $(( $1 * 2 )); } # Avro long/int and Kafka record varints are zigzag: 2n for n >= 0
user=1000000000 item=9876543210 ts=1764400000000
f_uuid=$(( $(zz 36) + 36 )); f_user=$(zz $user); f_item=$(zz $item); f_type=$(zz 1); f_action=$(zz 0); f_ts=$(zz $ts)
avro=$(( f_uuid + f_user + f_item + f_type + f_action + f_ts ))
value=$(( 5 + avro ))
key=${#item}
printf '%-34s %-28s %s\n' field "value assumed" bytes
printf '%-34s %-28s %s\n' "Confluent header" "magic 0 + schema id (int32)" 5
printf '%-34s %-28s %s\n' "event_id (string, uuid)" "36 chars" "$f_uuid = 1 length + 36"
printf '%-34s %-28s %s\n' "user_id (long, zigzag varint)" "$user" "$f_user"
printf '%-34s %-28s %s\n' "item_id (long)" "$item (10^10 items)" "$f_item"
printf '%-34s %-28s %s\n' "item_type (int)" 1 "$f_type"
printf '%-34s %-28s %s\n' "action (enum index)" LIKE "$f_action"
printf '%-34s %-28s %s\n' "timestamp (long, ms)" "$ts" "$f_ts"
printf '%-34s %-28s %s\n' "Avro body" "" "$avro"
printf '%-34s %-28s %s\n' "value = header + Avro" "" "$value"
printf '%-34s %-28s %s\n' "key (item_id as decimal text)" "\"$item\"" "$key"
# Record v2 inside a batch: length, attributes, timestampDelta, offsetDelta, key length + key,
# value length + value, header count (0 headers).
body=$(( 1 + $(zz 3) + $(zz 10) + $(zz "$key") + key + $(zz "$value") + value + $(zz 0) ))
rec=$(( $(zz $body) + body ))
printf '%-34s %-28s %s\n' "record in a batch (uncompressed)" "ts delta 3 ms, offset delta 10" "$rec"
printf '%-34s %-28s %s\n' "record batch header" "once per batch" 61
for n in 1 5 50 1000; do
  awk -v n=$n -v r=$rec 'BEGIN { printf "%-63s %.1f\n", "bytes/record in a batch of " n " (uncompressed: header shared)", r + 61 / n }'
done

if [[ -d $KAFKA_LOG_DIR ]] && command -v python3 >/dev/null; then
  section "Kafka: bytes per record on disk, like-events* topics under $KAFKA_LOG_DIR"
  echo "(lz4 as produced by the project's producer; bench/test keys are smaller than production's: items <= 10^4-10^5, users <= 10^6)"
  python3 - "$KAFKA_LOG_DIR" <<'PY'
import glob, os, struct, sys
buckets = [(1, 1), (2, 4), (5, 16), (17, 128), (129, 10**9)]
agg = {b: [0, 0, 0, 0] for b in buckets}  # batches, records, bytes, compressed batches
for d in glob.glob(os.path.join(sys.argv[1], "like-events*")):
    for f in glob.glob(os.path.join(d, "*.log")):
        data = open(f, "rb").read()
        i = 0
        while i + 61 <= len(data):
            length = struct.unpack(">i", data[i + 8:i + 12])[0]
            if length <= 0:
                break
            attributes = struct.unpack(">h", data[i + 21:i + 23])[0]
            records = struct.unpack(">i", data[i + 57:i + 61])[0]
            if not attributes & 0x20 and records > 0:  # skip control batches
                for b in buckets:
                    if b[0] <= records <= b[1]:
                        a = agg[b]
                        a[0] += 1; a[1] += records; a[2] += 12 + length; a[3] += (attributes & 7) != 0
            i += 12 + length
print(f"{'records/batch':>14} {'batches':>9} {'records':>10} {'bytes/record':>13} {'compressed':>11}")
for b, (nb, nr, nbytes, nc) in agg.items():
    if nb:
        label = f"{b[0]}-{b[1]}" if b[1] < 10**9 else f">={b[0]}"
        print(f"{label:>14} {nb:9d} {nr:10d} {nbytes / nr:13.1f} {100 * nc / nb:10.0f}%")
PY
else
  echo "(no readable Kafka log directory at $KAFKA_LOG_DIR or no python3: on-disk sizes skipped)"
fi
fi # want kafka
echo
echo "done"
