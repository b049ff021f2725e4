//! The one error type of the adapters, with database failures mapped to what
//! they mean for the caller (retry, fenced, bad data).

/// What went wrong talking to the outside world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or malformed; names the environment variable.
    #[error("setting {name}: {message}")]
    Setting { name: &'static str, message: String },

    /// An existing topic is not what was asked for, in a way that cannot be
    /// changed in place (its partition count).
    #[error("topic {topic}: {message}")]
    TopicMismatch { topic: String, message: String },

    /// Kafka refused or failed an operation.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    /// The producer dropped a record's delivery report before the broker
    /// answered (it is shutting down): the record may or may not be stored.
    #[error("kafka: the delivery report was abandoned before the broker answered")]
    DeliveryAbandoned,

    /// A helper thread or its runtime could not be started (`what` names it).
    #[error("cannot start the {what}: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The thread that makes partition claims is gone, so no claim can be made.
    #[error("the partition claim thread stopped")]
    ClaimsStopped,

    /// The schema registry could not be reached or refused the request; worth retrying.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),

    /// The registry refuses a schema under the subject's compatibility level:
    /// `changes` names what breaks it against the registered versions (empty
    /// when none could be told), `registry` is the registry's own answer.
    #[error(
        "the schema registry refuses the schema for {subject}: {}; registry said {registry}",
        if changes.is_empty() { "no field-level change found".to_string() } else { changes.join("; ") }
    )]
    SchemaRefused {
        subject: String,
        changes: Vec<String>,
        registry: String,
    },

    /// A schema file does not parse as Avro.
    #[error("schema {source_name} is not a valid Avro schema: {reason}")]
    InvalidSchema { source_name: String, reason: String },

    /// A record could not be decoded into a valid event; retrying will not help.
    #[error("poison record: {0}")]
    Poison(String),

    /// An event could not be encoded with the registered schema.
    #[error("encoding: {0}")]
    Encode(String),

    /// PostgreSQL cannot be reached right now (connection refused, shutting down, ...).
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(#[source] sqlx::Error),

    /// Another projector owns the partition now: this batch must not commit.
    #[error("fenced: partition {partition} is owned by a newer epoch")]
    Fenced { partition: i32 },

    /// Any other database error (a bug or a broken invariant, not worth retrying blindly).
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),

    /// Applying the migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Redis failed; the Redis projection is a cache, so callers may fall back.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    /// A topic a tool reads is not in the cluster (or has no partitions).
    #[error("topic {topic} does not exist: {reason}")]
    TopicMissing { topic: String, reason: String },

    /// A tool's read of the log received nothing for a long time while records
    /// were still due.
    #[error("no record for {waited:?} while partitions {partitions:?} are unfinished")]
    ReadStalled {
        waited: std::time::Duration,
        partitions: Vec<i32>,
    },

    /// A record that may well be a good event could not be decoded (its schema
    /// id stays unknown, or the registry stays away): a tool stops rather than
    /// skip it, since its result would be short.
    #[error(
        "partition {partition} offset {offset}: {source}; refusing to go on without it (the \
         result would be short): check that SCHEMA_REGISTRY_URL is the registry the events \
         were written with and that it is reachable and up to date, then run again"
    )]
    UnreadableRecord {
        partition: i32,
        offset: i64,
        source: DecodeError,
    },

    /// Another `rebuild postgres` holds the database's rebuild lock.
    #[error(
        "another `rebuild postgres` is running on this database; refusing to interleave with it"
    )]
    RebuildRunning,

    /// The shadow tables lack an index the live table has: swapping them in
    /// would lose it.
    #[error("the shadow of {table} has no index like {index}; not swapping")]
    ShadowIndexMissing { table: String, index: String },

    /// A database holds another slice of the topic than this process's shard
    /// map gives it (`DATABASE_URLS` reordered, shards added or removed, or
    /// the topic's partition count changed).
    #[error(
        "shard {shard} ({url}) was set up as shard {recorded_shard} of {recorded_shards} for \
         {recorded_partitions} partitions of {topic}, but this process's map makes it shard \
         {shard} of {shards} for {partitions}: check DATABASE_URLS (its order matters); a \
         changed map needs a rebuild of the moved partitions (see the README, \"Adding a shard\")"
    )]
    ShardMapMismatch {
        topic: String,
        url: String,
        shard: usize,
        shards: usize,
        partitions: String,
        recorded_shard: i32,
        recorded_shards: i32,
        recorded_partitions: String,
    },

    /// No snapshot has this id.
    #[error("no snapshot {id} (see `likes-replay snapshot list`)")]
    NoSnapshot { id: i64 },

    /// The archive's store could not be reached or refused an operation
    /// (a local disk that is full, a bucket that is away): try again later.
    #[error("archive store {url}: {reason}")]
    ArchiveUnavailable { url: String, reason: String },

    /// An archive file that cannot be read as what its name says it holds.
    #[error("archive file {path} is unreadable: {reason}")]
    ArchiveCorrupt { path: String, reason: String },
}

/// Why a dependency failed a readiness probe, as a kind a caller can report
/// without the driver's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// It could not be reached or refused the probe.
    Unreachable,
    /// It did not answer within the probe's timeout.
    TimedOut,
    /// Kafka answered, but the topic has no partitions (not set up).
    NoPartitions,
    /// It answered with an error status.
    BadAnswer,
}

/// A failed readiness probe: its kind, and the driver's detail for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Unready {
    pub down: Down,
    pub detail: String,
}

impl Unready {
    pub fn new(down: Down, detail: impl Into<String>) -> Self {
        Self {
            down,
            detail: detail.into(),
        }
    }
}

impl Error {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::RegistryUnavailable(_)
            | Error::DatabaseUnavailable(_)
            | Error::Redis(_)
            | Error::DeliveryAbandoned
            | Error::ArchiveUnavailable { .. } => true,
            Error::Kafka(rdkafka::error::KafkaError::MessageProduction(code)) => {
                !PERMANENT_PRODUCE_CODES.contains(code)
            }
            Error::Kafka(_) => true,
            _ => false,
        }
    }
}

/// Produce failures that the same record meets again on every try: it is too
/// large for the topic, or the topic does not exist (this project never lets
/// the broker create topics, so a missing one stays missing until an operator
/// runs `likes-replay setup`). Retrying them would stall the caller forever.
const PERMANENT_PRODUCE_CODES: [rdkafka::types::RDKafkaErrorCode; 4] = [
    rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
    rdkafka::types::RDKafkaErrorCode::UnknownTopic,
    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
    rdkafka::types::RDKafkaErrorCode::InvalidTopic,
];

/// Why a record could not be decoded into an event, decided once, in the
/// codec. Every kind but [`DecodeError::RegistryUnavailable`] is a property of
/// the record (retrying cannot help: the record is poison); that one is the
/// registry's state (try again later). `Error::from` keeps exactly that split:
/// poison becomes [`Error::Poison`], the rest [`Error::RegistryUnavailable`],
/// so [`Error::is_transient`] stays the one rule callers ask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record has no value at all.
    #[error("record has no value")]
    NoValue,

    /// Not the Confluent framing (magic byte 0 and a 4-byte schema id).
    #[error("not in the Confluent wire format (magic byte 0 and a schema id)")]
    NotFramed,

    /// The registry kept answering "no such schema" for the whole grace
    /// period (`UNKNOWN_SCHEMA_RETRY_SECONDS`).
    #[error(
        "schema id {id} is unknown to the registry (still not found after {:.1} s)",
        .waited.as_secs_f64()
    )]
    UnknownSchemaId {
        id: u32,
        waited: std::time::Duration,
    },

    /// The id names a schema of another kind (JSON, Protobuf, ...).
    #[error("schema id {id} is a {schema_type} schema, not Avro")]
    NotAvro { id: u32, schema_type: String },

    /// The id names an Avro schema that does not parse.
    #[error("schema id {id} is not a valid Avro schema: {reason}")]
    UnparsableSchema { id: u32, reason: String },

    /// The bytes after the header do not read as the id's schema.
    #[error("bytes do not match schema id {id}: {reason}")]
    Malformed { id: u32, reason: String },

    /// The record reads, but is not a valid like event (a field is missing or
    /// fails validation).
    #[error("{0}")]
    InvalidEvent(String),

    /// The registry could not be asked (unreachable, timeout, 5xx, a refusal
    /// or an answer that is not a schema): nothing is known about the record.
    #[error("schema id {id}: registry unavailable: {reason}")]
    RegistryUnavailable { id: u32, reason: String },
}

impl DecodeError {
    /// Every value of [`DecodeError::kind`] a record can be dead-lettered for.
    pub const KINDS: [&'static str; 7] = [
        "no_value",
        "not_framed",
        "unknown_schema",
        "not_avro",
        "unparsable_schema",
        "malformed",
        "invalid_event",
    ];

    /// A short, fixed name of the kind of failure, for metric labels and
    /// reports (the message carries the details).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::NoValue => "no_value",
            DecodeError::NotFramed => "not_framed",
            DecodeError::UnknownSchemaId { .. } => "unknown_schema",
            DecodeError::NotAvro { .. } => "not_avro",
            DecodeError::UnparsableSchema { .. } => "unparsable_schema",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::InvalidEvent(_) => "invalid_event",
            DecodeError::RegistryUnavailable { .. } => "registry_unavailable",
        }
    }

    /// Whether asking again later can help (the registry's state, not the record's).
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::RegistryUnavailable { .. })
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::RegistryUnavailable { .. } => Error::RegistryUnavailable(e.to_string()),
            poison => Error::Poison(poison.to_string()),
        }
    }
}

/// Class 08 is "connection exception", 57P is "operator intervention" (shutdown,
/// crash recovery), 53 "insufficient resources", 40001/40P01 serialization and
/// deadlock, 55P03 a lock wait and 57014 a statement that ran out its
/// `lock_timeout` / `statement_timeout`: all mean "try again", not "your data
/// is wrong".
const TRANSIENT_SQLSTATE_PREFIXES: [&str; 7] =
    ["08", "57P", "53", "40001", "40P01", "55P03", "57014"];

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                TRANSIENT_SQLSTATE_PREFIXES
                    .iter()
                    .any(|p| code.starts_with(p))
            }),
            _ => false,
        };
        if transient {
            Error::DatabaseUnavailable(e)
        } else {
            Error::Database(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    #[test]
    fn a_record_too_large_or_for_a_missing_topic_is_never_retried_but_a_slow_broker_is() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            let e = Error::Kafka(KafkaError::MessageProduction(code));
            assert!(!e.is_transient(), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            let e = Error::Kafka(KafkaError::MessageProduction(code));
            assert!(e.is_transient(), "{code:?}");
        }
    }
}
