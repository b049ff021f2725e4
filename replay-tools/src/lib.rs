//! `likes-replay`: tools for data engineers and auditors over the `like-events`
//! topic: preparing a stack (`setup`), reading an item's or a user's history,
//! explaining a count, reconciling the projections, snapshots and rebuilds. Every read of the topic
//! uses its own consumer with assigned partitions ([`reader`]), never joining
//! or committing for the live projector's group.

pub mod accept_loss;
pub mod cli;
pub mod count;
pub mod explain;
pub mod history;
pub mod history_print;
pub mod merge;
pub mod output;
pub mod progress;
pub mod rebuild_postgres;
pub mod rebuild_redis;
pub mod rebuild_report;
pub mod rebuild_start;
pub mod rebuild_warmup;
pub mod rebuild_worker;
pub mod setup;
pub mod snapshot;
pub mod snapshot_base;
pub mod verify;
