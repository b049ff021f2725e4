//! The end-of-run check shared by the fault tests: wait for the projection to
//! converge on what the clients were told, then count what was lost or counted
//! twice, and print one row of figures.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::load::{ITEM_TYPE, Ledger};
use crate::{TestEnv, eventually};

/// One fault test's figures.
#[derive(Debug)]
pub struct Figures {
    pub scenario: &'static str,
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    pub unresolved: u64,
    /// Likes the clients expect to be counted (sum of expected counts).
    pub expected: i64,
    /// Likes PostgreSQL counts.
    pub counted: i64,
    /// (user, item) likes acked but missing, and present but not acked (or unliked).
    pub lost: usize,
    pub double: usize,
    /// Items whose `counters` value differs from the number of their `user_likes` rows.
    pub counter_drift: usize,
}

impl Figures {
    pub fn print(&self) {
        println!(
            "FIGURES | {} | sent {} | acked {} | refused {} | unresolved {} | expected {} | counted {} | lost {} | double {} | drift {}",
            self.scenario,
            self.sent,
            self.acked,
            self.refused,
            self.unresolved,
            self.expected,
            self.counted,
            self.lost,
            self.double,
            self.counter_drift
        );
    }

    /// Fails unless nothing was lost, nothing counted twice, nothing left unknown.
    pub fn assert_exact(&self) {
        self.print();
        assert_eq!(self.unresolved, 0, "{self:?}");
        assert_eq!(
            (self.lost, self.double, self.counter_drift),
            (0, 0, 0),
            "{self:?}"
        );
        assert_eq!(self.expected, self.counted, "{self:?}");
    }
}

/// Waits (bounded) until the projector has applied every record in the log
/// and PostgreSQL holds the ledger's counts, then measures. Counts alone can
/// match for a moment while the projector is still behind (one user's like
/// applied, another's not yet), which would measure a state in passing.
pub async fn converge(
    env: &TestEnv,
    scenario: &'static str,
    ledger: &Ledger,
    items: &[i64],
) -> anyhow::Result<Figures> {
    let expected = ledger.expected_counts(items);
    let converged = eventually(Duration::from_secs(60), || async {
        if applied(env).await? < env.end_offsets()? {
            return Ok(false);
        }
        for (item, count) in &expected {
            if env.db_count(ITEM_TYPE, *item).await? != *count {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await;
    if let Err(e) = converged {
        println!("{scenario}: did not converge: {e}");
    }
    // Only the load's items: a test may like others beside it (probes, say).
    let mut actual = BTreeSet::new();
    for (_, pool) in env.shards.iter() {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT user_id, item_id FROM user_likes WHERE item_type = $1 AND item_id = ANY($2)",
        )
        .bind(ITEM_TYPE as i16)
        .bind(items)
        .fetch_all(pool)
        .await?;
        actual.extend(rows);
    }
    let drift = counter_drift(env).await?;
    let mut counted = 0;
    for item in items {
        counted += env.db_count(ITEM_TYPE, *item).await?;
    }
    Ok(Figures {
        scenario,
        sent: ledger.sent,
        acked: ledger.acked,
        refused: ledger.refused,
        unresolved: ledger.unresolved,
        expected: expected.values().sum(),
        counted,
        lost: ledger.liked.difference(&actual).count(),
        double: actual.difference(&ledger.liked).count(),
        counter_drift: drift,
    })
}

/// Records the projector committed, over every shard (the sum of the stored
/// next offsets).
pub async fn applied(env: &TestEnv) -> anyhow::Result<i64> {
    let mut total = 0;
    for (_, pool) in env.shards.iter() {
        let (applied,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(SUM(next_offset), 0)::bigint FROM projector_offsets WHERE topic = $1",
        )
        .bind(&env.stack.topic)
        .fetch_one(pool)
        .await?;
        total += applied;
    }
    Ok(total)
}

/// Items whose `counters` value differs from the number of their `user_likes`
/// rows, on every shard (an item's rows and count live on one shard).
pub async fn counter_drift(env: &TestEnv) -> anyhow::Result<usize> {
    let mut total = 0;
    for (_, pool) in env.shards.iter() {
        let (drift,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM counters c
             WHERE c.count <> (SELECT COUNT(*) FROM user_likes u
                               WHERE u.item_id = c.item_id AND u.item_type = c.item_type)",
        )
        .fetch_one(pool)
        .await?;
        total += usize::try_from(drift)?;
    }
    Ok(total)
}

/// Every item's count over the HTTP API equals `expected` (bounded wait: Redis
/// may briefly hold an older count right after a fault).
pub async fn api_agrees(base_url: &str, ledger: &Ledger, items: &[i64]) -> anyhow::Result<()> {
    let expected = ledger.expected_counts(items);
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(15), || async {
        for (item, count) in &expected {
            let body: serde_json::Value = http
                .get(format!("{base_url}/v1/items/{ITEM_TYPE}/{item}/count"))
                .send()
                .await?
                .json()
                .await?;
            if body["count"].as_i64() != Some(*count) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}
