//! A report as PDF: A4 pages of tables, one per section, in Helvetica (one of the fonts every
//! PDF reader has built in, so nothing is embedded and the text stays selectable and
//! extractable). [`pdf_writer`] writes the objects; the layout here measures text with the
//! font's published metrics (the core-14 AFM files), wraps cells by words, breaks tables across
//! pages with their header repeated, and numbers the pages.
//!
//! Deterministic: the same report gives the same bytes. The document's id is a digest of its
//! pages, its creation date the report's `as_of`; nothing reads the clock or a random source.
//! Text goes out in WinAnsiEncoding (Latin-1 and a few typographic signs); a character outside
//! it is shown as `?` (the CSV has the exact text).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::OnceLock;

use patrol_core::compliance::Tally;
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use sha2::{Digest, Sha256};

use super::Dar;
use super::tours::CheckpointStatus;

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 40.0;
const BODY_W: f32 = PAGE_W - 2.0 * MARGIN;
/// The lowest a row may reach: above the footer.
const BOTTOM: f32 = MARGIN + 18.0;
const CELL_SIZE: f32 = 7.5;
const CELL_LEADING: f32 = 9.0;
const CELL_PAD: f32 = 2.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Font {
    Regular,
    Bold,
}

impl Font {
    fn resource(self) -> Name<'static> {
        match self {
            Font::Regular => Name(b"F1"),
            Font::Bold => Name(b"F2"),
        }
    }
}

/// Advance widths (1/1000 em) of the printable ASCII characters, by code, from the font's AFM.
struct Metrics {
    ascii: [u16; 95],
    /// For a character beyond ASCII: as wide as a capital, so a cell never overflows.
    other: u16,
}

impl Metrics {
    fn parse(afm: &str) -> Metrics {
        // `C 65 ; WX 667 ; N A ; B ...`: code, width, glyph name.
        let mut by_code = HashMap::new();
        let mut by_name = HashMap::new();
        for line in afm.lines().filter(|l| l.starts_with("C ")) {
            let mut code = None;
            let mut width = None;
            let mut name = None;
            for part in line.split(';') {
                let mut words = part.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("C"), Some(c)) => code = c.parse::<i32>().ok(),
                    (Some("WX"), Some(w)) => width = w.parse::<u16>().ok(),
                    (Some("N"), Some(n)) => name = Some(n),
                    _ => {}
                }
            }
            if let (Some(width), Some(name)) = (width, name) {
                by_name.insert(name, width);
                if let Some(code) = code {
                    by_code.insert(code, width);
                }
            }
        }
        let mut ascii = [0u16; 95];
        for (i, w) in ascii.iter_mut().enumerate() {
            let code = i as i32 + 32;
            // The AFM's codes are Adobe's StandardEncoding, which differs from ASCII (and
            // WinAnsi) only in the two quotes.
            *w = match code {
                39 => by_name.get("quotesingle").copied(),
                96 => by_name.get("grave").copied(),
                _ => by_code.get(&code).copied(),
            }
            .unwrap_or(556);
        }
        Metrics {
            ascii,
            other: by_name.get("H").copied().unwrap_or(722),
        }
    }

    fn of(font: Font) -> &'static Metrics {
        static REGULAR: OnceLock<Metrics> = OnceLock::new();
        static BOLD: OnceLock<Metrics> = OnceLock::new();
        match font {
            Font::Regular => {
                REGULAR.get_or_init(|| Metrics::parse(pdf_core_14_font_afms::HELVETICA))
            }
            Font::Bold => {
                BOLD.get_or_init(|| Metrics::parse(pdf_core_14_font_afms::HELVETICA_BOLD))
            }
        }
    }

    /// The width of `text` at `size` points.
    fn width(&self, text: &str, size: f32) -> f32 {
        let units: u32 = text
            .chars()
            .map(|c| match c as u32 {
                32..=126 => u32::from(self.ascii[c as usize - 32]),
                _ => u32::from(self.other),
            })
            .sum();
        units as f32 * size / 1000.0
    }
}

/// `text` in WinAnsiEncoding, the font's encoding: Latin-1 and the typographic signs it has;
/// a control character is a space, anything else `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '€' => 0x80,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '™' => 0x99,
            c if c.is_control() => b' ',
            _ => b'?',
        })
        .collect()
}

/// `text` broken into lines no wider than `width`: at spaces, and inside a word longer than a
/// line.
fn wrap(text: &str, font: Font, size: f32, width: f32) -> Vec<String> {
    let m = Metrics::of(font);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_owned()
            } else {
                format!("{line} {word}")
            };
            if m.width(&candidate, size) <= width {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            // The word alone; cut it where it does not fit.
            for c in word.chars() {
                line.push(c);
                if m.width(&line, size) > width && line.chars().count() > 1 {
                    let last = line.pop().unwrap_or(' ');
                    lines.push(std::mem::take(&mut line));
                    line.push(last);
                }
            }
        }
        lines.push(line);
    }
    lines
}

/// What a page draws.
#[derive(Debug)]
enum Op {
    Text {
        x: f32,
        y: f32,
        font: Font,
        size: f32,
        text: String,
    },
    /// A filled grey rectangle (0: black, 1: white).
    Fill { rect: [f32; 4], gray: f32 },
    /// A thin grey line.
    Rule { x1: f32, x2: f32, y: f32 },
}

/// Lays the report out top to bottom, page after page.
struct Layout {
    pages: Vec<Vec<Op>>,
    /// The baseline area's top on the current page.
    y: f32,
}

impl Layout {
    fn new() -> Self {
        Layout {
            pages: vec![Vec::new()],
            y: PAGE_H - MARGIN,
        }
    }

    fn page(&mut self) -> &mut Vec<Op> {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = PAGE_H - MARGIN;
    }

    /// Room for `height` more points on this page, or a new page.
    fn ensure(&mut self, height: f32) {
        if self.y - height < BOTTOM {
            self.new_page();
        }
    }

    fn text(&mut self, x: f32, font: Font, size: f32, text: &str) {
        let y = self.y - size;
        self.page().push(Op::Text {
            x,
            y,
            font,
            size,
            text: text.to_owned(),
        });
    }

    /// A paragraph across the page, wrapped.
    fn paragraph(&mut self, font: Font, size: f32, text: &str) {
        for line in wrap(text, font, size, BODY_W) {
            self.ensure(size * 1.3);
            self.text(MARGIN, font, size, &line);
            self.y -= size * 1.3;
        }
    }

    fn gap(&mut self, points: f32) {
        self.y -= points;
    }

    /// A section: its heading, then its table (columns as fractions of the width), or `empty`
    /// in words when it has no rows. A heading never ends a page alone.
    fn section(&mut self, title: &str, columns: &[(&str, f32)], rows: &[Vec<String>], empty: &str) {
        self.gap(8.0);
        self.ensure(13.0 + 2.0 * (CELL_LEADING + 2.0 * CELL_PAD));
        self.text(MARGIN, Font::Bold, 11.0, title);
        self.y -= 15.0;
        if rows.is_empty() {
            self.text(MARGIN, Font::Regular, 8.5, empty);
            self.y -= 12.0;
            return;
        }
        let widths: Vec<f32> = columns.iter().map(|(_, f)| f * BODY_W).collect();
        let header: Vec<String> = columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        // A table without headings (the summary) has no header row.
        let header = (!header.iter().all(String::is_empty)).then_some(header);
        if let Some(header) = &header {
            self.row(header, &widths, Font::Bold, true);
        }
        for row in rows {
            let height = self.row_height(row, &widths, Font::Regular);
            if self.y - height < BOTTOM {
                self.new_page();
                self.text(MARGIN, Font::Bold, 9.0, &format!("{title} (continued)"));
                self.y -= 13.0;
                if let Some(header) = &header {
                    self.row(header, &widths, Font::Bold, true);
                }
            }
            self.row(row, &widths, Font::Regular, false);
        }
    }

    fn row_height(&self, cells: &[String], widths: &[f32], font: Font) -> f32 {
        let lines = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| wrap(c, font, CELL_SIZE, w - 2.0 * CELL_PAD).len())
            .max()
            .unwrap_or(1);
        lines as f32 * CELL_LEADING + 2.0 * CELL_PAD
    }

    fn row(&mut self, cells: &[String], widths: &[f32], font: Font, header: bool) {
        let height = self.row_height(cells, widths, font);
        let top = self.y;
        if header {
            self.page().push(Op::Fill {
                rect: [MARGIN, top - height, BODY_W, height],
                gray: 0.88,
            });
        }
        let mut x = MARGIN;
        for (cell, w) in cells.iter().zip(widths) {
            let mut y = top - CELL_PAD - CELL_SIZE;
            for line in wrap(cell, font, CELL_SIZE, w - 2.0 * CELL_PAD) {
                if !line.is_empty() {
                    self.page().push(Op::Text {
                        x: x + CELL_PAD,
                        y,
                        font,
                        size: CELL_SIZE,
                        text: line,
                    });
                }
                y -= CELL_LEADING;
            }
            x += w;
        }
        self.y -= height;
        let y = self.y;
        self.page().push(Op::Rule {
            x1: MARGIN,
            x2: MARGIN + BODY_W,
            y,
        });
    }
}

/// A time in the site's zone for a person: `23:10:04 +00:00` on the report's date, else with
/// its date first.
fn when(dar: &Dar, ms: i64) -> String {
    match dar.time_zone.local(ms) {
        Some(t) if t.date_naive() == dar.date => t.format("%H:%M:%S %:z").to_string(),
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        None => ms.to_string(),
    }
}

fn opt_when(dar: &Dar, ms: Option<i64>) -> String {
    ms.map(|ms| when(dar, ms)).unwrap_or_default()
}

/// The last 8 hex digits of an id (the random end of a UUIDv7, whose start is its time): enough
/// to tell a day's ids apart; the CSV has them whole.
fn short(id: &impl ToString) -> String {
    let id = id.to_string();
    id[id.len().saturating_sub(8)..].to_owned()
}

/// The report laid out in pages.
fn lay_out(dar: &Dar) -> Vec<Vec<Op>> {
    let mut l = Layout::new();
    l.text(MARGIN, Font::Bold, 16.0, "Daily activity report");
    l.y -= 22.0;
    l.paragraph(
        Font::Bold,
        11.0,
        &format!("{} ({})", dar.site_name, dar.site),
    );
    let zone = dar.time_zone.name();
    l.paragraph(
        Font::Regular,
        9.0,
        &format!(
            "Date: {} in {zone}, from {} to {}.",
            dar.date,
            crate::report::csv::local_time(dar.time_zone, dar.from_ms),
            crate::report::csv::local_time(dar.time_zone, dar.to_ms),
        ),
    );
    if let Some(shift) = dar.shift {
        let guard = dar
            .guards
            .first()
            .map(|g| g.guard.to_string())
            .unwrap_or_default();
        l.paragraph(
            Font::Regular,
            9.0,
            &format!("Shift: {shift} (guard {guard}): this shift's part of the day only."),
        );
    }
    l.paragraph(
        Font::Regular,
        9.0,
        &format!(
            "Statuses as of {}. Times are the site's local time with its UTC offset, corrected \
             for each phone's clock.",
            crate::report::csv::local_time(dar.time_zone, dar.as_of_ms)
        ),
    );
    if dar.tours.windows.iter().any(|w| !w.is_final) {
        l.paragraph(
            Font::Regular,
            9.0,
            "Windows marked provisional are not final yet: a phone on shift during them has not \
             delivered its log past them and their deadline has not passed, so a late sync can \
             still turn a missed checkpoint into a done one.",
        );
    }
    let totals = dar.tours.totals();
    let pct = percent_shown(&totals);
    let summary = vec![
        vec!["Guards on duty".to_owned(), dar.guards.len().to_string()],
        vec![
            "Tour windows".to_owned(),
            format!(
                "{}: {} checkpoints, {} on time, {} late, {} missed, {} pending; compliance {pct}",
                dar.tours.windows.len(),
                totals.total(),
                totals.done,
                totals.done_late,
                totals.missed,
                totals.open
            ),
        ],
        vec!["Incidents".to_owned(), dar.incidents.len().to_string()],
        vec!["Panic alarms".to_owned(), dar.alarms.len().to_string()],
        vec!["Notes".to_owned(), dar.notes.len().to_string()],
        vec!["Anomalies".to_owned(), dar.anomalies.len().to_string()],
    ];
    l.section("Summary", &[("", 0.25), ("", 0.75)], &summary, "");

    let guards: Vec<Vec<String>> = dar
        .guards
        .iter()
        .map(|g| {
            vec![
                g.guard.to_string(),
                short(&g.device),
                short(&g.shift),
                opt_when(dar, g.started_ms),
                g.ended_ms
                    .map_or_else(|| "on duty".to_owned(), |e| when(dar, e)),
                g.events.to_string(),
                g.scans.to_string(),
                g.end_note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    l.section(
        "Guards on duty",
        &[
            ("Guard", 0.13),
            ("Device", 0.09),
            ("Shift", 0.09),
            ("Start", 0.17),
            ("End", 0.17),
            ("Events", 0.07),
            ("Scans", 0.07),
            ("End note", 0.21),
        ],
        &guards,
        "No guard was on duty.",
    );

    let handovers: Vec<Vec<String>> = dar
        .handovers
        .iter()
        .map(|h| {
            vec![
                when(dar, h.at_ms),
                h.guard.to_string(),
                h.to_guard
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                h.text.clone(),
            ]
        })
        .collect();
    l.section(
        "Handovers",
        &[
            ("Time", 0.17),
            ("From", 0.13),
            ("To", 0.13),
            ("Handed over", 0.57),
        ],
        &handovers,
        "No handovers.",
    );

    let windows: Vec<Vec<String>> = dar
        .tours
        .windows
        .iter()
        .map(|w| {
            let c = w.counts();
            vec![
                w.tour_name.clone(),
                format!("{} to {}", when(dar, w.start_ms), when(dar, w.end_ms)),
                w.status().words().to_owned(),
                if w.is_final { "final" } else { "provisional" }.to_owned(),
                c.done.to_string(),
                c.done_late.to_string(),
                c.missed.to_string(),
                c.open.to_string(),
                percent_shown(&c),
            ]
        })
        .collect();
    l.section(
        "Tour windows",
        &[
            ("Tour", 0.15),
            ("Window", 0.27),
            ("Status", 0.12),
            ("Standing", 0.1),
            ("On time", 0.07),
            ("Late", 0.07),
            ("Missed", 0.07),
            ("Pending", 0.07),
            ("Done", 0.08),
        ],
        &windows,
        "No tour windows start on this day.",
    );

    let exceptions: Vec<Vec<String>> = dar
        .tours
        .windows
        .iter()
        .flat_map(|w| {
            w.checkpoints
                .iter()
                // Overdue: only in a report asked for while a grace runs; the supervisor wants it.
                .filter(|c| {
                    matches!(
                        c.status,
                        CheckpointStatus::Late
                            | CheckpointStatus::Overdue
                            | CheckpointStatus::Missed
                    )
                })
                .map(move |c| {
                    vec![
                        w.tour_name.clone(),
                        when(dar, w.start_ms),
                        c.name.clone(),
                        c.status.words().to_owned(),
                        opt_when(dar, c.scanned_at_ms),
                        c.guard
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        if w.is_final { "final" } else { "provisional" }.to_owned(),
                    ]
                })
        })
        .collect();
    l.section(
        "Late, overdue and missed checkpoints",
        &[
            ("Tour", 0.15),
            ("Window", 0.15),
            ("Checkpoint", 0.18),
            ("Status", 0.13),
            ("Scanned", 0.17),
            ("Guard", 0.12),
            ("Standing", 0.1),
        ],
        &exceptions,
        "No checkpoint was late or missed.",
    );

    let amendments: Vec<Vec<String>> = dar
        .tours
        .amendments
        .iter()
        .map(|a| {
            vec![
                a.tour.clone(),
                when(dar, a.window_start_ms),
                a.checkpoint.to_string(),
                a.before.words().to_owned(),
                a.after.words().to_owned(),
                when(dar, a.at_ms),
                a.event.as_ref().map(short).unwrap_or_default(),
            ]
        })
        .collect();
    l.section(
        "Amendments to final windows",
        &[
            ("Tour", 0.14),
            ("Window", 0.16),
            ("Checkpoint", 0.16),
            ("Before", 0.12),
            ("After", 0.12),
            ("Amended", 0.18),
            ("Event", 0.12),
        ],
        &amendments,
        "No amendments.",
    );

    let incidents: Vec<Vec<String>> = dar
        .incidents
        .iter()
        .map(|i| {
            vec![
                short(&i.id),
                format!(
                    "{}, {}",
                    i.category.as_deref().unwrap_or("-"),
                    i.severity.as_deref().unwrap_or("-")
                ),
                i.status.clone(),
                opt_when(dar, i.reported_at_ms),
                i.reported_by.clone().unwrap_or_default(),
                i.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut empty = "No incidents.".to_owned();
    if dar.incidents_truncated {
        empty.push_str(" (More incidents were written than a report lists.)");
    }
    l.section(
        "Incidents",
        &[
            ("Incident", 0.1),
            ("Category", 0.15),
            ("Status", 0.11),
            ("Reported", 0.17),
            ("By", 0.12),
            ("Description", 0.35),
        ],
        &incidents,
        &empty,
    );
    let history: Vec<Vec<String>> = dar
        .incidents
        .iter()
        .flat_map(|i| {
            i.history.iter().map(move |h| {
                vec![
                    short(&i.id),
                    when(dar, h.at_ms),
                    h.by.clone(),
                    h.what.clone(),
                ]
            })
        })
        .collect();
    if !history.is_empty() {
        l.section(
            "Incident history",
            &[("Incident", 0.1), ("Time", 0.2), ("By", 0.2), ("What", 0.5)],
            &history,
            "",
        );
    }

    let alarms: Vec<Vec<String>> = dar
        .alarms
        .iter()
        .map(|a| {
            vec![
                a.guard.to_string(),
                when(dar, a.raised_ms),
                when(dar, a.device_time_ms),
                when(dar, a.received_ms),
                opt_when(dar, a.acknowledged_ms),
                a.acknowledged_by
                    .clone()
                    .unwrap_or_else(|| "not acknowledged".to_owned()),
            ]
        })
        .collect();
    l.section(
        "Panic alarms",
        &[
            ("Guard", 0.13),
            ("Raised", 0.17),
            ("Phone clock", 0.17),
            ("Received", 0.17),
            ("Acknowledged", 0.18),
            ("By", 0.18),
        ],
        &alarms,
        "No panic alarms.",
    );

    let notes: Vec<Vec<String>> = dar
        .notes
        .iter()
        .map(|n| {
            let note = match n.files.len() {
                0 => n.text.clone(),
                _ => format!("{} [attached: {}]", n.text, n.files.join(", "))
                    .trim_start()
                    .to_owned(),
            };
            vec![when(dar, n.at_ms), n.guard.to_string(), note]
        })
        .collect();
    l.section(
        "Notes",
        &[("Time", 0.17), ("Guard", 0.13), ("Note", 0.7)],
        &notes,
        "No notes.",
    );

    // Every flagged event is in the CSV; the PDF, which people read, counts them by flag and
    // lists the first ones.
    let mut by_flag: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &dar.anomalies {
        for (name, _) in &a.flags {
            *by_flag.entry(name.as_str()).or_default() += 1;
        }
    }
    let counts: Vec<Vec<String>> = by_flag
        .iter()
        .map(|(name, n)| vec![name.replace('_', " "), n.to_string()])
        .collect();
    l.section(
        "Anomalies by flag",
        &[("Flag", 0.3), ("Events", 0.7)],
        &counts,
        "No flagged events.",
    );
    let anomalies: Vec<Vec<String>> = dar
        .anomalies
        .iter()
        .take(PDF_MAX_ANOMALIES)
        .map(|a| {
            let words: Vec<&str> = a.flags.iter().map(|(_, w)| w.as_str()).collect();
            vec![
                when(dar, a.at_ms),
                a.guard.to_string(),
                a.kind.replace('_', " "),
                a.checkpoint
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                words.join("; "),
            ]
        })
        .collect();
    // Without flagged events the counts above already say so, once.
    if !anomalies.is_empty() {
        l.section(
            "Anomalies",
            &[
                ("Time", 0.17),
                ("Guard", 0.13),
                ("Event", 0.15),
                ("Checkpoint", 0.15),
                ("Flagged", 0.4),
            ],
            &anomalies,
            "",
        );
    }
    if dar.anomalies.len() > PDF_MAX_ANOMALIES {
        l.paragraph(
            Font::Regular,
            9.0,
            &format!(
                "The first {PDF_MAX_ANOMALIES} of {} flagged events; the CSV's anomalies table \
                 holds every one.",
                dar.anomalies.len()
            ),
        );
    }

    // Footers, now that the pages are counted.
    let count = l.pages.len();
    let footer = |n: usize| {
        format!(
            "{} - daily activity report {} - page {n} of {count}",
            dar.site_name, dar.date
        )
    };
    for (i, page) in l.pages.iter_mut().enumerate() {
        page.push(Op::Text {
            x: MARGIN,
            y: MARGIN - 4.0,
            font: Font::Regular,
            size: 7.0,
            text: footer(i + 1),
        });
    }
    l.pages
}

/// A page's content stream.
fn content(ops: &[Op]) -> Vec<u8> {
    let mut c = Content::new();
    for op in ops {
        match op {
            Op::Text {
                x,
                y,
                font,
                size,
                text,
            } => {
                c.begin_text();
                c.set_font(font.resource(), *size);
                c.next_line(*x, *y);
                c.show(Str(&win_ansi(text)));
                c.end_text();
            }
            Op::Fill { rect, gray } => {
                c.set_fill_gray(*gray);
                c.rect(rect[0], rect[1], rect[2], rect[3]);
                c.fill_nonzero();
                c.set_fill_gray(0.0);
            }
            Op::Rule { x1, x2, y } => {
                c.set_stroke_gray(0.75);
                c.set_line_width(0.4);
                c.move_to(*x1, *y);
                c.line_to(*x2, *y);
                c.stroke();
            }
        }
    }
    c.finish().into_vec()
}

fn deflate(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data)?;
    e.finish()
}

/// The report as a PDF document.
pub fn render(dar: &Dar) -> std::io::Result<Vec<u8>> {
    let pages = lay_out(dar);
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let first_page = 6;
    let page_ids: Vec<Ref> = (0..pages.len())
        .map(|i| Ref::new(first_page + 2 * i as i32))
        .collect();

    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(pages.len() as i32);
    for (id, name) in [(regular, &b"Helvetica"[..]), (bold, &b"Helvetica-Bold"[..])] {
        pdf.type1_font(id)
            .base_font(Name(name))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    let mut digest = Sha256::new();
    for (page_ops, page_id) in pages.iter().zip(&page_ids) {
        let content_id = Ref::new(page_id.get() + 1);
        let data = content(page_ops);
        digest.update(&data);
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
            .parent(tree)
            .contents(content_id);
        page.resources()
            .fonts()
            .pair(Font::Regular.resource(), regular)
            .pair(Font::Bold.resource(), bold);
        page.finish();
        pdf.stream(content_id, &deflate(&data)?)
            .filter(Filter::FlateDecode);
    }

    let title = format!(
        "Daily activity report, {} ({}), {}",
        dar.site_name, dar.site, dar.date
    );
    let mut doc = pdf.document_info(info);
    doc.title(TextStr(&title))
        .producer(TextStr("patrol-server"))
        .creation_date(pdf_date(dar.as_of_ms));
    doc.finish();
    // The id is the pages' digest: the same report, the same id.
    let id = digest.finalize()[..16].to_vec();
    pdf.set_file_id((id.clone(), id));
    Ok(pdf.finish())
}

/// `ms` as a PDF date in UTC.
fn pdf_date(ms: i64) -> pdf_writer::Date {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    pdf_writer::Date::new(t.year().clamp(0, 9999) as u16)
        .month(t.month() as u8)
        .day(t.day() as u8)
        .hour(t.hour() as u8)
        .minute(t.minute() as u8)
        .second(t.second() as u8)
        .utc_offset_hour(0)
}

/// Flagged events the PDF lists (in time order) before it refers the reader to the CSV: a day
/// of a busy site can flag thousands, which nobody reads page after page.
const PDF_MAX_ANOMALIES: usize = 200;

/// A compliance percentage for people: `66%`, or `-` without checkpoints.
fn percent_shown(t: &Tally) -> String {
    t.percent_if_any()
        .map_or_else(|| "-".to_owned(), |p| format!("{p}%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Helvetica's widths come from its metrics: a capital W is wider than an i, and the two
    /// quotes that differ between Adobe's encoding and ASCII take ASCII's glyphs.
    #[test]
    fn text_is_measured_with_the_font_metrics() {
        let m = Metrics::of(Font::Regular);
        assert_eq!(m.width("W", 1000.0), 944.0);
        assert_eq!(m.width("i", 1000.0), 222.0);
        assert_eq!(m.width("'", 1000.0), 191.0);
        assert_eq!(m.width("`", 1000.0), 333.0);
        assert_eq!(Metrics::of(Font::Bold).width("i", 1000.0), 278.0);
    }

    /// A cell wraps at spaces, and a word longer than the cell is cut.
    #[test]
    fn cells_wrap_within_their_width() {
        let lines = wrap("fire door B2 propped open", Font::Regular, 10.0, 60.0);
        assert!(lines.len() > 1, "{lines:?}");
        assert_eq!(lines.join(" "), "fire door B2 propped open");
        let m = Metrics::of(Font::Regular);
        for line in wrap(&"x".repeat(100), Font::Regular, 10.0, 60.0) {
            assert!(m.width(&line, 10.0) <= 60.0, "{line}");
        }
    }

    #[test]
    fn text_is_encoded_for_the_font() {
        assert_eq!(
            win_ansi("Café – 5€\tok ✓"),
            b"Caf\xe9 \x96 5\x80 ok ?".to_vec()
        );
    }
}
