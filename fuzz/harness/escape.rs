//! Only panics that escape the code under test are crashes.
//!
//! `patrol_core::merge` runs automerge's parsers under `catch_unwind` and turns their panics on
//! malformed input into a `malformed` rejection, as the server does in production. libfuzzer-sys
//! installs a panic hook that aborts on every panic, caught or not; [`install`] replaces it with
//! one that only remembers the message, and [`run`] aborts (printing that message) when a panic
//! reaches the fuzz target, so libFuzzer still records the input as a crash.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        // No backtrace: capturing one on every caught panic slows fuzzing tenfold. The message
        // names the panic's location; the stable replay test shows the whole trace.
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(info.to_string()));
    }));
}

pub fn run<R>(f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let message = LAST_PANIC.with(|last| last.borrow_mut().take());
            eprintln!("{}", message.as_deref().unwrap_or("panic"));
            std::process::abort();
        }
    }
}
