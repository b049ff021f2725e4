//! The Avro binary body of one `LikeEvent`, written directly for the one
//! schema this build produces with (`schemas/like_event.avsc`). The generic
//! path (`apache_avro::types::Value` through schema_registry_converter) builds a
//! writer and clones the resolved schema for every record, which made Avro the
//! largest cost of the batch API; the layout here is fixed by the schema, and
//! the tests prove it byte for byte equal to apache-avro's own output.
//!
//! Avro binary: `long`/`int` are zig-zag varints, a `string` is its byte length
//! (a long) then UTF-8, an `enum` is the symbol's index (an int). Fields follow
//! in schema order: event_id, user_id, item_id, item_type, action, timestamp.

use likes_domain::LikeEvent;

/// Appends the zig-zag varint of `n` (Avro `long` and `int`).
fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends `event` in the schema's binary encoding.
pub fn write(out: &mut Vec<u8>, event: &LikeEvent) {
    let mut id = uuid::Uuid::encode_buffer();
    let id = event.event_id.as_uuid().hyphenated().encode_lower(&mut id);
    long(out, id.len() as i64);
    out.extend_from_slice(id.as_bytes());
    long(out, event.user_id.get());
    long(out, event.item.item_id.get());
    long(out, i64::from(event.item.item_type.get()));
    long(out, i64::from(event.action.ordinal()));
    long(out, event.timestamp.timestamp_millis());
}

/// The Confluent wire format: magic byte 0, the schema id (big endian), the body.
pub fn framed(schema_id: u32, event: &LikeEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    write(&mut out, event);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use likes_domain::{Action, EventId, ItemKey, UserId};

    fn generic(event: &LikeEvent) -> Vec<u8> {
        let schema = apache_avro::Schema::parse_str(crate::codec::SCHEMA).unwrap();
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(crate::codec::to_value(event))
            .unwrap()
    }

    #[test]
    fn the_direct_encoding_equals_apache_avros_for_edge_values() {
        let longs = [
            1,
            63,
            64,
            127,
            128,
            8191,
            8192,
            1 << 31,
            9_000_000_000,
            i64::MAX,
        ];
        let types = [1, 63, 64, 300, 32_767];
        let millis = [0, 1, 1_700_000_000_123, 4_102_444_800_000];
        let mut checked = 0;
        for (i, &user) in longs.iter().enumerate() {
            for (j, &item) in longs.iter().enumerate() {
                let event = LikeEvent {
                    event_id: EventId::generate(),
                    user_id: UserId::parse(user).unwrap(),
                    item: ItemKey::parse(types[(i + j) % types.len()], item).unwrap(),
                    action: if (i + j) % 2 == 0 {
                        Action::Like
                    } else {
                        Action::Unlike
                    },
                    timestamp: chrono::DateTime::from_timestamp_millis(
                        millis[(i * j) % millis.len()],
                    )
                    .unwrap(),
                };
                let mut direct = Vec::new();
                write(&mut direct, &event);
                assert_eq!(direct, generic(&event), "{event:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, longs.len() * longs.len());
    }

    #[test]
    fn a_framed_record_carries_magic_byte_and_schema_id() {
        let event = LikeEvent {
            event_id: EventId::generate(),
            user_id: UserId::parse(7).unwrap(),
            item: ItemKey::parse(1, 2).unwrap(),
            action: Action::Like,
            timestamp: chrono::Utc::now(),
        };
        let bytes = framed(258, &event);
        assert_eq!(&bytes[..5], &[0, 0, 0, 1, 2]);
        assert_eq!(&bytes[5..], generic(&event).as_slice());
    }
}
