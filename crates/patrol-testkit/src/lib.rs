//! # patrol-testkit
//!
//! What the end-to-end tests, the server's tests and the benchmark share to run the real
//! system: [`bins`] builds and locates the real `patrol-server` and `patrol` binaries, [`Server`]
//! runs `patrol-server` on a loopback port as a child process (over a fresh data directory or
//! a PostgreSQL database), [`ScratchDatabase`] is a throwaway database on the local
//! PostgreSQL server, and [`WEAK_ED25519_KEYS`] are the public keys enrollment must refuse.
//!
//! It depends on no crate of the workspace: it starts the server as a process and talks to
//! PostgreSQL as a client, so every crate it serves can depend on it without a cycle.

mod bins;
mod keys;
mod postgres;
mod server;

pub use bins::{Bins, bins, run, run_ok};
pub use keys::WEAK_ED25519_KEYS;
pub use postgres::{ScratchDatabase, postgres_admin_url, postgres_required};
pub use server::Server;
