//! Which partition holds an item's events: the producer's partitioner
//! ([`PRODUCER_PARTITIONER`], set on every producer from here) and its
//! computation, so a tool can read one partition instead of all.

/// librdkafka's `partitioner` setting of every producer of `like-events`:
/// murmur2 over the key, identical to the Java client's default for keyed
/// records, and the function [`partition_for_key`] computes. Changing one
/// without the other would send tools to the wrong partition.
pub const PRODUCER_PARTITIONER: &str = "murmur2_random";

/// Kafka's `Utils.murmur2` over `data` (seed `0x9747b28c`), as a signed 32-bit hash.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java works on wrapping 32-bit ints; the length is mixed in as Java's int.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition a record with `key` goes to among `partitions`:
/// `(murmur2(key) & 0x7fffffff) % partitions`, as librdkafka and Java compute it.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The partition holding `item_id`'s events (the key is the item id in decimal text).
pub fn partition_for_item(item_id: i64, partitions: i32) -> i32 {
    partition_for_key(super::item_key(item_id).as_bytes(), partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_kafka_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(murmur2(data), expected, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn numeric_keys_hash_like_other_kafka_clients() {
        // Values other clients check their port of Kafka's murmur2 against.
        assert_eq!(murmur2(b"1"), -1_993_445_489);
        assert_eq!(murmur2(b"12"), 126_087_238);
        assert_eq!(murmur2(b"123"), -267_702_483);
        assert_eq!(murmur2(b"1234"), -1_614_185_708);
        assert_eq!(murmur2(b"12345"), -1_188_365_604);
    }

    #[test]
    fn partitions_are_the_positive_hash_modulo_the_count() {
        // murmur2("21") is negative: the top bit is masked off, not negated.
        let expected = (-973_932_308_i32 & 0x7fff_ffff) % 64;
        assert_eq!(partition_for_key(b"21", 64), expected);
        assert_eq!(partition_for_item(21, 64), expected);
        for item in 1..200 {
            let p = partition_for_item(item, 7);
            assert!((0..7).contains(&p));
        }
    }
}
