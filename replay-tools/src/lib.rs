//! `likes-replay`: tools for data engineers and auditors over the `like-events`
//! topic. Today it prepares a stack (`setup`); rebuilds, snapshots and audits
//! come next and will read the topic with their own consumers, never joining
//! the live projector's group.

pub mod setup;
