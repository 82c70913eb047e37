//! # patrol-term
//!
//! What the command-line tools, `patrol` and `patrol-server`, print for people, written once
//! for both: tables with a header row and columns that never wrap, times in the reader's time
//! zone with their offset, text from a store or a server made safe for a terminal
//! ([`shown`]), and telling a reader who closed the pipe from a real failure
//! ([`closed_pipe`]). `--json` output is not made here: it keeps the API's fields and RFC 3339
//! UTC times.

use chrono::{DateTime, Local, TimeZone, Utc};
use comfy_table::{ContentArrangement, Table, presets};

mod shown;
pub use shown::shown;

/// Shown in a cell whose value is absent.
pub const NONE: &str = "-";

/// A table with the given column names (upper case) and no rows yet.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        // Columns never wrap, so that every row stays one line that `cut` and `awk` can read.
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    table
}

/// The table as lines: two spaces between columns, no leading or trailing blanks, no final
/// line break.
pub fn render(table: &mut Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

/// `t` in the zone `tz`, to the second, with the zone's offset: `2026-12-06 18:03:12 +01:00`.
pub fn time_in<Tz: TimeZone>(t: DateTime<Utc>, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    t.with_timezone(tz)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// [`time_in`] the reader's time zone (`TZ`, else the system's).
pub fn local_time(t: DateTime<Utc>) -> String {
    time_in(t, &Local)
}

/// [`time_in`] of milliseconds since the epoch; the number itself if out of range.
pub fn ms_in<Tz: TimeZone>(ms: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| time_in(t, tz))
}

/// [`ms_in`] the reader's time zone.
pub fn local_ms(ms: i64) -> String {
    ms_in(ms, &Local)
}

/// Whether `e` is a write to standard output that found its reader gone (`... | head -1`):
/// nothing is wrong, and the command ends quietly.
pub fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    #[test]
    fn times_carry_the_zones_offset() {
        let plus_one = FixedOffset::east_opt(3600).map(|tz| ms_in(1_796_554_192_330, &tz));
        assert_eq!(plus_one.as_deref(), Some("2026-12-06 11:49:52 +01:00"));
    }

    #[test]
    fn a_table_has_its_header_and_no_trailing_blanks() {
        let mut t = table(&["ID", "NAME"]);
        t.add_row(vec!["site-1", "St Mary's"]);
        t.add_row(vec!["s2", "-"]);
        assert_eq!(render(&mut t), "ID      NAME\nsite-1  St Mary's\ns2      -");
    }

    #[test]
    fn only_a_closed_pipe_is_a_quiet_end() {
        let pipe = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing the log");
        assert!(closed_pipe(&pipe));
        let other = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!closed_pipe(&other));
    }
}
