//! # patrol-sim
//!
//! A deterministic simulation of a site: several guards' phones and the server, on the real
//! code. Each phone is a real `patrol_mobile::DeviceStore` on a SQLite file, enrolled through the
//! API, reading a simulated clock (skewed up to a day, drifting, reset and rebooted at random);
//! the server is the real `patrol_server::router` over a real `SqliteStore`, called in process
//! one request at a time with the phones' credentials and the control room's tokens.
//! Between them a simulated network partitions phones, drops requests and answers, duplicates
//! requests, holds them back and delivers them late (after newer ones). Phones record events,
//! report and work incidents, raise panic alarms, start and end shifts, and crash at any point
//! of a sync or around a recording; the control room acts on incidents, acknowledges alarms and
//! publishes site configurations; the server restarts.
//!
//! Every choice comes from one PRNG seeded by the run's number, so a failing seed replays step
//! for step ([`RunReport::trace_hash`] fingerprints the steps taken). After the steps the network
//! heals, every phone syncs until nothing is pending and once more, and the invariants in
//! [`check`] are checked: nothing acknowledged lost, nothing duplicated, everything recorded in
//! the feed in canonical order and each phone's order, incidents equal on every replica, alarms
//! and configuration delivered. See `docs/reliability.md`.

pub mod check;
pub mod clock;
pub mod server;
mod sim;

use std::collections::VecDeque;
use std::fmt;

use thiserror::Error;

/// What went wrong in a run.
#[derive(Debug, Error)]
pub enum SimError {
    /// The system broke one of its promises.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// A call failed that should not have (the store, the server, the simulation's own I/O).
    #[error("{0}")]
    Failed(String),
}

impl SimError {
    pub fn invariant(message: impl Into<String>) -> Self {
        SimError::Invariant(message.into())
    }

    /// Wraps an error with what was being done.
    pub fn from_display<E: fmt::Display>(what: &str) -> impl FnOnce(E) -> SimError + '_ {
        move |e| SimError::Failed(format!("{what}: {e}"))
    }
}

/// One run's size and seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    /// Phones on the site.
    pub devices: usize,
    /// Steps before the network heals.
    pub steps: usize,
}

impl SimConfig {
    pub const DEFAULT_DEVICES: usize = 4;
    pub const DEFAULT_STEPS: usize = 80;

    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            devices: Self::DEFAULT_DEVICES,
            steps: Self::DEFAULT_STEPS,
        }
    }

    /// The command that runs this seed again, step for step.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!("cargo run -p patrol-sim -- --seeds 1 --start {}", self.seed);
        if self.devices != Self::DEFAULT_DEVICES {
            cmd.push_str(&format!(" --devices {}", self.devices));
        }
        if self.steps != Self::DEFAULT_STEPS {
            cmd.push_str(&format!(" --steps {}", self.steps));
        }
        cmd
    }
}

/// What a run did, by kind of step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub incidents_reported: u64,
    pub phone_incident_actions: u64,
    pub syncs_delivered: u64,
    pub requests_dropped: u64,
    pub responses_dropped: u64,
    pub requests_duplicated: u64,
    pub requests_held: u64,
    /// Held requests delivered after the phone gave up on them (older than what it sent since).
    pub delivered_late: u64,
    pub offline_attempts: u64,
    pub phone_crashes: u64,
    pub retried_recordings: u64,
    pub server_restarts: u64,
    pub operator_actions: u64,
    pub alarm_acks: u64,
    pub configs: u64,
    pub feed_events: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.incidents_reported += o.incidents_reported;
        self.phone_incident_actions += o.phone_incident_actions;
        self.syncs_delivered += o.syncs_delivered;
        self.requests_dropped += o.requests_dropped;
        self.responses_dropped += o.responses_dropped;
        self.requests_duplicated += o.requests_duplicated;
        self.requests_held += o.requests_held;
        self.delivered_late += o.delivered_late;
        self.offline_attempts += o.offline_attempts;
        self.phone_crashes += o.phone_crashes;
        self.retried_recordings += o.retried_recordings;
        self.server_restarts += o.server_restarts;
        self.operator_actions += o.operator_actions;
        self.alarm_acks += o.alarm_acks;
        self.configs += o.configs;
        self.feed_events += o.feed_events;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "events {}, incidents {}, phone incident actions {}, syncs delivered {}, \
             requests dropped {}, answers dropped {}, duplicated {}, held {}, delivered late {}, \
             offline attempts {}, phone crashes {}, retried recordings {}, server restarts {}, \
             operator actions {}, alarm acks {}, configurations {}, feed events {}",
            self.events,
            self.incidents_reported,
            self.phone_incident_actions,
            self.syncs_delivered,
            self.requests_dropped,
            self.responses_dropped,
            self.requests_duplicated,
            self.requests_held,
            self.delivered_late,
            self.offline_attempts,
            self.phone_crashes,
            self.retried_recordings,
            self.server_restarts,
            self.operator_actions,
            self.alarm_acks,
            self.configs,
            self.feed_events
        )
    }
}

/// A run that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub config: SimConfig,
    /// FNV-1a of every step's trace line: equal for two runs of one seed.
    pub trace_hash: u64,
    pub steps_traced: u64,
    pub stats: Stats,
}

/// A run that failed: where, why, the last steps, and how to replay it.
#[derive(Debug)]
pub struct Failure {
    pub config: SimConfig,
    pub step: usize,
    pub error: SimError,
    pub trace_hash: u64,
    pub last_steps: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} failed at step {}: {}",
            self.config.seed, self.step, self.error
        )?;
        writeln!(f, "trace hash so far: {:016x}", self.trace_hash)?;
        writeln!(f, "last steps:")?;
        for line in &self.last_steps {
            writeln!(f, "  {line}")?;
        }
        write!(f, "replay: {}", self.config.replay_command())
    }
}

impl std::error::Error for Failure {}

/// The steps of a run: hashed as they come, the last few kept for a failure report.
#[derive(Debug)]
pub(crate) struct Trace {
    hash: u64,
    lines: u64,
    tail: VecDeque<String>,
}

const TRACE_TAIL: usize = 40;

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            lines: 0,
            tail: VecDeque::with_capacity(TRACE_TAIL),
        }
    }
}

impl Trace {
    pub(crate) fn log(&mut self, line: String) {
        // FNV-1a: stable across Rust versions and platforms, unlike the std hasher.
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.lines += 1;
        if self.tail.len() == TRACE_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// Runs one seed: the steps, the healing phase and the invariants.
pub fn run(config: &SimConfig) -> Result<RunReport, Failure> {
    sim::run(config)
}
