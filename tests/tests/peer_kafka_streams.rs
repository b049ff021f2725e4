//! The Kafka Streams peer is an independent oracle: run on the same topic as
//! the projector, over a mixed workload (duplicates, like → unlike → like,
//! unlikes of never-liked items, hot items, poison, several partitions), it
//! counts every item exactly as PostgreSQL's `counters`, Redis and the domain's
//! reference model do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use likes_domain::{Action, EventId, ItemKey, LikeEvent, Projection, UserId};
use likes_tests::peer::Peer;
use likes_tests::{TestEnv, eventually};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Dice(u64);

impl Dice {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn event(user: i64, item_type: i64, item: i64, like: bool) -> anyhow::Result<LikeEvent> {
    Ok(LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(user)?,
        item: ItemKey::parse(item_type, item)?,
        action: if like { Action::Like } else { Action::Unlike },
        timestamp: chrono::Utc::now(),
    })
}

/// The workload as rounds: each round is published at once, rounds one after
/// the other, and no user × item pair appears twice in a round except as the
/// very same event (a redelivery), so any order within a round counts the same.
struct Workload {
    rounds: Vec<Vec<LikeEvent>>,
    /// How many records repeat an event id already published.
    redeliveries: usize,
    items: BTreeSet<ItemKey>,
}

impl Workload {
    fn mixed() -> anyhow::Result<Self> {
        let mut dice = Dice(0x5eed_1234_abcd_ef01);
        let mut rounds: Vec<Vec<LikeEvent>> = Vec::new();
        let mut redeliveries = 0;
        // Hot items 1 and 2 (type 1): 150 users like each, a third unlike later.
        let hot: Vec<LikeEvent> = (1..=150)
            .flat_map(|user| [event(user, 1, 1, true), event(user, 1, 2, true)])
            .collect::<anyhow::Result<_>>()?;
        rounds.push(hot);
        rounds.push(
            (1..=150)
                .filter(|user| user % 3 == 0)
                .map(|user| event(user, 1, 1, false))
                .collect::<anyhow::Result<_>>()?,
        );
        // Random likes and unlikes of items 3..=30 by users 1..=60, and item
        // type 2 beside type 1 for the same ids; each round a pair at most once.
        for _ in 0..12 {
            let mut round = Vec::new();
            let mut pairs = BTreeSet::new();
            for _ in 0..150 {
                let (user, item_type, item) = (
                    dice.next(60) as i64 + 1,
                    dice.next(4).min(1) as i64 + 1,
                    dice.next(28) as i64 + 3,
                );
                if pairs.insert((user, item_type, item)) {
                    round.push(event(user, item_type, item, dice.next(4) != 0)?);
                }
            }
            rounds.push(round);
        }
        // like → unlike → like with fresh ids (counts 1), and like → unlike →
        // the like delivered again (same id, within the horizon: counts 0).
        let mut sequences = vec![Vec::new(); 3];
        for user in 500..520 {
            let item = 40 + user % 4;
            let like = event(user, 1, item, true)?;
            sequences[0].push(like.clone());
            sequences[1].push(event(user, 1, item, false)?);
            if user % 2 == 0 {
                sequences[2].push(event(user, 1, item, true)?);
            } else {
                sequences[2].push(like);
                redeliveries += 1;
            }
        }
        rounds.extend(sequences);
        // Unlikes of items never liked by these users (and of an item nobody likes).
        rounds.push(
            (900..930)
                .map(|user| event(user, 1, if user % 2 == 0 { 3 } else { 50 }, false))
                .collect::<anyhow::Result<_>>()?,
        );
        // Retries: a sample of earlier events sent again, some twice in one
        // round right next to each other, the rest a round later.
        let published: Vec<LikeEvent> = rounds.iter().flatten().cloned().collect();
        let mut retries = Vec::new();
        let mut later = Vec::new();
        for _ in 0..120 {
            let original = published[dice.next(published.len() as u64) as usize].clone();
            if dice.next(2) == 0 {
                retries.push(original);
            } else {
                later.push(original);
            }
        }
        redeliveries += retries.len() + later.len();
        let mut doubled = Vec::new();
        for retry in retries {
            doubled.push(retry.clone());
            doubled.push(retry);
            redeliveries += 1;
        }
        rounds.push(doubled);
        rounds.push(later);
        let items = rounds.iter().flatten().map(|e| e.item).collect();
        Ok(Self {
            rounds,
            redeliveries,
            items,
        })
    }

    /// Every item's count by the domain's reference model (zeros included).
    fn reference(&self) -> BTreeMap<String, i64> {
        let mut model = Projection::default();
        for event in self.rounds.iter().flatten() {
            model.apply(event);
        }
        self.items
            .iter()
            .map(|item| (item.to_string(), model.count(*item)))
            .collect()
    }
}

/// Two records no one can decode, on the partition of item 3: not Avro at
/// all, and a framed body whose user id is not positive.
async fn publish_poison(env: &TestEnv) -> anyhow::Result<()> {
    let schema_id =
        likes_infra::codec::EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?
            .register()
            .await?;
    let schema = apache_avro::Schema::parse_str(likes_infra::codec::SCHEMA)?;
    use apache_avro::types::Value;
    let invalid = Value::Record(vec![
        ("event_id".into(), Value::Uuid(uuid::Uuid::new_v4())),
        ("user_id".into(), Value::Long(-1)),
        ("item_id".into(), Value::Long(3)),
        ("item_type".into(), Value::Int(1)),
        ("action".into(), Value::Enum(0, "LIKE".into())),
        ("timestamp".into(), Value::TimestampMillis(0)),
    ]);
    let mut framed = vec![0];
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend(
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()?
            .write_value_to_vec(invalid)?,
    );
    let producer: FutureProducer =
        likes_infra::kafka::producer(&env.stack.kafka_bootstrap, Duration::from_secs(10))?;
    for payload in [b"hello, world".to_vec(), framed] {
        producer
            .send(
                FutureRecord::to(&env.stack.topic)
                    .key("3")
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce poison: {e}"))?;
    }
    Ok(())
}

/// The items whose counts differ between `a` and `b` (absent = 0).
fn differences(a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k).copied().unwrap_or(0) != b.get(*k).copied().unwrap_or(0))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_streams_peer_counts_every_item_as_the_projector_and_the_reference_do()
-> anyhow::Result<()> {
    let started = Instant::now();
    let env = TestEnv::new(4).await?;
    let workload = Workload::mixed()?;
    let reference = workload.reference();
    assert!(
        reference.values().filter(|&&n| n > 0).count() > 20,
        "the workload leaves many items counted"
    );

    let publisher = env.publisher().await?;
    let mut peer = Peer::start(&env).await?;
    let projector = env.start_projector();

    let mut published = 0;
    for (i, round) in workload.rounds.iter().enumerate() {
        try_join_all(round.iter().map(|e| publisher.publish(e)))
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e:?}"))?;
        published += round.len();
        if i == 3 {
            publish_poison(&env).await?;
        }
    }

    env.projected_everything(Duration::from_secs(60)).await?;
    eventually(Duration::from_secs(60), || async { peer.caught_up() }).await?;
    // The last items owed to the output go out within an output interval and
    // a commit interval (a second each) of the input being committed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peer_counts = peer.counts()?;
    while !differences(&peer_counts, &reference).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peer_counts = peer.counts()?;
    }

    let mut counters = BTreeMap::new();
    let mut redis = BTreeMap::new();
    for item in &workload.items {
        let (t, id) = (item.item_type.get(), item.item_id.get());
        counters.insert(item.to_string(), env.db_count(t, id).await?);
        if let Some(n) = env.redis_count(t, id).await? {
            redis.insert(item.to_string(), n);
        }
    }
    projector.stop().await??;
    let stopped = peer.stop().await?;
    let totals = peer.totals();
    let log = peer.log_text();
    peer.clean_up().await?;

    println!(
        "{} events ({} redeliveries, 2 poison) over {} items, {} partitions: \
         peer {}, counters {}, redis {} items differ from the reference; peer totals {totals:?}; \
         {:.1} s",
        published,
        workload.redeliveries,
        workload.items.len(),
        env.partitions,
        differences(&peer_counts, &reference).len(),
        differences(&counters, &reference).len(),
        differences(&redis, &reference).len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        differences(&counters, &reference),
        Vec::<String>::new(),
        "counters (PostgreSQL) against the reference"
    );
    assert_eq!(
        differences(&redis, &reference),
        Vec::<String>::new(),
        "Redis against the reference"
    );
    assert_eq!(
        differences(&peer_counts, &reference),
        Vec::<String>::new(),
        "the peer's output against the reference"
    );
    assert_eq!(
        differences(&peer_counts, &counters),
        Vec::<String>::new(),
        "the peer against counters"
    );
    assert!(
        peer_counts.keys().all(|k| reference.contains_key(k)),
        "the peer counted only items of the workload"
    );
    assert!(
        stopped.success(),
        "the peer exits cleanly on SIGTERM: {stopped}\n{log}"
    );
    let totals = totals.unwrap_or_default();
    assert_eq!(
        totals.get("poison"),
        Some(&2),
        "both poison records skipped and counted\n{log}"
    );
    assert_eq!(
        totals.get("events"),
        Some(&(published as i64)),
        "every good record read once"
    );
    assert_eq!(
        totals.get("duplicates"),
        Some(&(workload.redeliveries as i64)),
        "every redelivery within the horizon judged a duplicate"
    );
    Ok(())
}
