//! Property test of the bounded dedup window the rebuild uses: whatever the
//! record times (late, repeated, far apart) and ids, it decides every record
//! exactly as an unbounded memory under the same rule, i.e. forgetting never
//! changes a decision, so the rebuild counts what the projector counts.

use std::time::Duration;

use likes_domain::{DedupHorizon, DedupMemory, DedupWindow, EventId, ItemKey, LogClock};
use proptest::prelude::*;

const HORIZON: Duration = Duration::from_millis(50);

proptest! {
    #[test]
    fn a_bounded_window_decides_every_record_as_an_unbounded_memory(
        records in prop::collection::vec((0u8..6, 0u8..3, -20i64..40), 0..300),
    ) {
        let mut window = DedupWindow::new(HORIZON);
        let mut memory = DedupMemory::new(DedupHorizon::new(HORIZON));
        let mut clock = LogClock::default();
        let mut time = 1_000i64;
        for (id, item, step) in records {
            time += step;
            let key = (
                ItemKey::parse(1, i64::from(item) + 1).unwrap(),
                EventId::from_uuid(uuid::Uuid::from_u128(u128::from(id) + 1)).unwrap(),
            );
            let expected = memory.admit(key, clock.tick(time));
            prop_assert_eq!(window.first_sight(key, time), expected);
        }
    }
}
