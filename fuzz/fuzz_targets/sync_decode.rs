//! The sync message decoder: `SyncRequest::decode` and `SyncResponse::decode` on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/decode.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../harness/escape.rs"]
mod escape;

fuzz_target!(init: escape::install(), |data: &[u8]| {
    escape::run(|| harness::run(data));
});
