//! The server's HTTP API in-process: arbitrary sync bodies, content types, paths and queries
//! through the real router and a real SQLite store (see `harness/http.rs`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../harness/http.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../harness/escape.rs"]
mod escape;

static HARNESS: OnceLock<harness::Harness> = OnceLock::new();

fuzz_target!(init: escape::install(), |data: &[u8]| {
    escape::run(|| {
        let harness = HARNESS.get_or_init(|| {
            harness::Harness::new().unwrap_or_else(|e| panic!("cannot start the server: {e}"))
        });
        harness.run(data)
    });
});
