//! Bounds on the work a pushed bundle can ask for, checked before automerge parses it.
//!
//! An automerge bundle stores its columns run-length encoded and, when large, DEFLATE-compressed.
//! automerge's parser expands both in full: a run header of a few bytes may declare 2^60 values,
//! and a deflated column may inflate a thousandfold, so a push of 1 KB could keep a merge thread
//! busy for minutes and fill the server's memory (found by the `chunk_ingest` fuzzer). This scan
//! walks the bundle's layout, inflates compressed columns into a bounded buffer, and counts the
//! values each run-length column declares, without materialising them. A bundle over the limits
//! is malformed for the merge rules; no phone ever makes one (a push is one shift's events).

use std::io::Read;

/// Values one column may declare: more than any push of a shift log holds.
pub const MAX_COLUMN_VALUES: u64 = 1_000_000;
/// Bytes the compressed columns of a bundle may inflate to, at most.
pub const MAX_INFLATED_BYTES: u64 = 64 * 1024 * 1024;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DEFLATE: u32 = 0b1000;

/// What is wrong with a bundle, in words for a rejection.
pub type LimitError = String;

struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], LimitError> {
        let n = usize::try_from(n).map_err(|_| "length out of range".to_owned())?;
        if n > self.bytes.len() {
            return Err("truncated".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// An unsigned LEB128 number.
    fn uleb(&mut self) -> Result<u64, LimitError> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let [byte, rest @ ..] = self.bytes else {
                return Err("truncated number".into());
            };
            self.bytes = rest;
            let low = u64::from(byte & 0x7f);
            if shift >= 64 || (shift == 63 && low > 1) {
                return Err("number too large".into());
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("number too large".into())
    }

    /// A signed LEB128 number.
    fn sleb(&mut self) -> Result<i64, LimitError> {
        let mut value: i64 = 0;
        let mut shift = 0;
        loop {
            let [byte, rest @ ..] = self.bytes else {
                return Err("truncated number".into());
            };
            self.bytes = rest;
            if shift >= 64 {
                return Err("number too large".into());
            }
            value |= i64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Ok(value);
            }
        }
    }

    /// Skips one value of a column of `kind`.
    fn skip_value(&mut self, kind: Kind) -> Result<(), LimitError> {
        match kind {
            Kind::Uleb => self.uleb().map(drop),
            Kind::Sleb => self.sleb().map(drop),
            Kind::String => {
                let len = self.uleb()?;
                self.take(len).map(drop)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Uleb,
    Sleb,
    String,
}

/// How many values a column of type `col_type` (the spec's low 3 bits) declares.
fn column_values(data: &[u8], col_type: u32) -> Result<u64, LimitError> {
    let kind = match col_type {
        // group, actor, integer, value metadata
        0 | 1 | 2 | 6 => Kind::Uleb,
        3 => Kind::Sleb,
        5 => Kind::String,
        // boolean: alternating run lengths
        4 => {
            let mut input = Input { bytes: data };
            let mut total: u64 = 0;
            while !input.is_empty() {
                total = total.saturating_add(input.uleb()?);
                if total > MAX_COLUMN_VALUES {
                    break;
                }
            }
            return Ok(total);
        }
        // raw values: their count is set by the value-metadata column
        _ => return Ok(0),
    };
    let mut input = Input { bytes: data };
    let mut total: u64 = 0;
    while !input.is_empty() {
        let count = input.sleb()?;
        let n = if count > 0 {
            input.skip_value(kind)?;
            count.unsigned_abs()
        } else if count < 0 {
            let n = count.unsigned_abs();
            if n > MAX_COLUMN_VALUES {
                return Ok(n);
            }
            for _ in 0..n {
                input.skip_value(kind)?;
            }
            n
        } else {
            input.uleb()?
        };
        total = total.saturating_add(n);
        if total > MAX_COLUMN_VALUES {
            break;
        }
    }
    Ok(total)
}

/// Checks one section of columns: their specs and lengths, then their data.
fn check_columns(input: &mut Input<'_>, inflated: &mut u64) -> Result<(), LimitError> {
    let count = input.uleb()?;
    let mut specs = Vec::new();
    for _ in 0..count {
        let spec = input.uleb()?;
        let len = input.uleb()?;
        specs.push((spec, len));
    }
    for (spec, len) in specs {
        let spec = u32::try_from(spec).map_err(|_| "column spec out of range".to_owned())?;
        let data = input.take(len)?;
        let values = if spec & DEFLATE != 0 {
            let budget = MAX_INFLATED_BYTES.saturating_sub(*inflated);
            let mut plain = Vec::new();
            flate2::bufread::DeflateDecoder::new(data)
                .take(budget.saturating_add(1))
                .read_to_end(&mut plain)
                .map_err(|e| format!("a compressed column does not inflate: {e}"))?;
            *inflated = inflated.saturating_add(plain.len() as u64);
            if *inflated > MAX_INFLATED_BYTES {
                return Err(format!(
                    "compressed columns inflate to more than {MAX_INFLATED_BYTES} bytes"
                ));
            }
            column_values(&plain, spec & 0b111)?
        } else {
            column_values(data, spec & 0b111)?
        };
        if values > MAX_COLUMN_VALUES {
            return Err(format!(
                "a column declares {values} values, more than the {MAX_COLUMN_VALUES} a push may hold"
            ));
        }
    }
    Ok(())
}

/// Checks that parsing `bundle` stays within [`MAX_COLUMN_VALUES`] and [`MAX_INFLATED_BYTES`].
/// Anything that does not have a bundle's layout is refused too.
pub fn check(bundle: &[u8]) -> Result<(), LimitError> {
    let mut input = Input { bytes: bundle };
    if input.take(4)? != MAGIC {
        return Err("not an automerge bundle (bad magic bytes)".into());
    }
    input.take(4)?; // checksum
    input.take(1)?; // chunk type
    input.uleb()?; // chunk length
    let deps = input.uleb()?;
    input.take(deps.saturating_mul(32))?;
    let actors = input.uleb()?;
    for _ in 0..actors {
        let len = input.uleb()?;
        input.take(len)?;
    }
    let mut inflated = 0;
    check_columns(&mut input, &mut inflated)?; // the changes' metadata
    check_columns(&mut input, &mut inflated)?; // the operations
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uleb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn sleb(n: i64, out: &mut Vec<u8>) {
        let mut n = n;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            let done = (n == 0 && byte & 0x40 == 0) || (n == -1 && byte & 0x40 != 0);
            out.push(if done { byte } else { byte | 0x80 });
            if done {
                return;
            }
        }
    }

    /// A bundle with no deps or actors, no change columns and one op column of `col_type`.
    fn bundle_with_column(col_type: u32, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[0; 4]);
        out.push(3);
        uleb(0, &mut out); // chunk length (not checked)
        uleb(0, &mut out); // deps
        uleb(0, &mut out); // actors
        uleb(0, &mut out); // change columns
        uleb(1, &mut out);
        uleb(u64::from((7 << 4) | col_type), &mut out);
        uleb(data.len() as u64, &mut out);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn numbers_decode() -> Result<(), LimitError> {
        for n in [0i64, 1, -1, 63, 64, -64, -65, i64::MAX, i64::MIN, 1 << 40] {
            let mut bytes = Vec::new();
            sleb(n, &mut bytes);
            assert_eq!(Input { bytes: &bytes }.sleb()?, n);
        }
        for n in [0u64, 127, 128, u64::MAX] {
            let mut bytes = Vec::new();
            uleb(n, &mut bytes);
            assert_eq!(Input { bytes: &bytes }.uleb()?, n);
        }
        Ok(())
    }

    #[test]
    fn a_run_declaring_too_many_values_is_refused() {
        let mut column = Vec::new();
        sleb(1 << 50, &mut column);
        sleb(7, &mut column);
        let err = check(&bundle_with_column(3, &column)).err();
        assert!(err.is_some_and(|e| e.contains("values")));

        let mut nulls = Vec::new();
        sleb(0, &mut nulls);
        uleb(MAX_COLUMN_VALUES + 1, &mut nulls);
        assert!(check(&bundle_with_column(0, &nulls)).is_err());

        let mut booleans = Vec::new();
        uleb(MAX_COLUMN_VALUES, &mut booleans);
        uleb(1, &mut booleans);
        assert!(check(&bundle_with_column(4, &booleans)).is_err());
    }

    #[test]
    fn runs_within_the_limit_pass() {
        let mut column = Vec::new();
        sleb(1000, &mut column);
        sleb(1, &mut column);
        sleb(-2, &mut column);
        sleb(5, &mut column);
        sleb(-9, &mut column);
        sleb(0, &mut column);
        uleb(4, &mut column);
        assert_eq!(check(&bundle_with_column(3, &column)), Ok(()));
    }

    #[test]
    fn a_deflated_column_that_inflates_too_far_is_refused() -> std::io::Result<()> {
        use std::io::Write;
        let zeros = vec![0u8; 1 << 20];
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..(MAX_INFLATED_BYTES >> 20) + 1 {
            encoder.write_all(&zeros)?;
        }
        let deflated = encoder.finish()?;
        let err = check(&bundle_with_column(7 | DEFLATE, &deflated)).err();
        assert!(err.is_some_and(|e| e.contains("inflate")), "{deflated:?}");
        Ok(())
    }
}

#[cfg(test)]
mod real_bundles {
    use super::*;
    use crate::event::{DeviceTime, EventBody, EventRecord};
    use crate::hlc::Hlc;
    use crate::ids::{DeviceId, EventId, GuardId, ShiftId, SiteId};
    use crate::shiftlog::{ShiftLog, ShiftMeta};

    /// Whether any column of the bundle's two sections is deflated.
    fn has_deflated_column(bundle: &[u8]) -> Result<bool, LimitError> {
        let mut input = Input { bytes: bundle };
        input.take(9)?;
        input.uleb()?;
        let deps = input.uleb()?;
        input.take(deps * 32)?;
        for _ in 0..input.uleb()? {
            let len = input.uleb()?;
            input.take(len)?;
        }
        let mut deflated = false;
        for _ in 0..2 {
            let mut total = 0;
            for _ in 0..input.uleb()? {
                deflated |= input.uleb()? & u64::from(DEFLATE) != 0;
                total += input.uleb()?;
            }
            input.take(total)?;
        }
        Ok(deflated)
    }

    #[test]
    fn a_whole_long_shift_passes_with_compressed_columns() -> Result<(), Box<dyn std::error::Error>>
    {
        let (mut log, _) = ShiftLog::create(ShiftMeta {
            site: SiteId::new("site-1")?,
            device: DeviceId::generate(),
            shift: ShiftId::generate(),
            guard: GuardId::new("guard-1")?,
        })?;
        for seq in 1..=3_000u64 {
            let record = EventRecord {
                seq,
                time: DeviceTime {
                    wall_ms: 1_740_866_400_000 + 1_000 * seq as i64,
                    boot_id: uuid::Uuid::nil(),
                    mono_ms: seq,
                    hlc: Hlc {
                        wall_ms: seq,
                        counter: 0,
                    },
                },
                config_version: 1,
                body: EventBody::Note {
                    text: format!("round {seq}: all doors locked"),
                },
            };
            log.record(EventId::generate(), &record)?;
        }
        let (bundle, events) = log.bundle_since(&[])?;
        assert_eq!(events, 3_000);
        assert!(has_deflated_column(&bundle)?, "expected compressed columns");
        assert_eq!(check(&bundle), Ok(()));
        Ok(())
    }
}
