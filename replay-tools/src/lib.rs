//! `likes-replay`: tools for data engineers and auditors over the `like-events`
//! topic. Every read of the topic uses its own consumer with assigned
//! partitions (`likes_infra::kafka::reader`), never joining or committing for
//! the live projector's group; every SQL statement and Redis call goes through
//! `likes_infra`, and every counting decision (state machine, fold, dedup
//! horizon) through `likes_domain`.
//!
//! Where things live:
//! - [`commands`]: one module per CLI command (`setup`, `history`, `count`,
//!   `explain`, `verify`, `snapshot`, `rebuild`, `accept-loss`, `schema`,
//!   `dlq`), each with its arguments, its run and its printing. `main.rs`
//!   only parses and dispatches.
//! - [`archive`]: `archive run|status|verify`, the archiver of the log beyond
//!   retention and its checks.
//! - [`rebuild`]: `rebuild postgres` split by role (start, plan, warmup,
//!   worker, report, redis), the way `projector/src/` is split.
//! - Shared by the commands: [`cli`] (ids and times from the command line),
//!   [`output`] (table or JSON), [`progress`] (progress of long reads),
//!   [`merge`] (a user's history merged across partitions by time),
//!   [`shards`] (the shards a command reaches, their maps checked),
//!   [`source`] (the log as archive ∪ topic: every reader goes through it).

pub mod archive;
pub mod cli;
pub mod commands;
pub mod merge;
pub mod output;
pub mod progress;
pub mod rebuild;
pub mod shards;
pub mod source;
