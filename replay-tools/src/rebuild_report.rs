//! What `rebuild postgres` is asked ([`RebuildFrom`]) and what it reports
//! ([`PostgresRebuild`], printed as a few lines or one JSON document).

use std::io::Write;

use serde::Serialize;

use crate::output::{Format, json_line};
use crate::shadow::CountDiff;

/// Where a rebuild starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RebuildFrom {
    /// The topic from offset 0 of every partition.
    Earliest,
    /// A snapshot's rows, then the topic from the snapshot's offsets.
    Snapshot(i64),
}

impl std::str::FromStr for RebuildFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("snapshot:") {
            None if s == "earliest" => Ok(Self::Earliest),
            Some(id) => id
                .parse()
                .map(Self::Snapshot)
                .map_err(|_| format!("snapshot:<id> needs a numeric id, got {id:?}")),
            None => Err(format!("expected earliest or snapshot:<id>, got {s:?}")),
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresRebuild {
    pub from: RebuildFrom,
    pub dry_run: bool,
    /// Events read from the topic (all passes), and how many were duplicates.
    pub events: u64,
    pub duplicates: u64,
    /// Undecodable records skipped (the projector sends them to the DLQ).
    pub poison: u64,
    /// Events applied inside the swap transaction (the final tail).
    pub tail_events: u64,
    /// Seconds and events/s of reading and applying the log (all passes).
    pub seconds: f64,
    pub events_per_second: f64,
    /// Shadow items whose count differs from `COUNT(*)` of shadow `user_likes`.
    pub inconsistent: i64,
    /// Items whose rebuilt count differs from the live one at the same offsets.
    pub live_differences: i64,
    pub listed_differences: Vec<CountDiff>,
    /// Whether the shadow tables replaced the live ones.
    pub swapped: bool,
}

/// Prints a rebuild's report: a few lines, or one JSON document.
pub fn print(out: &mut impl Write, done: &PostgresRebuild, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return json_line(out, done);
    }
    writeln!(
        out,
        "read {} events ({} duplicates, {} poison, {} in the final tail) in {:.1} s: {:.0} events/s",
        done.events,
        done.duplicates,
        done.poison,
        done.tail_events,
        done.seconds,
        done.events_per_second
    )?;
    writeln!(
        out,
        "rebuilt counts vs live at the same offsets: {} items differ",
        done.live_differences
    )?;
    for d in &done.listed_differences {
        writeln!(
            out,
            "  item {}:{}  live {}  rebuilt {}",
            d.item_type, d.item_id, d.live, d.rebuilt
        )?;
    }
    let verdict = match (done.dry_run, done.swapped) {
        (true, _) => "dry run: live tables untouched, shadow tables dropped",
        (false, true) => "swapped: the rebuilt tables are live",
        (false, false) => "not swapped",
    };
    writeln!(out, "{verdict}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_earliest_or_a_snapshot_id() {
        assert_eq!("earliest".parse(), Ok(RebuildFrom::Earliest));
        assert_eq!("snapshot:12".parse(), Ok(RebuildFrom::Snapshot(12)));
        assert!("snapshot:x".parse::<RebuildFrom>().is_err());
        assert!("latest".parse::<RebuildFrom>().is_err());
    }
}
