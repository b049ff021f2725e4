//! Partition ownership and offsets, kept in `projector_offsets` beside the rows.
//!
//! Claiming a partition bumps its epoch; a batch later commits only while the
//! epoch is still the claimer's (see [`super::writer`]). A projector that lost a
//! partition (a zombie after a rebalance or a long pause) therefore can never
//! commit for it again, and the new owner starts exactly where the last
//! committed batch ended.

use sqlx::PgPool;
use tracing::instrument;

use crate::Error;

/// A partition this process now owns: the epoch it must present to commit, and
/// where consumption resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub partition: i32,
    pub epoch: i64,
    pub next_offset: i64,
}

/// Takes ownership of `partitions` of `topic`, fencing any previous owner.
#[instrument(skip_all, fields(topic, partitions = ?partitions))]
pub async fn claim(pool: &PgPool, topic: &str, partitions: &[i32]) -> Result<Vec<Claim>, Error> {
    let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
        "INSERT INTO projector_offsets AS o (topic, partition, next_offset, epoch)
         SELECT $1, p, 0, 1 FROM UNNEST($2::int[]) AS p
         ON CONFLICT (topic, partition)
         DO UPDATE SET epoch = o.epoch + 1, updated_at = now()
         RETURNING partition, epoch, next_offset",
    )
    .bind(topic)
    .bind(partitions)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(partition, epoch, next_offset)| Claim {
            partition,
            epoch,
            next_offset,
        })
        .collect())
}

/// The stored next offset of every partition of `topic` the projector has seen.
pub async fn positions(pool: &PgPool, topic: &str) -> Result<Vec<(i32, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT partition, next_offset FROM projector_offsets WHERE topic = $1 ORDER BY partition",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?)
}
