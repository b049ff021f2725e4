//! The pure domain of likes: validated identifiers, the like/unlike event, the
//! per-(user, item) state machine and the counting fold.
//!
//! Nothing here performs I/O. Every other crate depends on this one, never the
//! reverse, so the rules that decide a count can be tested (and property-tested)
//! without Kafka, PostgreSQL or Redis.

mod dedup;
mod error;
mod event;
mod fold;
mod ids;
mod state;

pub use dedup::{
    DedupHorizon, DedupKey, DedupMemory, DedupWindow, LogClock, dedup_key, record_time,
};
pub use error::ValidationError;
pub use event::{Action, LikeEvent, Position};
pub use fold::{BatchFold, LoggedEvent, NetChange};
pub use ids::{EventId, ItemId, ItemKey, ItemType, UserId};
pub use state::{LikeState, NoChange, Projection, Transition};
