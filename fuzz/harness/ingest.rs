//! Chunk ingestion under arbitrary pushes, as the server runs it. Shared, file for file, by the
//! fuzz target `chunk_ingest` and the stable replay test
//! `crates/patrol-core/tests/fuzz_regressions.rs`.
//!
//! An input is a sequence of pushes of one shift log (the bundles a device sends in successive
//! syncs), each framed as a 2-byte little-endian length and that many bytes; the last frame
//! takes whatever is left. For each push, as the server does it: load the stored document from
//! its persisted bytes, run `merge::ingest_shift_log` for the fixed [`owner`], and persist the
//! applied changes by appending their raw bytes.
//!
//! Properties: nothing panics; an accepted push's heads are the document's; what was persisted
//! loads again to the same heads; sending the same push again is accepted and adds no event;
//! no event id is reported new twice.

use std::collections::HashSet;

use automerge::Automerge;
use patrol_core::merge::{Owner, ingest_shift_log};
use patrol_core::{DeviceId, EventId, ShiftId, SiteId};

/// The site, device and shift every push is checked against; seeds are built for it.
pub fn owner() -> Owner {
    Owner {
        site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
        device: DeviceId(uuid::Uuid::from_u128(
            0x0195_0000_0000_7000_8000_0000_0000_0001,
        )),
        shift: ShiftId(uuid::Uuid::from_u128(
            0x0195_0000_0000_7000_8000_0000_0000_0002,
        )),
    }
}

/// Frames pushes as an input of this target.
pub fn frame(pushes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, push) in pushes.iter().enumerate() {
        if i + 1 < pushes.len() {
            let len = u16::try_from(push.len()).unwrap_or_else(|_| panic!("push too long"));
            out.extend_from_slice(&len.to_le_bytes());
        } else {
            out.extend_from_slice(&[0xff, 0xff]);
        }
        out.extend_from_slice(push);
    }
    out
}

/// Splits an input into its pushes.
pub fn pushes(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let take = len.min(rest.len());
        out.push(&rest[..take]);
        data = &rest[take..];
    }
    out
}

/// Runs every push of `data`; returns each push's outcome class (`accepted` or the rejection
/// code), joined by `,`.
pub fn run(data: &[u8]) -> String {
    let owner = owner();
    // What the server has persisted for the log: its chunks, concatenated.
    let mut stored: Vec<u8> = Vec::new();
    let mut reported = HashSet::<EventId>::new();
    let mut classes = Vec::new();
    for push in pushes(data) {
        let mut doc = load(&stored);
        let ingested = match ingest_shift_log(&mut doc, &owner, push) {
            Ok(ingested) => ingested,
            Err(rejection) => {
                classes.push(rejection.code.as_str().to_owned());
                continue;
            }
        };
        classes.push("accepted".to_owned());
        assert_eq!(
            ingested.heads,
            doc.get_heads(),
            "reported heads are not the document's"
        );
        for (id, _) in &ingested.new_events {
            assert!(reported.insert(*id), "event {id} reported new twice");
        }
        for change in &ingested.applied {
            stored.extend_from_slice(change.raw_bytes());
        }
        let reloaded = load(&stored);
        assert_eq!(
            reloaded.get_heads(),
            doc.get_heads(),
            "the persisted changes do not load to the merged document"
        );
        // The device did not hear the answer and sends the same push again.
        let mut again_doc = load(&stored);
        match ingest_shift_log(&mut again_doc, &owner, push) {
            Ok(again) => {
                assert!(
                    again.new_events.is_empty() && again.applied.is_empty(),
                    "a repeated push added {} events",
                    again.new_events.len()
                );
                assert_eq!(
                    again.heads, ingested.heads,
                    "a repeated push moved the heads"
                );
            }
            Err(rejection) => panic!("a repeated push was refused: {rejection}"),
        }
    }
    classes.join(",")
}

fn load(stored: &[u8]) -> Automerge {
    if stored.is_empty() {
        return Automerge::new();
    }
    Automerge::load(stored).unwrap_or_else(|e| panic!("the persisted log does not load: {e}"))
}
