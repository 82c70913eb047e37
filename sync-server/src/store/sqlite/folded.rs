//! A Bloom filter over the ids in `event_ids`, the folded level of the event-id index
//! (migration 0002), so that the writer looks an id up in that table only when it may be there.
//!
//! New events' ids are almost never there (a repeat is caught by the shift log's own document
//! first), and the table is large: at a million events its pages no longer fit the writer's
//! cache, and each lookup descended the B-tree to a leaf, often reading it from the file. The
//! filter answers "not there" for all but about 1 % of them, from ~2 MiB of memory per million
//! ids.
//!
//! It never answers "not there" for an id that is there: the writer adds the ids a fold moves
//! before the fold commits (a fold that then fails only leaves a few false "maybe"s), and it is
//! rebuilt from the table when it opens and whenever it fills up.

use rusqlite::Connection;

use crate::store::StoreError;

/// Hash functions (bits set per id).
const K: u64 = 7;
/// Bits per id of capacity: with `K` = 7, about 1 % false "maybe"s when full.
const BITS_PER_ID: u64 = 10;
/// Ids a new filter holds at least.
const MIN_CAPACITY: u64 = 1 << 20;

#[derive(Debug)]
pub(super) struct FoldedFilter {
    bits: Vec<u64>,
    /// Number of bits - 1 (a power of two - 1).
    mask: u64,
    ids: u64,
    capacity: u64,
}

impl FoldedFilter {
    fn with_capacity(ids: u64) -> Self {
        let capacity = ids.max(MIN_CAPACITY).next_power_of_two();
        let bits = capacity * BITS_PER_ID;
        let bits = bits.next_power_of_two();
        FoldedFilter {
            bits: vec![0; usize::try_from(bits / 64).unwrap_or(usize::MAX)],
            mask: bits - 1,
            ids: 0,
            capacity,
        }
    }

    /// A filter that answers "maybe" for every id: always correct, never useful. For when the
    /// table cannot be read to build a real one.
    pub(super) fn everything() -> Self {
        FoldedFilter {
            bits: vec![u64::MAX],
            mask: 63,
            ids: 0,
            capacity: u64::MAX,
        }
    }

    /// Builds the filter from every id in `event_ids`, with room for as many more.
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let ids: i64 = conn.query_row("SELECT COUNT(*) FROM event_ids", [], |r| r.get(0))?;
        let mut filter = FoldedFilter::with_capacity(2 * u64::try_from(ids).unwrap_or(0));
        let mut stmt = conn.prepare("SELECT site_id, event_id FROM event_ids")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let corrupt = |e| StoreError::CorruptData(format!("event_ids row: {e}"));
            let site = row.get_ref(0)?.as_str().map_err(corrupt)?;
            let id = row.get_ref(1)?.as_blob().map_err(corrupt)?;
            filter.insert(site, id);
        }
        Ok(filter)
    }

    /// [`FoldedFilter::load`], or if the table cannot be read, [`FoldedFilter::everything`]:
    /// slower, never wrong.
    pub(super) fn load_or_everything(conn: &Connection) -> Self {
        Self::load(conn).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read event_ids; looking up every event id there");
            Self::everything()
        })
    }

    /// Whether more ids were added than it was sized for (it then answers "maybe" too often).
    pub(super) fn is_full(&self) -> bool {
        self.ids > self.capacity
    }

    pub(super) fn insert(&mut self, site: &str, event_id: &[u8]) {
        let (h1, h2) = hashes(site, event_id);
        for i in 0..K {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
            if let Some(word) = self.bits.get_mut((bit / 64) as usize) {
                *word |= 1 << (bit % 64);
            }
        }
        self.ids += 1;
    }

    /// `false` only if `event_id` of `site` is not in `event_ids`.
    pub(super) fn may_contain(&self, site: &str, event_id: &[u8]) -> bool {
        let (h1, h2) = hashes(site, event_id);
        (0..K).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
            self.bits
                .get((bit / 64) as usize)
                .is_none_or(|word| word & (1 << (bit % 64)) != 0)
        })
    }
}

/// Two independent 64-bit hashes of (site, id), combined as `h1 + i * h2` for the i-th bit
/// (Kirsch and Mitzenmacher). Ids are mostly random, but not all of their bits are (UUIDv7
/// starts with a timestamp), so every byte is mixed in.
fn hashes(site: &str, event_id: &[u8]) -> (u64, u64) {
    // FNV-1a over the site, then the id's bytes folded in 8 at a time, each step mixed.
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for b in site.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut h1 = mix(h);
    let mut h2 = mix(h ^ 0x9e37_79b9_7f4a_7c15);
    for chunk in event_id.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        h1 = mix(h1 ^ w);
        h2 = mix(h2 ^ w.rotate_left(29));
    }
    // An odd step visits every bit position before repeating.
    (h1, h2 | 1)
}

/// The SplitMix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_misses_an_id_it_holds_and_rarely_claims_others() {
        let mut filter = FoldedFilter::with_capacity(0);
        let held: Vec<[u8; 16]> = (0..MIN_CAPACITY / 4)
            .map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect();
        for id in &held {
            filter.insert("site-1", id);
        }
        assert!(held.iter().all(|id| filter.may_contain("site-1", id)));
        assert!(!filter.is_full());
        let others = 100_000;
        let claimed = (0..others)
            .filter(|_| filter.may_contain("site-1", uuid::Uuid::now_v7().as_bytes()))
            .count();
        assert!(claimed < others / 100, "{claimed} false maybes");
        // Another site's copy of a held id is another id.
        let elsewhere = held
            .iter()
            .filter(|id| filter.may_contain("site-2", &id[..]))
            .count();
        assert!(elsewhere < held.len() / 100, "{elsewhere} false maybes");
        assert!(FoldedFilter::everything().may_contain("site-1", &held[0]));
    }
}
