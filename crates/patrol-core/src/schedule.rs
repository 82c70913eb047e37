//! Tour schedules written in a site's local time as people say them ("every 90 minutes from
//! 22:00 to 06:00, every night"; "at 23:00, 01:00, 03:00 and 05:00 on Saturdays and Sundays"),
//! and their expansion into concrete windows (UTC milliseconds) for a span of time.
//!
//! The rules (also in `docs/compliance.md`, "Schedules"):
//!
//! - **Nights.** A rule's windows are grouped in nights. A night belongs to the local date on
//!   which it starts, and `days` names those dates' weekdays: a round from 22:00 on Saturday to
//!   06:00 on Sunday is Saturday's night. In an `every` rule a `to` not later on the clock than
//!   `from` is on the next day; in an `at` list each time earlier on the clock than the one
//!   before it starts the next day (the list is written in the order the night runs).
//! - **Window length.** An `every` window lasts until the next one starts (or `window_min`
//!   minutes, if given), and never past the night's `to`; an `at` window lasts `window_min`.
//!   No window of a rule runs past the start of the rule's next window.
//! - **Local times that do not exist** (the clocks go forward: 01:00-02:00 on the last Sunday of
//!   March in Europe/London) move forward by the gap: 01:30 is 02:30 BST. **Local times that
//!   exist twice** (the clocks go back: 01:00-02:00 on the last Sunday of October) are the first
//!   occurrence: 01:30 is 01:30 BST.
//! - **`every` runs on elapsed time** from the night's start, so the night the clocks go back
//!   has one hour more of rounds and the night they go forward one hour fewer; no window is
//!   doubled or lost, every window but the night's last is `every_min` long.
//!
//! Pure: the zone database is compiled in, nothing is read from the system.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Weekday};
use chrono_tz::Tz;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValidationError;

const MINUTES_PER_DAY: u16 = 24 * 60;

/// The shortest `every_min`: a round every few minutes is no schedule, and each window costs
/// work wherever windows are expanded.
pub const MIN_EVERY_MIN: u32 = 5;
/// The most times an `at` list holds (one every five minutes, all day).
pub const MAX_AT_TIMES: usize = 288;
/// The longest span [`windows_between`] expands in one call.
pub const MAX_SPAN_MS: i64 = 400 * 24 * 3_600_000;

/// A configuration value refused, with the reason (schedules and the rest of the site
/// configuration alike).
pub(crate) fn bad(what: &'static str, reason: impl Into<String>) -> ValidationError {
    ValidationError::BadId {
        what,
        reason: reason.into(),
    }
}

/// One time window in which a tour must be walked (milliseconds since the epoch, UTC). It
/// starts at `start_ms` and ends just before `end_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    /// Whether the window shares any instant with `[from_ms, to_ms)`.
    pub fn overlaps(&self, from_ms: i64, to_ms: i64) -> bool {
        self.start_ms < to_ms && self.end_ms > from_ms
    }
}

/// A site's time zone: an IANA name such as `Europe/London`. Configurations stored before
/// sites had one are in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SiteZone(Tz);

impl Default for SiteZone {
    fn default() -> Self {
        SiteZone::UTC
    }
}

impl SiteZone {
    pub const UTC: SiteZone = SiteZone(Tz::UTC);

    /// The zone of an IANA name (exact spelling, e.g. `Europe/London`, `America/New_York`).
    pub fn new(name: &str) -> Result<Self, ValidationError> {
        Tz::from_str(name).map(SiteZone).map_err(|_| {
            bad(
                "time zone",
                format!("{name:?} is not an IANA time zone name (like \"Europe/London\")"),
            )
        })
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    pub fn tz(&self) -> Tz {
        self.0
    }

    /// `ms` (since the epoch) as a local time of the zone; `None` out of chrono's range.
    pub fn local(&self, ms: i64) -> Option<DateTime<Tz>> {
        DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&self.0))
    }

    /// The instant (ms since the epoch) of a local date and clock time: a time that does not
    /// exist that day moves forward by the gap, one that exists twice is the first.
    pub fn resolve(&self, date: NaiveDate, time: ClockTime) -> i64 {
        let naive = date.and_time(time.naive());
        match self.0.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => t.timestamp_millis(),
            chrono::LocalResult::Ambiguous(a, b) => a.min(b).timestamp_millis(),
            chrono::LocalResult::None => {
                // In a gap the clocks jumped forward: read at the offset in force before the jump,
                // the time lands after it by as much as it lies into the gap. A day earlier is
                // before the jump (no zone changes its offset twice in a day).
                let earlier = naive - Duration::days(1);
                let before = self.0.offset_from_utc_datetime(&earlier).fix();
                (naive - Duration::seconds(i64::from(before.local_minus_utc())))
                    .and_utc()
                    .timestamp_millis()
            }
        }
    }
}

impl fmt::Display for SiteZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for SiteZone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for SiteZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        SiteZone::new(&name).map_err(D::Error::custom)
    }
}

/// A time of day on the clock, to the minute: `"22:00"` in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockTime(u16);

impl ClockTime {
    /// `hour` 0 to 23, `minute` 0 to 59.
    pub fn new(hour: u8, minute: u8) -> Result<Self, ValidationError> {
        if hour > 23 || minute > 59 {
            return Err(bad(
                "time of day",
                format!("{hour}:{minute:02} is not a time of day (00:00 to 23:59)"),
            ));
        }
        Ok(ClockTime(u16::from(hour) * 60 + u16::from(minute)))
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u16 {
        self.0
    }

    fn naive(self) -> chrono::NaiveTime {
        chrono::NaiveTime::from_hms_opt(u32::from(self.0 / 60), u32::from(self.0 % 60), 0)
            .unwrap_or(chrono::NaiveTime::MIN)
    }

    fn from_minutes(minutes: u16) -> Result<Self, ValidationError> {
        if minutes >= MINUTES_PER_DAY {
            return Err(bad(
                "time of day",
                format!("{minutes} minutes is past the end of the day"),
            ));
        }
        Ok(ClockTime(minutes))
    }
}

impl FromStr for ClockTime {
    type Err = ValidationError;

    /// `HH:MM` (or `H:MM`), 00:00 to 23:59.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wrong = || {
            bad(
                "time of day",
                format!("{s:?} is not a time of day written HH:MM (00:00 to 23:59)"),
            )
        };
        let (h, m) = s.split_once(':').ok_or_else(wrong)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !(digits(h) && digits(m) && h.len() <= 2 && m.len() == 2) {
            return Err(wrong());
        }
        let (h, m) = (
            h.parse::<u8>().map_err(|_| wrong())?,
            m.parse::<u8>().map_err(|_| wrong())?,
        );
        ClockTime::new(h, m).map_err(|_| wrong())
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u16(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(D::Error::custom)
        } else {
            ClockTime::from_minutes(u16::deserialize(d)?).map_err(D::Error::custom)
        }
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_WORDS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The weekdays on which a rule's nights start: `["sat", "sun"]` in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Days(u8);

impl Days {
    pub const EVERY: Days = Days(0b111_1111);

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    /// The days named (`mon`, `tue`, ... `sun`, or in full, any case); at least one.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, ValidationError> {
        let mut mask = 0u8;
        for name in names {
            let name = name.as_ref();
            // chrono reads `mon` and `monday`, in any case.
            let day = Weekday::from_str(name).map_err(|_| {
                bad(
                    "day",
                    format!("{name:?} is not a day of the week (mon, tue, ... sun)"),
                )
            })?;
            mask |= 1 << day.num_days_from_monday();
        }
        if mask == 0 {
            return Err(ValidationError::Empty { field: "days" });
        }
        Ok(Days(mask))
    }

    fn names(self) -> Vec<&'static str> {
        (0..7)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| DAY_NAMES[i])
            .collect()
    }
}

/// In words: `every night`, `Mon-Fri nights`, `Sat and Sun nights`, `Mon, Wed and Fri nights`.
impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Days::EVERY {
            return f.write_str("every night");
        }
        // Runs of consecutive days; three or more read as a range.
        let mut parts = Vec::new();
        let mut i = 0;
        while i < 7 {
            if self.0 & (1 << i) == 0 {
                i += 1;
                continue;
            }
            let start = i;
            while i + 1 < 7 && self.0 & (1 << (i + 1)) != 0 {
                i += 1;
            }
            match i - start {
                0 => parts.push(DAY_WORDS[start].to_owned()),
                1 => {
                    parts.push(DAY_WORDS[start].to_owned());
                    parts.push(DAY_WORDS[i].to_owned());
                }
                _ => parts.push(format!("{}-{}", DAY_WORDS[start], DAY_WORDS[i])),
            }
            i += 1;
        }
        match parts.split_last() {
            Some((last, rest)) if !rest.is_empty() => {
                write!(f, "{} and {last} nights", rest.join(", "))
            }
            _ => write!(f, "{} nights", parts.concat()),
        }
    }
}

impl Serialize for Days {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.names().serialize(s)
        } else {
            s.serialize_u8(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let names = Vec::<String>::deserialize(d)?;
            Days::from_names(&names).map_err(D::Error::custom)
        } else {
            let mask = u8::deserialize(d)?;
            if mask == 0 || mask > Days::EVERY.0 {
                return Err(D::Error::custom(format!("{mask:#x} is no set of days")));
            }
            Ok(Days(mask))
        }
    }
}

/// How a rule's windows repeat within a night.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Repeat {
    /// A window every `every_min` minutes of elapsed time, the first at `from`, none starting at
    /// or after `to`.
    Every {
        every_min: u32,
        from: ClockTime,
        to: ClockTime,
    },
    /// A window at each of these times, in the order the night runs.
    At(Vec<ClockTime>),
}

/// One rule of a tour's schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRule {
    pub repeat: Repeat,
    /// The weekdays on which the rule's nights start.
    pub days: Days,
    /// How long each window lasts; `every` rules default to `every_min`, `at` rules need it.
    pub window_min: Option<u32>,
}

/// The JSON form of a rule: `{"every_min", "from", "to"}` or `{"at"}`, with `days` (default
/// every day) and `window_min`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<ClockTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<ClockTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<Vec<ClockTime>>,
    #[serde(default)]
    days: Option<Days>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_min: Option<u32>,
}

/// The binary form (postcard, in the stored configuration): every field, in order.
#[derive(Serialize, Deserialize)]
struct RuleBin {
    repeat: Repeat,
    days: Days,
    window_min: Option<u32>,
}

impl Serialize for ScheduleRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let (every_min, from, to, at) = match &self.repeat {
                Repeat::Every {
                    every_min,
                    from,
                    to,
                } => (Some(*every_min), Some(*from), Some(*to), None),
                Repeat::At(times) => (None, None, None, Some(times.clone())),
            };
            RuleJson {
                every_min,
                from,
                to,
                at,
                days: Some(self.days),
                window_min: self.window_min,
            }
            .serialize(s)
        } else {
            RuleBin {
                repeat: self.repeat.clone(),
                days: self.days,
                window_min: self.window_min,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ScheduleRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let bin = RuleBin::deserialize(d)?;
            return Ok(ScheduleRule {
                repeat: bin.repeat,
                days: bin.days,
                window_min: bin.window_min,
            });
        }
        let json = RuleJson::deserialize(d)?;
        let repeat = match (json.every_min, json.from, json.to, json.at) {
            (Some(every_min), Some(from), Some(to), None) => Repeat::Every {
                every_min,
                from,
                to,
            },
            (None, None, None, Some(at)) => Repeat::At(at),
            (Some(_), _, _, None) => {
                return Err(D::Error::custom(
                    "a schedule rule with \"every_min\" needs \"from\" and \"to\"",
                ));
            }
            (None, _, _, None) => {
                return Err(D::Error::custom(
                    "a schedule rule needs \"every_min\" (with \"from\" and \"to\") or \"at\"",
                ));
            }
            (_, _, _, Some(_)) => {
                return Err(D::Error::custom(
                    "a schedule rule with \"at\" takes no \"every_min\", \"from\" or \"to\"",
                ));
            }
        };
        Ok(ScheduleRule {
            repeat,
            days: json.days.unwrap_or(Days::EVERY),
            window_min: json.window_min,
        })
    }
}

impl ScheduleRule {
    /// Checks what the JSON form cannot: sizes in range, an `at` list in the order its night
    /// runs and within a day, windows of one night that do not overlap.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(w) = self.window_min
            && w == 0
        {
            return Err(bad("schedule", "window_min must be at least 1 minute"));
        }
        match &self.repeat {
            Repeat::Every { every_min, .. } => {
                if !(MIN_EVERY_MIN..=u32::from(MINUTES_PER_DAY)).contains(every_min) {
                    return Err(bad(
                        "schedule",
                        format!(
                            "every_min must be {MIN_EVERY_MIN} to {MINUTES_PER_DAY} minutes, got {every_min}"
                        ),
                    ));
                }
                if let Some(w) = self.window_min
                    && w > *every_min
                {
                    return Err(bad(
                        "schedule",
                        format!(
                            "window_min ({w}) is longer than every_min ({every_min}): windows would overlap"
                        ),
                    ));
                }
            }
            Repeat::At(times) => {
                let Some(window) = self.window_min else {
                    return Err(bad(
                        "schedule",
                        "a schedule rule with \"at\" needs \"window_min\": how long each window lasts",
                    ));
                };
                if times.is_empty() {
                    return Err(ValidationError::Empty {
                        field: "schedule \"at\" list",
                    });
                }
                if times.len() > MAX_AT_TIMES {
                    return Err(bad(
                        "schedule",
                        format!(
                            "an \"at\" list holds at most {MAX_AT_TIMES} times, got {}",
                            times.len()
                        ),
                    ));
                }
                let offsets = night_offsets(times).ok_or_else(|| {
                    bad(
                        "schedule",
                        format!(
                            "the \"at\" times {} are not in the order the night runs (each after \
                             the one before, within 24 hours of the first)",
                            list(times)
                        ),
                    )
                })?;
                for (pair, gap) in times.windows(2).zip(offsets.windows(2)) {
                    if u32::from(gap[1] - gap[0]) < window {
                        return Err(bad(
                            "schedule",
                            format!(
                                "the windows at {} and {} overlap: window_min ({window}) is longer \
                                 than the time between them",
                                pair[0], pair[1]
                            ),
                        ));
                    }
                }
                let last = offsets.last().copied().unwrap_or(0);
                if u32::from(last) + window > u32::from(MINUTES_PER_DAY) {
                    return Err(bad(
                        "schedule",
                        format!(
                            "the window at {} runs into the next night's first at {}",
                            times[times.len() - 1],
                            times[0]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rule's windows of the night starting on local `date` (none if `days` leaves it out),
    /// in order, before windows are cut short at the next one's start.
    fn night(&self, zone: SiteZone, date: NaiveDate) -> Vec<Window> {
        if !self.days.contains(date.weekday()) {
            return Vec::new();
        }
        let Some(next_day) = date.succ_opt() else {
            return Vec::new();
        };
        match &self.repeat {
            Repeat::Every {
                every_min,
                from,
                to,
            } => {
                let start = zone.resolve(date, *from);
                let end_date = if to <= from { next_day } else { date };
                let end = zone.resolve(end_date, *to);
                let step = i64::from(*every_min) * 60_000;
                let len = i64::from(self.window_min.unwrap_or(*every_min)) * 60_000;
                let mut out = Vec::new();
                let mut at = start;
                while at < end {
                    out.push(Window {
                        start_ms: at,
                        end_ms: (at + len).min(end),
                    });
                    at += step;
                }
                out
            }
            Repeat::At(times) => {
                let len = i64::from(self.window_min.unwrap_or(0)) * 60_000;
                let first = times.first().copied();
                times
                    .iter()
                    .map(|t| {
                        let day = if first.is_some_and(|f| *t < f) {
                            next_day
                        } else {
                            date
                        };
                        let start = zone.resolve(day, *t);
                        Window {
                            start_ms: start,
                            end_ms: start + len,
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Minutes from the first time of an `at` list to each, if each comes after the one before
/// within 24 hours of the first.
fn night_offsets(times: &[ClockTime]) -> Option<Vec<u16>> {
    let first = times.first()?.minutes();
    let offsets: Vec<u16> = times
        .iter()
        .map(|t| (t.minutes() + MINUTES_PER_DAY - first) % MINUTES_PER_DAY)
        .collect();
    offsets.windows(2).all(|w| w[0] < w[1]).then_some(offsets)
}

fn list(times: &[ClockTime]) -> String {
    times
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// In words, as a person would say it: `every 90 min 22:00-06:00, every night`,
/// `at 23:00, 01:00, 03:00, 05:00 for 30 min, Sat and Sun nights`.
impl fmt::Display for ScheduleRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repeat {
            Repeat::Every {
                every_min,
                from,
                to,
            } => {
                write!(f, "every {every_min} min {from}-{to}")?;
                if let Some(w) = self.window_min
                    && w != *every_min
                {
                    write!(f, " for {w} min")?;
                }
            }
            Repeat::At(times) => {
                write!(f, "at {}", list(times))?;
                if let Some(w) = self.window_min {
                    write!(f, " for {w} min")?;
                }
            }
        }
        write!(f, ", {}", self.days)
    }
}

/// The local date of `ms` in `zone`, if in chrono's range.
fn local_date(zone: SiteZone, ms: i64) -> Result<NaiveDate, ValidationError> {
    zone.local(ms)
        .map(|t| t.date_naive())
        .ok_or_else(|| bad("time", format!("{ms} ms is out of range")))
}

/// The windows of `rules` (in `zone`) that overlap `[from_ms, to_ms)`, in order of start; a
/// window two rules both give appears once. An empty span gives none; one longer than
/// [`MAX_SPAN_MS`] is an error.
pub fn windows_between(
    rules: &[ScheduleRule],
    zone: SiteZone,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Window>, ValidationError> {
    if to_ms <= from_ms || rules.is_empty() {
        return Ok(Vec::new());
    }
    if to_ms.saturating_sub(from_ms) > MAX_SPAN_MS {
        return Err(bad(
            "time span",
            format!(
                "windows are expanded for at most {} days at a time",
                MAX_SPAN_MS / 86_400_000
            ),
        ));
    }
    // A night lasts at most a day and an hour (a day's `every` rule on the night the clocks go
    // back), so nights starting two days before the span's first date are enough; nights
    // starting after its last date start after it.
    let first = local_date(zone, from_ms)?;
    let first = first
        .checked_sub_days(chrono::Days::new(2))
        .unwrap_or(first);
    let last = local_date(zone, to_ms)?;
    let mut out = Vec::new();
    for rule in rules {
        let mut windows = Vec::new();
        let mut date = first;
        while date <= last {
            windows.extend(rule.night(zone, date));
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        windows.sort();
        // No window of a rule runs into the next (an `at` list's windows can meet on the night
        // the clocks go forward); two times at one instant give one window.
        for i in 0..windows.len() {
            if let Some(next) = windows.get(i + 1).map(|w| w.start_ms) {
                windows[i].end_ms = windows[i].end_ms.min(next);
            }
        }
        out.extend(
            windows
                .into_iter()
                .filter(|w| w.end_ms > w.start_ms && w.overlaps(from_ms, to_ms)),
        );
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The windows of `rules` (in `zone`) of the nights starting on local `date`, in order of start,
/// each once: what [`windows_between`] gives of those nights (a window cut short by the rule's
/// next one, even if that is the next night's first, is cut the same here).
pub fn night_windows(rules: &[ScheduleRule], zone: SiteZone, date: NaiveDate) -> Vec<Window> {
    let mut out = Vec::new();
    for rule in rules {
        let mut windows = rule.night(zone, date);
        windows.sort();
        let next_first = date
            .succ_opt()
            .and_then(|next| rule.night(zone, next).first().map(|w| w.start_ms));
        for i in 0..windows.len() {
            let next = windows.get(i + 1).map(|w| w.start_ms).or(next_first);
            if let Some(next) = next {
                windows[i].end_ms = windows[i].end_ms.min(next);
            }
        }
        out.extend(windows.into_iter().filter(|w| w.end_ms > w.start_ms));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
            .timestamp_millis()
    }

    fn zone(name: &str) -> SiteZone {
        SiteZone::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn rule(json: &str) -> ScheduleRule {
        let rule: ScheduleRule =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        rule.validate().unwrap_or_else(|e| panic!("{json}: {e}"));
        rule
    }

    fn expand(rule: &ScheduleRule, zone_name: &str, from: &str, to: &str) -> Vec<Window> {
        windows_between(
            std::slice::from_ref(rule),
            zone(zone_name),
            ms(from),
            ms(to),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Windows written as UTC instants, `("2026-01-10T22:00Z", "2026-01-10T23:30Z")`.
    fn windows(pairs: &[(&str, &str)]) -> Vec<Window> {
        pairs
            .iter()
            .map(|(a, b)| Window {
                start_ms: ms(&a.replace('Z', ":00Z")),
                end_ms: ms(&b.replace('Z', ":00Z")),
            })
            .collect()
    }

    const EVERY_90: &str = r#"{"every_min": 90, "from": "22:00", "to": "06:00", "days": ["mon","tue","wed","thu","fri","sat","sun"]}"#;

    #[test]
    fn every_90_minutes_runs_across_midnight() {
        // Winter: London is on UTC. The night of Saturday 10 January, nothing of the nights
        // before and after (06:00 and 22:00 are outside the span).
        let got = expand(
            &rule(EVERY_90),
            "Europe/London",
            "2026-01-10T12:00:00Z",
            "2026-01-11T12:00:00Z",
        );
        assert_eq!(
            got,
            windows(&[
                ("2026-01-10T22:00Z", "2026-01-10T23:30Z"),
                ("2026-01-10T23:30Z", "2026-01-11T01:00Z"),
                ("2026-01-11T01:00Z", "2026-01-11T02:30Z"),
                ("2026-01-11T02:30Z", "2026-01-11T04:00Z"),
                ("2026-01-11T04:00Z", "2026-01-11T05:30Z"),
                // The last is cut at 06:00: nothing of the rule runs past `to`.
                ("2026-01-11T05:30Z", "2026-01-11T06:00Z"),
            ])
        );
    }

    #[test]
    fn the_night_the_clocks_go_forward_has_an_hour_fewer_of_rounds() {
        // 2026-03-29, 01:00 GMT becomes 02:00 BST. The night of Saturday 28 March runs from
        // 22:00 GMT (22:00Z) to 06:00 BST (05:00Z): seven hours, on elapsed time from 22:00.
        let got = expand(
            &rule(EVERY_90),
            "Europe/London",
            "2026-03-28T12:00:00Z",
            "2026-03-29T11:00:00Z",
        );
        assert_eq!(
            got,
            windows(&[
                ("2026-03-28T22:00Z", "2026-03-28T23:30Z"), // 22:00-23:30 GMT
                ("2026-03-28T23:30Z", "2026-03-29T01:00Z"), // 23:30 GMT-02:00 BST
                ("2026-03-29T01:00Z", "2026-03-29T02:30Z"), // 02:00-03:30 BST
                ("2026-03-29T02:30Z", "2026-03-29T04:00Z"), // 03:30-05:00 BST
                ("2026-03-29T04:00Z", "2026-03-29T05:00Z"), // 05:00-06:00 BST
            ])
        );
        // Hourly: seven windows where other nights have eight.
        let hourly = rule(r#"{"every_min": 60, "from": "22:00", "to": "06:00"}"#);
        let spring = expand(
            &hourly,
            "Europe/London",
            "2026-03-28T12:00:00Z",
            "2026-03-29T11:00:00Z",
        );
        let before = expand(
            &hourly,
            "Europe/London",
            "2026-03-27T12:00:00Z",
            "2026-03-28T11:00:00Z",
        );
        assert_eq!((spring.len(), before.len()), (7, 8));
        assert_eq!(spring[0].start_ms, ms("2026-03-28T22:00:00Z"));
        assert_eq!(spring[6].end_ms, ms("2026-03-29T05:00:00Z"));
    }

    #[test]
    fn the_night_the_clocks_go_back_has_an_hour_more_of_rounds() {
        // 2026-10-25, 02:00 BST becomes 01:00 GMT. The night of Saturday 24 October runs from
        // 22:00 BST (21:00Z) to 06:00 GMT (06:00Z): nine hours.
        let got = expand(
            &rule(EVERY_90),
            "Europe/London",
            "2026-10-24T12:00:00Z",
            "2026-10-25T12:00:00Z",
        );
        assert_eq!(
            got,
            windows(&[
                ("2026-10-24T21:00Z", "2026-10-24T22:30Z"), // 22:00-23:30 BST
                ("2026-10-24T22:30Z", "2026-10-25T00:00Z"), // 23:30-01:00 BST
                ("2026-10-25T00:00Z", "2026-10-25T01:30Z"), // 01:00 BST-01:30 GMT
                ("2026-10-25T01:30Z", "2026-10-25T03:00Z"), // 01:30-03:00 GMT
                ("2026-10-25T03:00Z", "2026-10-25T04:30Z"), // 03:00-04:30 GMT
                ("2026-10-25T04:30Z", "2026-10-25T06:00Z"), // 04:30-06:00 GMT, full length
            ])
        );
        let hourly = rule(r#"{"every_min": 60, "from": "22:00", "to": "06:00"}"#);
        let autumn = expand(
            &hourly,
            "Europe/London",
            "2026-10-24T12:00:00Z",
            "2026-10-25T12:00:00Z",
        );
        assert_eq!(autumn.len(), 9, "an hour more: nine hourly rounds");
        assert!(
            autumn.windows(2).all(|w| w[0].end_ms == w[1].start_ms),
            "none doubled, none lost: {autumn:?}"
        );
    }

    #[test]
    fn nonexistent_times_move_forward_and_ambiguous_ones_are_the_first() {
        let at_0130 = rule(r#"{"at": ["01:30"], "window_min": 20}"#);
        // Spring: 01:30 on 29 March does not exist in London; it is 02:30 BST (01:30Z). The
        // nights either side keep theirs: one window a night, none lost.
        assert_eq!(
            expand(
                &at_0130,
                "Europe/London",
                "2026-03-28T00:00:00Z",
                "2026-03-31T00:00:00Z"
            ),
            windows(&[
                ("2026-03-28T01:30Z", "2026-03-28T01:50Z"), // 01:30 GMT
                ("2026-03-29T01:30Z", "2026-03-29T01:50Z"), // 02:30-02:50 BST
                ("2026-03-30T00:30Z", "2026-03-30T00:50Z"), // 01:30 BST
            ])
        );
        // Autumn: 01:30 on 25 October happens twice; the first, 01:30 BST (00:30Z), is the one.
        assert_eq!(
            expand(
                &at_0130,
                "Europe/London",
                "2026-10-24T00:00:00Z",
                "2026-10-27T00:00:00Z"
            ),
            windows(&[
                ("2026-10-24T00:30Z", "2026-10-24T00:50Z"), // 01:30 BST
                ("2026-10-25T00:30Z", "2026-10-25T00:50Z"), // the first 01:30, BST
                ("2026-10-26T01:30Z", "2026-10-26T01:50Z"), // 01:30 GMT
            ])
        );
        // An `every` rule starting in the gap starts at the moved time and ends as usual.
        let from_0130 = rule(r#"{"every_min": 60, "from": "01:30", "to": "04:00"}"#);
        assert_eq!(
            expand(
                &from_0130,
                "Europe/London",
                "2026-03-29T00:00:00Z",
                "2026-03-29T12:00:00Z"
            ),
            windows(&[
                ("2026-03-29T01:30Z", "2026-03-29T02:30Z"), // 02:30-03:30 BST
                ("2026-03-29T02:30Z", "2026-03-29T03:00Z"), // 03:30-04:00 BST
            ])
        );
    }

    #[test]
    fn an_at_list_runs_on_the_named_nights_across_midnight() {
        // At 23:00, 01:00, 03:00 and 05:00 on Saturday and Sunday nights, in June (BST):
        // the times after midnight are on the next day, and no weekday night has any.
        let weekend = rule(
            r#"{"at": ["23:00", "01:00", "03:00", "05:00"], "days": ["sat", "sun"], "window_min": 30}"#,
        );
        assert_eq!(
            expand(
                &weekend,
                "Europe/London",
                "2026-06-01T12:00:00Z", // Monday
                "2026-06-08T12:00:00Z"  // the next Monday
            ),
            windows(&[
                ("2026-06-06T22:00Z", "2026-06-06T22:30Z"), // Sat 23:00 BST
                ("2026-06-07T00:00Z", "2026-06-07T00:30Z"), // Sun 01:00 BST, Saturday's night
                ("2026-06-07T02:00Z", "2026-06-07T02:30Z"),
                ("2026-06-07T04:00Z", "2026-06-07T04:30Z"),
                ("2026-06-07T22:00Z", "2026-06-07T22:30Z"), // Sun 23:00 BST
                ("2026-06-08T00:00Z", "2026-06-08T00:30Z"), // Mon 01:00 BST, Sunday's night
                ("2026-06-08T02:00Z", "2026-06-08T02:30Z"),
                ("2026-06-08T04:00Z", "2026-06-08T04:30Z"),
            ])
        );
    }

    #[test]
    fn days_are_the_sites_local_days_far_from_utc() {
        // Auckland in January is UTC+13: Monday night 20:00-02:00 NZDT is Monday 07:00-13:00
        // UTC. Sunday's and Tuesday's nights are not scheduled.
        let monday =
            rule(r#"{"every_min": 120, "from": "20:00", "to": "02:00", "days": ["monday"]}"#);
        assert_eq!(
            expand(
                &monday,
                "Pacific/Auckland",
                "2026-01-10T00:00:00Z",
                "2026-01-15T00:00:00Z"
            ),
            windows(&[
                ("2026-01-12T07:00Z", "2026-01-12T09:00Z"),
                ("2026-01-12T09:00Z", "2026-01-12T11:00Z"),
                ("2026-01-12T11:00Z", "2026-01-12T13:00Z"),
            ])
        );
        // Los Angeles is UTC-8: Friday 22:00 PST is Saturday 06:00 UTC, and it is Friday's.
        let friday = rule(r#"{"at": ["22:00"], "days": ["fri"], "window_min": 60}"#);
        assert_eq!(
            expand(
                &friday,
                "America/Los_Angeles",
                "2026-01-12T00:00:00Z",
                "2026-01-19T00:00:00Z"
            ),
            windows(&[("2026-01-17T06:00Z", "2026-01-17T07:00Z")])
        );
    }

    #[test]
    fn windows_of_a_list_never_overlap_even_when_the_clocks_go_forward() {
        // 00:30 and 02:30 are two hours apart on the clock but one hour apart on 29 March: the
        // first window ends where the second starts.
        let r = rule(r#"{"at": ["00:30", "02:30"], "window_min": 120}"#);
        assert_eq!(
            expand(
                &r,
                "Europe/London",
                "2026-03-29T00:00:00Z",
                "2026-03-29T12:00:00Z"
            ),
            windows(&[
                ("2026-03-29T00:30Z", "2026-03-29T01:30Z"),
                ("2026-03-29T01:30Z", "2026-03-29T03:30Z"),
            ])
        );
    }

    /// Every night of a year, in zones with one-hour and half-hour changes: an hourly rule's
    /// windows cover its night exactly, end to end, each an hour long but the last; an `at`
    /// list gives each of its times once a night, save where two of them are one instant.
    #[test]
    fn no_window_is_lost_or_doubled_on_any_night_of_the_year() {
        let hourly = rule(r#"{"every_min": 60, "from": "22:00", "to": "06:00"}"#);
        let at = rule(r#"{"at": ["23:00", "01:30", "02:30", "05:00"], "window_min": 30}"#);
        let time = |t: &str| t.parse::<ClockTime>().unwrap_or_else(|e| panic!("{e}"));
        for (name, same_instant) in [
            // 01:30 does not exist on 29 March and moves forward by the gap, to 02:30 BST: the
            // list's 01:30 and 02:30 are then one instant, one window.
            ("Europe/London", 1),
            ("America/New_York", 0),
            ("Australia/Lord_Howe", 0),
            ("Asia/Kolkata", 0),
        ] {
            let z = zone(name);
            let jan_1 = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default();
            let mut date = jan_1;
            while date.year() == 2026 {
                let next = date.succ_opt().unwrap_or(date);
                let start = z.resolve(date, time("22:00"));
                let end = z.resolve(next, time("06:00"));
                let got = hourly.night(z, date);
                assert_eq!(
                    got.first().map(|w| w.start_ms),
                    Some(start),
                    "{name} {date}"
                );
                assert_eq!(got.last().map(|w| w.end_ms), Some(end), "{name} {date}");
                assert!(
                    got.windows(2).all(|w| w[0].end_ms == w[1].start_ms
                        && w[0].end_ms - w[0].start_ms == 3_600_000),
                    "{name} {date}: {got:?}"
                );
                assert_eq!(
                    got.len() as i64,
                    (end - start + 3_599_999) / 3_600_000,
                    "{name} {date}"
                );
                date = next;
            }
            // The nights of 2026 (their windows run from 23:00 to 05:30).
            let year = windows_between(
                std::slice::from_ref(&at),
                z,
                z.resolve(jan_1, time("12:00")),
                z.resolve(date, time("12:00")),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(year.len(), 4 * 365 - same_instant, "{name}");
            assert!(
                year.windows(2).all(|w| w[0].end_ms <= w[1].start_ms),
                "{name}: windows overlap"
            );
        }
    }

    /// A date's nights are what the span expansion gives of them: over a year in London (both
    /// clock changes), every window of every night once, each of a night it starts after the
    /// one before ends.
    #[test]
    fn a_dates_night_is_its_part_of_the_expansion() {
        let z = zone("Europe/London");
        let rules = [
            rule(EVERY_90),
            rule(r#"{"at": ["23:00", "01:30", "02:30"], "window_min": 60, "days": ["sat"]}"#),
        ];
        let first = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default();
        let mut nights = Vec::new();
        let mut date = first;
        while date.year() == 2026 {
            nights.extend(night_windows(&rules, z, date));
            date = date.succ_opt().unwrap_or(date);
        }
        nights.sort();
        let from = z.resolve(first, "12:00".parse().unwrap_or_else(|e| panic!("{e}")));
        let to = z.resolve(date, "12:00".parse().unwrap_or_else(|e| panic!("{e}")));
        let span = windows_between(&rules, z, from, to).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nights, span);
        // The spring night: 7 hours, five windows of EVERY_90, the last until 06:00 BST.
        let spring = night_windows(
            &rules[..1],
            z,
            NaiveDate::from_ymd_opt(2026, 3, 28).unwrap_or_default(),
        );
        assert_eq!(spring.len(), 5);
        assert_eq!(spring[4].end_ms, ms("2026-03-29T05:00:00Z"));
    }

    #[test]
    fn a_span_picks_the_windows_it_overlaps() {
        let r = rule(EVERY_90);
        // From 23:45 to 00:10: only the window 23:30-01:00 overlaps.
        assert_eq!(
            expand(
                &r,
                "Europe/London",
                "2026-01-10T23:45:00Z",
                "2026-01-11T00:10:00Z"
            ),
            windows(&[("2026-01-10T23:30Z", "2026-01-11T01:00Z")])
        );
        let z = zone("Europe/London");
        assert_eq!(
            windows_between(std::slice::from_ref(&r), z, 10, 10),
            Ok(vec![])
        );
        assert!(windows_between(std::slice::from_ref(&r), z, 0, MAX_SPAN_MS + 1).is_err());
        assert!(windows_between(&[r], z, i64::MAX - 10, i64::MAX).is_err());
    }

    #[test]
    fn bad_schedules_are_refused_with_a_reason() {
        let parse = |json: &str| -> Result<ScheduleRule, String> {
            let rule: ScheduleRule = serde_json::from_str(json).map_err(|e| e.to_string())?;
            rule.validate().map_err(|e| e.to_string())?;
            Ok(rule)
        };
        let refused = |json: &str, says: &str| match parse(json) {
            Ok(r) => panic!("{json} was accepted: {r:?}"),
            Err(e) => assert!(e.contains(says), "{json}: {e:?} does not say {says:?}"),
        };
        refused(r#"{"at": ["25:00"], "window_min": 30}"#, "\"25:00\"");
        refused(r#"{"at": ["23:60"], "window_min": 30}"#, "HH:MM");
        refused(r#"{"at": ["2300"], "window_min": 30}"#, "HH:MM");
        refused(r#"{"at": ["22:00 "], "window_min": 30}"#, "HH:MM");
        refused(
            r#"{"every_min": 0, "from": "22:00", "to": "06:00"}"#,
            "every_min must be 5 to 1440",
        );
        refused(
            r#"{"every_min": 2000, "from": "22:00", "to": "06:00"}"#,
            "every_min must be 5 to 1440",
        );
        refused(
            r#"{"every_min": 60, "from": "22:00", "to": "06:00", "window_min": 90}"#,
            "overlap",
        );
        refused(
            r#"{"every_min": 60, "from": "22:00", "to": "06:00", "window_min": 0}"#,
            "at least 1 minute",
        );
        refused(
            r#"{"every_min": 60, "from": "22:00"}"#,
            "needs \"from\" and \"to\"",
        );
        refused(r#"{"days": ["mon"]}"#, "needs \"every_min\"");
        refused(
            r#"{"at": ["22:00"], "every_min": 60, "window_min": 30}"#,
            "takes no \"every_min\"",
        );
        refused(r#"{"at": ["22:00"]}"#, "needs \"window_min\"");
        refused(r#"{"at": [], "window_min": 30}"#, "must not be empty");
        refused(
            r#"{"at": ["23:00", "05:00", "01:00"], "window_min": 30}"#,
            "not in the order the night runs",
        );
        refused(
            r#"{"at": ["23:00", "23:00"], "window_min": 30}"#,
            "not in the order the night runs",
        );
        refused(r#"{"at": ["23:00", "23:20"], "window_min": 30}"#, "overlap");
        refused(
            r#"{"at": ["23:00", "22:50"], "window_min": 30}"#,
            "runs into the next night",
        );
        refused(
            r#"{"at": ["22:00"], "window_min": 30, "days": []}"#,
            "days must not be empty",
        );
        refused(
            r#"{"at": ["22:00"], "window_min": 30, "days": ["funday"]}"#,
            "not a day of the week",
        );
        refused(r#"{"at": ["22:00"], "window_mins": 30}"#, "unknown field");
        assert!(SiteZone::new("Europe/Lndon").is_err());
        assert!(SiteZone::new("").is_err());
        assert_eq!(zone("Europe/London").name(), "Europe/London");
        // Midnight is a time like any other; "7:05" reads as 07:05.
        assert!(parse(r#"{"at": ["00:00", "7:05"], "window_min": 30}"#).is_ok());
    }

    #[test]
    fn a_rule_reads_in_words_and_keeps_its_json_form() {
        assert_eq!(
            rule(EVERY_90).to_string(),
            "every 90 min 22:00-06:00, every night"
        );
        let weekend = rule(
            r#"{"at": ["23:00", "01:00", "03:00", "05:00"], "days": ["sat", "sun"], "window_min": 30}"#,
        );
        assert_eq!(
            weekend.to_string(),
            "at 23:00, 01:00, 03:00, 05:00 for 30 min, Sat and Sun nights"
        );
        assert_eq!(
            rule(r#"{"every_min": 60, "from": "20:00", "to": "04:00", "days": ["mon","tue","wed","thu","fri"], "window_min": 45}"#)
                .to_string(),
            "every 60 min 20:00-04:00 for 45 min, Mon-Fri nights"
        );
        assert_eq!(
            rule(r#"{"at": ["12:00"], "days": ["fri", "mon", "wed"], "window_min": 30}"#)
                .days
                .to_string(),
            "Mon, Wed and Fri nights"
        );
        let json = serde_json::to_value(&weekend).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"at": ["23:00", "01:00", "03:00", "05:00"], "days": ["sat", "sun"],
                               "window_min": 30})
        );
        let every = serde_json::to_value(rule(EVERY_90)).unwrap_or_default();
        assert_eq!(
            every,
            serde_json::json!({"every_min": 90, "from": "22:00", "to": "06:00",
                               "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]})
        );
        // The binary form gives the rule back.
        let bytes = postcard::to_allocvec(&weekend).unwrap_or_default();
        assert_eq!(postcard::from_bytes::<ScheduleRule>(&bytes), Ok(weekend));
    }
}
