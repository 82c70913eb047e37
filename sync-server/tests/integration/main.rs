//! The server's integration tests, one test binary: each module is one concern, driven through
//! the real router (and, in `cli` and `data_dir`, the real binary) over a real store; `common`
//! is their shared set-up, compiled once for all of them.

mod common;

mod api;
mod attachments;
mod auth;
mod cli;
mod compliance;
mod config_alarms;
mod console;
mod corrected_time;
mod credentials;
mod data_dir;
mod evidence;
mod feed_live;
mod feed_scale;
mod flags;
mod fuzz_regressions;
mod incidents;
mod metrics;
mod openapi;
mod report;
mod sessions;
mod shifts;
mod store;
mod sync_batch;
mod webhooks;
