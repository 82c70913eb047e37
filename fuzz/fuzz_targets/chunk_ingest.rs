//! Chunk ingestion: successive pushes of one shift log through `merge::ingest_shift_log`, with
//! the server's persistence between them (see `harness/ingest.rs` for the input's framing).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/ingest.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../harness/escape.rs"]
mod escape;

fuzz_target!(init: escape::install(), |data: &[u8]| {
    escape::run(|| harness::run(data));
});
