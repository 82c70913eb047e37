//! A recorded event stays as recorded on the server, even against a device (buggy or forged)
//! that puts an event id again in a change that names no predecessor: automerge takes such a
//! put as a concurrent write to the same key, and the later one would win in the document while
//! the control-room projection kept the first.

use std::num::NonZeroU64;

use automerge::legacy::OpType;
use automerge::{Automerge, Change, ReadDoc, ScalarValue};
use patrol_core::merge::{Owner, ingest_shift_log, plan_push};
use patrol_core::protocol::RejectCode;
use patrol_core::{
    DeviceId, DeviceTime, EventBody, EventId, EventRecord, GuardId, Hlc, ShiftId, ShiftLog,
    ShiftMeta, SiteId,
};
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn record(seq: u64, text: &str) -> EventRecord {
    EventRecord {
        seq,
        time: DeviceTime {
            wall_ms: 1_740_866_400_000 + 1_000 * seq as i64,
            boot_id: Uuid::nil(),
            mono_ms: seq,
            hlc: Hlc {
                wall_ms: seq,
                counter: 0,
            },
        },
        config_version: 1,
        body: EventBody::Note { text: text.into() },
    }
}

/// A device's log with one note, and the server's copy of it after the device's first push.
fn recorded_log() -> Result<(Owner, EventId, Automerge), Box<dyn std::error::Error>> {
    let owner = Owner {
        site: SiteId::new("site-1")?,
        device: DeviceId(Uuid::from_u128(0x51)),
        shift: ShiftId(Uuid::from_u128(0x52)),
    };
    let (mut log, _) = ShiftLog::create(ShiftMeta {
        site: owner.site.clone(),
        device: owner.device,
        shift: owner.shift,
        guard: GuardId::new("guard-1")?,
    })?;
    let id = EventId(Uuid::from_u128(0x53));
    log.record(id, &record(1, "fire door B2 locked"))?;
    let mut server = Automerge::new();
    ingest_shift_log(&mut server, &owner, &plan_push(&mut log, &[])?.changes)?;
    Ok((owner, id, server))
}

/// A change after `after` (the device's latest) that puts `id` again, naming no predecessor.
fn forged_put(
    after: &Change,
    id: EventId,
    text: &str,
) -> Result<Change, Box<dyn std::error::Error>> {
    let mut forged = after.decode();
    forged.seq += 1;
    forged.start_op = NonZeroU64::new(forged.start_op.get() + forged.operations.len() as u64)
        .ok_or("start op overflow")?;
    forged.deps = vec![after.hash()];
    forged.hash = None;
    let op = forged.operations.first_mut().ok_or("no operation")?;
    op.key = automerge::legacy::Key::Map(id.to_string().into());
    op.action = OpType::Put(ScalarValue::Bytes(record(2, text).encode()?));
    assert!(op.pred.is_empty());
    Ok(Change::from(forged))
}

/// The bundle a device would send holding `changes`, which must apply on top of `base`.
fn bundle(base: &Automerge, changes: Vec<Change>) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut doc = base.clone();
    let hashes: Vec<_> = changes.iter().map(Change::hash).collect();
    doc.apply_changes(changes)?;
    Ok(doc.bundle(hashes)?.bytes().to_vec())
}

#[test]
fn a_later_change_putting_a_recorded_event_again_is_refused() -> TestResult {
    let (owner, id, mut server) = recorded_log()?;
    let heads = server.get_heads();
    let latest = server
        .get_change_by_hash(&heads[0])
        .ok_or("no latest change")?
        .clone();
    let forged = forged_put(&latest, id, "nothing happened here")?;
    let push = bundle(&server, vec![forged])?;
    let rejection = ingest_shift_log(&mut server, &owner, &push)
        .err()
        .ok_or("a second put of a recorded event was accepted")?;
    assert_eq!(rejection.code, RejectCode::ImmutableEvent, "{rejection}");
    assert_eq!(
        server.get_heads(),
        heads,
        "the refused push changed the document"
    );
    Ok(())
}

#[test]
fn one_push_putting_the_same_event_twice_is_refused() -> TestResult {
    let (owner, _, server) = recorded_log()?;
    let latest = server
        .get_change_by_hash(&server.get_heads()[0])
        .ok_or("no latest change")?
        .clone();
    let id = EventId(Uuid::from_u128(0x54));
    let first = forged_put(&latest, id, "first")?;
    let second = forged_put(&first, id, "second")?;
    let push = bundle(&server, vec![first, second])?;
    let mut fresh = server.clone();
    let rejection = ingest_shift_log(&mut fresh, &owner, &push)
        .err()
        .ok_or("two puts of one event in a push were accepted")?;
    assert_eq!(rejection.code, RejectCode::ImmutableEvent, "{rejection}");
    Ok(())
}
