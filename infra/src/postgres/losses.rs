//! Accepted losses: ranges of a partition's offsets that were deleted from the
//! log before the projector read them, and that an operator accepted as lost
//! (`accepted_losses`). The projector moves past a gap only when a row here
//! names exactly that gap; every row says who accepted it, when and why.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tracing::instrument;

use crate::Error;

/// One accepted loss: offsets `from_offset..=to_offset` of `partition`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct AcceptedLoss {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub from_offset: i64,
    pub to_offset: i64,
    pub accepted_by: String,
    pub reason: Option<String>,
    pub accepted_at: DateTime<Utc>,
}

impl AcceptedLoss {
    /// How many records were accepted as lost.
    pub fn records(&self) -> i64 {
        self.to_offset - self.from_offset + 1
    }
}

/// What an operator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub from_offset: i64,
    pub to_offset: i64,
    pub accepted_by: &'a str,
    pub reason: Option<&'a str>,
}

/// Records an acceptance and returns the stored row.
#[instrument(skip_all, fields(topic = a.topic, partition = a.partition))]
pub async fn accept(pool: &PgPool, a: &Acceptance<'_>) -> Result<AcceptedLoss, Error> {
    Ok(sqlx::query_as(
        "INSERT INTO accepted_losses (topic, partition, from_offset, to_offset, accepted_by, reason)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, topic, partition, from_offset, to_offset, accepted_by, reason, accepted_at",
    )
    .bind(a.topic)
    .bind(a.partition)
    .bind(a.from_offset)
    .bind(a.to_offset)
    .bind(a.accepted_by)
    .bind(a.reason)
    .fetch_one(pool)
    .await?)
}

/// The acceptance of exactly the gap `from_offset..=to_offset`, if one was made.
pub async fn accepted(
    pool: &PgPool,
    topic: &str,
    partition: i32,
    from_offset: i64,
    to_offset: i64,
) -> Result<Option<AcceptedLoss>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, topic, partition, from_offset, to_offset, accepted_by, reason, accepted_at
         FROM accepted_losses
         WHERE topic = $1 AND partition = $2 AND from_offset = $3 AND to_offset = $4
         ORDER BY id LIMIT 1",
    )
    .bind(topic)
    .bind(partition)
    .bind(from_offset)
    .bind(to_offset)
    .fetch_optional(pool)
    .await?)
}

/// Every acceptance recorded for `topic`, oldest first.
pub async fn list(pool: &PgPool, topic: &str) -> Result<Vec<AcceptedLoss>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, topic, partition, from_offset, to_offset, accepted_by, reason, accepted_at
         FROM accepted_losses WHERE topic = $1 ORDER BY id",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?)
}
