//! The lock that keeps a snapshot and a rebuild's swap apart.
//!
//! A snapshot copies `counters`, `user_likes` and `projector_offsets` in one
//! `REPEATABLE READ` transaction, but table names resolve when each statement
//! runs: a copy whose transaction began before a swap committed would read
//! the swapped-in tables through its older MVCC view (the shadow rows the
//! workers committed, not the tail the swap added) and pair them with the old
//! offsets. So the swap takes this advisory lock exclusively inside its
//! transaction, and a snapshot takes it shared on its session *before* it
//! begins: a snapshot during a swap waits for the swap to commit and then sees
//! only the new tables, and a swap waits for running snapshots to finish
//! (before it locks the projector's offsets, so the projector never waits on
//! a snapshot).

use sqlx::PgConnection;

use crate::Error;

/// The advisory lock key ("likessw").
const SWAP_LOCK_KEY: i64 = 0x6c_696b_6573_7377;

/// Takes the swap lock for the rest of the caller's transaction, waiting at
/// most `lock_timeout` for snapshots that hold it.
pub async fn exclusive(tx: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SET LOCAL lock_timeout = '60s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SWAP_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Takes the swap lock shared on `conn`'s session (outside any transaction),
/// waiting for a swap in progress to commit. Release it with [`release_shared`].
pub async fn shared(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(SWAP_LOCK_KEY)
        .execute(conn)
        .await?;
    Ok(())
}

/// Releases a lock taken by [`shared`].
pub async fn release_shared(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_unlock_shared($1)")
        .bind(SWAP_LOCK_KEY)
        .execute(conn)
        .await?;
    Ok(())
}
