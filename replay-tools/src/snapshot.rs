//! `likes-replay snapshot create|list|delete`: consistent copies of the
//! PostgreSQL projection. `create` copies `counters`, `user_likes` and the
//! topic's `projector_offsets` in one `REPEATABLE READ` transaction: the
//! projector commits rows and offsets together, so the copy reflects exactly
//! the offsets stored with it. It never overlaps a rebuild's swap
//! ([`swap_lock`]). `rebuild postgres --from snapshot:<id>` starts
//! from such a copy plus the topic past its offsets.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use likes_infra::postgres::{self, PgPool};
use likes_infra::settings::StackSettings;
use serde::Serialize;
use sqlx::{Acquire, PgConnection};

use crate::output::{Format, json_line, table_row};
use crate::swap_lock;

/// One snapshot and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SnapshotInfo {
    pub id: i64,
    pub topic: String,
    pub created_at: DateTime<Utc>,
    pub note: Option<String>,
    /// Rows of `counters` copied.
    pub counters: i64,
    /// Rows of `user_likes` copied.
    pub user_likes: i64,
    /// Sum of the partitions' next offsets: how many events it reflects.
    pub events: i64,
}

/// Takes a snapshot of the projection of `topic`; returns what was copied.
pub async fn create(
    pool: &PgPool,
    topic: &str,
    note: Option<&str>,
) -> anyhow::Result<SnapshotInfo> {
    // Before the transaction (and its view) begins: wait out a swap in
    // progress, and keep a swap from starting until the copy committed.
    let mut conn = pool.acquire().await?;
    swap_lock::shared(&mut conn).await?;
    let copied = copy(&mut conn, topic, note).await;
    if swap_lock::release_shared(&mut conn).await.is_err() {
        // Never hand a session that may still hold the lock back to the pool.
        conn.close_on_drop();
    }
    drop(conn);
    get(pool, copied?).await
}

/// Copies the projection in one `REPEATABLE READ` transaction; returns the id.
async fn copy(conn: &mut PgConnection, topic: &str, note: Option<&str>) -> anyhow::Result<i64> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    let (id,): (i64,) =
        sqlx::query_as("INSERT INTO snapshots (topic, note) VALUES ($1, $2) RETURNING id")
            .bind(topic)
            .bind(note)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query(
        "INSERT INTO snapshot_offsets (snapshot_id, partition, next_offset)
         SELECT $1, partition, next_offset FROM projector_offsets WHERE topic = $2",
    )
    .bind(id)
    .bind(topic)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO snapshot_counters (snapshot_id, item_id, item_type, count, last_offset)
         SELECT $1, item_id, item_type, count, last_offset FROM counters",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO snapshot_user_likes (snapshot_id, item_id, item_type, user_id, liked_at, event_id)
         SELECT $1, item_id, item_type, user_id, liked_at, event_id FROM user_likes",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await.context("commit the snapshot")?;
    Ok(id)
}

/// Every snapshot, oldest first.
pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<SnapshotInfo>> {
    Ok(sqlx::query_as(LIST_SQL).fetch_all(pool).await?)
}

/// One snapshot; an unknown id is an error.
pub async fn get(pool: &PgPool, id: i64) -> anyhow::Result<SnapshotInfo> {
    let sql = LIST_SQL.replace("ORDER BY", "WHERE s.id = $1 ORDER BY");
    let row: Option<SnapshotInfo> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => Ok(row),
        None => bail!("no snapshot {id} (see `likes-replay snapshot list`)"),
    }
}

/// The partitions' next offsets a snapshot reflects.
pub async fn offsets(pool: &PgPool, id: i64) -> anyhow::Result<HashMap<i32, i64>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM snapshot_offsets WHERE snapshot_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Deletes a snapshot and its rows; an unknown id is an error.
pub async fn delete(pool: &PgPool, id: i64) -> anyhow::Result<()> {
    let done = sqlx::query("DELETE FROM snapshots WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        bail!("no snapshot {id} (see `likes-replay snapshot list`)");
    }
    Ok(())
}

const LIST_SQL: &str = "SELECT s.id, s.topic, s.created_at, s.note,
        (SELECT COUNT(*) FROM snapshot_counters c WHERE c.snapshot_id = s.id) AS counters,
        (SELECT COUNT(*) FROM snapshot_user_likes u WHERE u.snapshot_id = s.id) AS user_likes,
        (SELECT COALESCE(SUM(o.next_offset), 0)::bigint FROM snapshot_offsets o
          WHERE o.snapshot_id = s.id) AS events
     FROM snapshots s ORDER BY s.id";

/// Prints snapshots as a table or JSON Lines.
pub fn print(
    out: &mut impl Write,
    snapshots: &[SnapshotInfo],
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            for s in snapshots {
                json_line(out, s)?;
            }
        }
        Format::Table => {
            let widths = [6, 25, 24, 9, 10, 10];
            let head = [
                "id",
                "created_at",
                "topic",
                "counters",
                "user_likes",
                "events",
                "note",
            ];
            table_row(out, &widths, &head.map(String::from))?;
            for s in snapshots {
                let cells = [
                    s.id.to_string(),
                    s.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    s.topic.clone(),
                    s.counters.to_string(),
                    s.user_likes.to_string(),
                    s.events.to_string(),
                    s.note.clone().unwrap_or_default(),
                ];
                table_row(out, &widths, &cells)?;
            }
        }
    }
    Ok(())
}

/// The `snapshot` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Copy counters, user_likes and the topic's offsets in one consistent transaction.
    Create {
        /// A note stored with the snapshot.
        #[arg(long)]
        note: Option<String>,
        /// Output: a summary table, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Every snapshot, oldest first.
    List {
        /// Output: an aligned table, or JSON Lines.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete a snapshot and its rows.
    Delete { id: i64 },
}

/// Runs a `snapshot` subcommand against `stack`, printing to stdout.
pub async fn command(stack: &StackSettings, command: SnapshotCommand) -> anyhow::Result<()> {
    let pool = postgres::connect_lazy(&stack.database_url, 2)?;
    postgres::migrate(&pool).await?;
    let mut out = std::io::stdout().lock();
    let result = match command {
        SnapshotCommand::Create { note, format } => {
            let created = create(&pool, &stack.topic, note.as_deref()).await;
            created.and_then(|s| print(&mut out, &[s], format))
        }
        SnapshotCommand::List { format } => {
            let all = list(&pool).await;
            all.and_then(|s| print(&mut out, &s, format))
        }
        SnapshotCommand::Delete { id } => delete(&pool, id)
            .await
            .and_then(|()| Ok(writeln!(out, "snapshot {id} deleted")?)),
    };
    pool.close().await;
    result
}
