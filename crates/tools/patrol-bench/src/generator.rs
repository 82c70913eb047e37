//! The exact, deterministic event generator of the shared workloads (WORKLOADS.md): SplitMix64,
//! one stream per device seeded `(SEED << 32) | N`, nine draws per event.

use std::fmt::Write as _;

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(state: u64) -> Self {
        SplitMix64(state)
    }

    pub fn for_device(seed: u64, device: u64) -> Self {
        SplitMix64((seed << 32) | device)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

const NOTE_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// 2025-03-01T22:00:00.000Z in milliseconds since the epoch.
pub const BASE_MS: i64 = 1_740_866_400_000;

/// One generated event, with the fields of the workload's JSON object.
#[derive(Clone, Debug, PartialEq)]
pub struct GenEvent {
    pub id: uuid::Uuid,
    /// 1-based device number.
    pub device: u64,
    /// 0-based event index within the device.
    pub index: u64,
    pub checkpoint: String,
    pub at_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub note: String,
}

impl GenEvent {
    pub fn device_id(&self) -> String {
        format!("dev-{}", self.device)
    }

    pub fn guard_id(&self) -> String {
        format!("guard-{}", self.device)
    }

    pub fn at(&self) -> String {
        patrol_core::event::format_time_ms(self.at_ms)
    }

    /// The workload's compact JSON line (keys in the specified order, no newline).
    pub fn to_json_line(&self) -> String {
        let mut s = String::with_capacity(280);
        let _ = write!(
            s,
            r#"{{"id":"{}","kind":"checkpoint_scan","site_id":"site-1","device_id":"{}","guard_id":"{}","checkpoint_id":"{}","at":"{}","lat":{},"lon":{},"note":"{}"}}"#,
            self.id,
            self.device_id(),
            self.guard_id(),
            self.checkpoint,
            self.at(),
            serde_json::Value::from(self.lat),
            serde_json::Value::from(self.lon),
            self.note
        );
        s
    }
}

/// The event stream of one device; `next_event` yields index 0, 1, 2, ...
#[derive(Clone, Debug)]
pub struct DeviceStream {
    rng: SplitMix64,
    device: u64,
    index: u64,
}

impl DeviceStream {
    pub fn new(seed: u64, device: u64) -> Self {
        DeviceStream {
            rng: SplitMix64::for_device(seed, device),
            device,
            index: 0,
        }
    }

    pub fn next_event(&mut self) -> GenEvent {
        let r1 = self.rng.next_u64();
        let r2 = self.rng.next_u64();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&r1.to_be_bytes());
        b[8..].copy_from_slice(&r2.to_be_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let r3 = self.rng.next_u64();
        let r4 = self.rng.next_u64();
        let lat = (51_500_000 + (r3 % 20_000) as i64) as f64 / 1e6;
        let lon = (-130_000 + (r4 % 20_000) as i64) as f64 / 1e6;
        let mut note = String::with_capacity(40);
        for _ in 0..5 {
            for byte in self.rng.next_u64().to_be_bytes() {
                note.push(NOTE_ALPHABET[(byte % 36) as usize] as char);
            }
        }
        let i = self.index;
        self.index += 1;
        GenEvent {
            id: uuid::Uuid::from_bytes(b),
            device: self.device,
            index: i,
            checkpoint: format!("cp-{}", i % 40 + 1),
            at_ms: BASE_MS + i as i64 * 30_000 + (self.device as i64 - 1),
            lat,
            lon,
            note,
        }
    }

    /// The next `n` events.
    pub fn take(&mut self, n: u64) -> Vec<GenEvent> {
        (0..n).map(|_| self.next_event()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn splitmix_matches_the_reference() {
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220a8397b1dcdaf);
        assert_eq!(r.next_u64(), 0x6e789e6aa1b965f4);
    }

    #[test]
    fn first_event_matches_the_workload() {
        let e = DeviceStream::new(42, 1).next_event();
        assert_eq!(
            e.to_json_line(),
            r#"{"id":"69973300-6057-463c-a9a1-86289fc8a4e4","kind":"checkpoint_scan","site_id":"site-1","device_id":"dev-1","guard_id":"guard-1","checkpoint_id":"cp-1","at":"2025-03-01T22:00:00.000Z","lat":51.512751,"lon":-0.124974,"note":"ru3ivyi25x9fusyi45ko41lfisencjmzz8t082zk"}"#
        );
    }

    fn digest(devices: u64, events: u64) -> (usize, String) {
        let mut hasher = Sha256::new();
        let mut bytes = 0;
        for n in 1..=devices {
            let mut stream = DeviceStream::new(42, n);
            for _ in 0..events {
                let line = stream.next_event().to_json_line() + "\n";
                bytes += line.len();
                hasher.update(line.as_bytes());
            }
        }
        let hex = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (bytes, hex)
    }

    #[test]
    fn test_vectors_match_byte_for_byte() {
        assert_eq!(
            digest(2, 2),
            (
                1_070,
                "33ea5f533afea9732dad0bebe07d5fc5b62268e4410daa075825f93b75aaa96a".into()
            )
        );
        assert_eq!(
            digest(10, 1000),
            (
                2_687_532,
                "7fffba1ec4341fcd6fbdc9eb0d401ebe4969e37a28d3a81a630004da91170e2b".into()
            )
        );
        assert_eq!(
            digest(100, 1000),
            (
                27_039_481,
                "055708081b334800c01979d8b8523ebf178035be4df6d6bea6dae6ed65a61899".into()
            )
        );
    }
}
