//! Reads of the PostgreSQL projection for the API and tools.

use likes_domain::{ItemKey, UserId};
use sqlx::PgPool;
use tracing::instrument;

use crate::Error;

/// An item's count and the log offset it reflects (`None` when never counted).
#[instrument(skip_all, fields(item = %item))]
pub async fn count(pool: &PgPool, item: ItemKey) -> Result<Option<(i64, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT count, last_offset FROM counters WHERE item_id = $1 AND item_type = $2",
    )
    .bind(item.item_id.get())
    .bind(item.item_type.get() as i16)
    .fetch_optional(pool)
    .await?)
}

/// Whether `user` likes `item` according to the projection.
#[instrument(skip_all, fields(item = %item))]
pub async fn likes(pool: &PgPool, user: UserId, item: ItemKey) -> Result<bool, Error> {
    let row: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM user_likes WHERE item_id = $1 AND item_type = $2 AND user_id = $3",
    )
    .bind(item.item_id.get())
    .bind(item.item_type.get() as i16)
    .bind(user.get())
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}
