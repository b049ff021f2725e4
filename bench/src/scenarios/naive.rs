//! Scenario 6: what a user would write instead, one synchronous PostgreSQL
//! transaction per like behind a bare warp handler, on a fresh database. The
//! figure is our single-like max sustainable rate ÷ the naive one.

use likes_infra::store;

use crate::baselines;
use crate::env::fresh_database;
use crate::http::{self, max_sustainable, post_likes};
use crate::keys::Keys;
use crate::report::{Report, Row};
use crate::scenarios::Config;
use crate::scenarios::api::WRITE_P99_MS;

/// Runs scenario 6 against `ours_max` (scenario 1's figure, same run).
pub async fn naive(cfg: &Config, report: &mut Report, ours_max: f64) -> anyhow::Result<()> {
    const NAME: &str = "6 vs naive UPDATE";
    let url = fresh_database().await?;
    let db = store::connect_lazy(&url, 10)?;
    store::migrate(&db).await?;
    let server = baselines::naive(db.clone()).await?;
    let client = http::client()?;
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 6)?;
    let like_url = server.url("/v1/likes");
    post_likes(&client, &like_url, &mut keys, 200.0, cfg.step / 4).await?;
    let (naive_max, runs) = max_sustainable(
        cfg.search_start / 4.0,
        cfg.search_max,
        WRITE_P99_MS,
        async |rate| post_likes(&client, &like_url, &mut keys, rate, cfg.step).await,
    )
    .await?;
    report.runs(NAME, "naive", &runs);
    report.rows.push(Row::new(
        NAME,
        "max sustainable likes/s (P99 < 20 ms)",
        ours_max,
        naive_max,
        true,
        "naive per-like UPDATE counters",
    ));
    server.stop().await?;
    db.close().await;
    Ok(())
}
