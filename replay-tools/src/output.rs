//! Output formats shared by the commands: aligned tables for people, JSON for
//! programs. Streaming commands print JSON Lines (one object per line) so that
//! a long history never has to be held to close an array.

use std::io::Write;

/// How a command prints its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for reading.
    #[default]
    Table,
    /// JSON (JSON Lines for streaming commands).
    Json,
}

/// Writes one row of left-aligned cells with the given widths.
pub fn table_row(out: &mut impl Write, widths: &[usize], cells: &[String]) -> std::io::Result<()> {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let width = widths.get(i).copied().unwrap_or(0);
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// Writes `value` as one line of JSON.
pub fn json_line(out: &mut impl Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_padded_except_the_last_cell() {
        let mut out = Vec::new();
        table_row(&mut out, &[4, 3], &["a".into(), "b".into(), "c".into()]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a     b    c\n");
    }
}
