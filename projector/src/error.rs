//! The projector's error type.

/// Why the projector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// Kafka, the registry, PostgreSQL or Redis failed in a way retries cannot
    /// fix, or the Kafka client could not be built or subscribed.
    #[error(transparent)]
    Infra(#[from] likes_infra::Error),
}
