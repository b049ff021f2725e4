//! The swap of `rebuild postgres`: the checks of the shadow tables around the
//! lock, the lock itself, and the renaming that makes the rebuilt tables live.
//!
//! The whole-table checks run before the lock: under it only the items the
//! tail touches can change (on either side: every live commit since the last
//! pass is in the tail's range), so only those, and the items that already
//! differed, are checked again there, and the time under the lock follows the
//! tail, not the table size.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail};
use likes_domain::ItemKey;
use likes_infra::postgres::shadow::{self, CountDiff};
use likes_infra::postgres::{
    PgConnection, PgPool, PgTransaction, offsets, rebuild_progress, swap_lock,
};

/// Checks the whole shadow before the lock: a shadow that disagrees with its
/// own `user_likes` is discarded (it must not be resumed either) and refused;
/// otherwise returns the items whose rebuilt count differs from the live one.
pub async fn check_before_lock(pool: &PgPool) -> anyhow::Result<Vec<CountDiff>> {
    let (inconsistent, differing) = {
        let mut conn = pool.acquire().await?;
        (
            shadow::inconsistent_items(&mut conn).await?,
            shadow::live_differences(&mut conn).await?,
        )
    };
    if inconsistent > 0 {
        rebuild_progress::discard(pool).await?;
        bail!("{inconsistent} rebuilt items disagree with their own user_likes; not swapping");
    }
    Ok(differing)
}

/// Takes the swap lock (waiting for running snapshots), then locks the
/// topic's offset rows (`FOR UPDATE`: the projector's commits and claims
/// wait) and reads them. Waits at most a few seconds for a projector
/// transaction that holds them.
pub async fn lock_offsets(tx: &mut PgConnection, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    // Snapshots first (the projector does not wait on this one), then the
    // projector's rows.
    swap_lock::exclusive(&mut *tx)
        .await
        .context("wait for running snapshots before the swap")?;
    Ok(offsets::lock_all(tx, topic).await?)
}

/// The items checked again under the lock: those the tail touched and those
/// that already differed before it, in item order.
pub fn items_to_recheck(
    touched: HashSet<ItemKey>,
    differing: &[CountDiff],
) -> anyhow::Result<Vec<ItemKey>> {
    let mut recheck: Vec<ItemKey> = touched.into_iter().collect();
    for d in differing {
        recheck.push(ItemKey::parse(i64::from(d.item_type), d.item_id)?);
    }
    recheck.sort_by_key(|i| (i.item_type.get(), i.item_id.get()));
    recheck.dedup();
    Ok(recheck)
}

/// Renames shadow → live inside `tx`, forgets the build and commits (the live
/// tables change only here), then drops the replaced tables on `session`.
pub async fn swap_in(mut tx: PgTransaction<'_>, session: &mut PgConnection) -> anyhow::Result<()> {
    shadow::swap(&mut tx)
        .await
        .context("swap the rebuilt tables in; not swapping")?;
    rebuild_progress::finish(&mut tx).await?;
    tx.commit().await.context("commit the swap")?;
    shadow::drop_old(session).await?;
    Ok(())
}
