//! Printing history rows as they come: an aligned table for people, or JSON
//! Lines, so a long history never has to be held before it is shown.

use std::io::Write;

use crate::history::{HistoryRow, HistorySummary};
use crate::output::{Format, json_line, table_row};

/// Prints history rows as they come, in `format`.
pub struct HistoryPrinter<W: Write> {
    out: W,
    format: Format,
    header_done: bool,
}

const WIDTHS: [usize; 9] = [4, 8, 24, 36, 10, 14, 6, 13, 5];

impl<W: Write> HistoryPrinter<W> {
    /// A printer writing to `out`; nothing is printed before the first row.
    pub fn new(out: W, format: Format) -> Self {
        Self {
            out,
            format,
            header_done: false,
        }
    }

    /// Prints one row (the table header before the first).
    pub fn print(&mut self, row: &HistoryRow) -> anyhow::Result<()> {
        match self.format {
            Format::Json => json_line(&mut self.out, row),
            Format::Table => {
                if !self.header_done {
                    self.header_done = true;
                    let header = [
                        "part",
                        "offset",
                        "timestamp",
                        "event_id",
                        "user",
                        "item",
                        "action",
                        "effect",
                        "count",
                    ];
                    table_row(&mut self.out, &WIDTHS, &header.map(String::from))?;
                }
                let cells = [
                    row.partition.to_string(),
                    row.offset.to_string(),
                    row.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                    row.event_id.clone(),
                    row.user_id.to_string(),
                    format!("{}:{}", row.item_type, row.item_id),
                    row.action.symbol().to_lowercase(),
                    row.effect.as_str().to_string(),
                    row.count.to_string(),
                ];
                table_row(&mut self.out, &WIDTHS, &cells)?;
                Ok(())
            }
        }
    }

    /// Says what the read covered, on stderr (stdout stays pure data).
    pub fn finish(mut self, summary: &HistorySummary) -> anyhow::Result<()> {
        self.out.flush()?;
        if self.format == Format::Table && !self.header_done {
            eprintln!("no events");
        }
        if summary.relative {
            eprintln!(
                "note: the read starts after the log's beginning (--since or retention); \
                 running counts start from zero there"
            );
        }
        if summary.poison > 0 {
            eprintln!(
                "note: {} undecodable records skipped (see the dead-letter topic)",
                summary.poison
            );
        }
        Ok(())
    }
}
