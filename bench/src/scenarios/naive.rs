//! Scenario 6: what a user would write instead, one synchronous PostgreSQL
//! transaction per like behind a bare warp handler, on a fresh database. The
//! figure is our single-like max sustainable rate ÷ the naive one.

use likes_infra::postgres;

use crate::baselines;
use crate::env::{drop_database, fresh_database};
use crate::http::{Http, Search, max_sustainable};
use crate::keys::Keys;
use crate::report::Report;
use crate::scenarios::Config;
use crate::scenarios::api::{WRITE_P99_MS, search_rows};

/// Runs scenario 6 against `ours`, scenario 1's rate search in the same run.
pub async fn naive(cfg: &Config, report: &mut Report, ours: &Search) -> anyhow::Result<()> {
    const NAME: &str = "6 vs naive UPDATE";
    let url = fresh_database().await?;
    let db = postgres::connect_lazy(&url, 10)?;
    postgres::migrate(&db).await?;
    let server = baselines::naive(db.clone()).await?;
    let load = Http {
        connections: cfg.connections,
    };
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 6)?;
    let at = server.addr;
    load.post_likes(at, &mut keys, 200.0, cfg.step / 4).await?;
    let naive = max_sustainable(
        crate::http::Plan {
            start: cfg.search_start / 8.0,
            ..cfg.plan(WRITE_P99_MS)
        },
        async |rate| load.post_likes(at, &mut keys, rate, cfg.step).await,
    )
    .await?;
    let baseline = "naive per-like UPDATE counters";
    search_rows(report, NAME, "likes/s", "20 ms", ours, &naive, baseline);
    server.stop().await?;
    db.close().await;
    drop_database(&url).await
}
