//! A coarse index of a site's events by corrected time, for reading one day of them (the daily
//! activity report, [`super::Store::events_between`]) without an index entry per event.
//!
//! A log write adds, for each hour (UTC) its new events' corrected times fall in, one row: the
//! hour and the first and last seq of those events (`event_hours`, SQLite migration 17,
//! PostgreSQL 13). A day's read takes the rows of its hours, merges their seq ranges, and reads
//! those ranges of the events table by its primary key, keeping the events whose corrected time
//! is in the span. A range may hold events of other hours (a night's log spans several), which
//! the read passes over; it never misses one. Ingest writes a few rows per log instead of an
//! entry per event at a random place of a time-ordered index (`docs/benchmarks.md`, issue 18's
//! cost at ingest).

const HOUR_MS: i64 = 3_600_000;

/// The hour an event's corrected time falls in: its start, in ms.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// One row of `event_hours`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HourSpan {
    pub hour_ms: i64,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// The rows a log write adds, from its inserted events' seq and corrected time: one per hour,
/// in order of hour.
pub fn spans(events: impl IntoIterator<Item = (i64, i64)>) -> Vec<HourSpan> {
    let mut by_hour: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    for (seq, corrected_ms) in events {
        let span = by_hour.entry(hour_of(corrected_ms)).or_insert((seq, seq));
        span.0 = span.0.min(seq);
        span.1 = span.1.max(seq);
    }
    by_hour
        .into_iter()
        .map(|(hour_ms, (first_seq, last_seq))| HourSpan {
            hour_ms,
            first_seq,
            last_seq,
        })
        .collect()
}

/// The hours whose rows a read of `[from_ms, to_ms)` takes: `hour_ms` in `[start, end)`.
pub fn hours_of(from_ms: i64, to_ms: i64) -> (i64, i64) {
    (hour_of(from_ms), to_ms)
}

/// The seq ranges to read (inclusive, in order, none overlapping), from the rows' ranges, from
/// `after` on (the last seq of the previous page, exclusive).
pub fn ranges(mut rows: Vec<(i64, i64)>, after: Option<i64>) -> Vec<(i64, i64)> {
    rows.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(rows.len());
    for (first, last) in rows {
        let first = after.map_or(first, |a| first.max(a.saturating_add(1)));
        if first > last {
            continue;
        }
        match out.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;

    #[test]
    fn a_log_adds_a_row_per_hour_of_its_events() {
        let got = spans([
            (10, 5 * H + 1),
            (11, 5 * H + 59),
            (12, 6 * H),
            (13, 5 * H + 3),
        ]);
        assert_eq!(
            got,
            [
                HourSpan {
                    hour_ms: 5 * H,
                    first_seq: 10,
                    last_seq: 13
                },
                HourSpan {
                    hour_ms: 6 * H,
                    first_seq: 12,
                    last_seq: 12
                },
            ]
        );
        assert_eq!(hours_of(5 * H + 30, 7 * H), (5 * H, 7 * H));
    }

    #[test]
    fn ranges_merge_and_resume_after_a_page() {
        let rows = vec![(20, 30), (1, 5), (6, 8), (25, 40), (50, 50)];
        assert_eq!(ranges(rows.clone(), None), [(1, 8), (20, 40), (50, 50)]);
        assert_eq!(ranges(rows.clone(), Some(7)), [(8, 8), (20, 40), (50, 50)]);
        assert_eq!(ranges(rows, Some(50)), []);
    }
}
