//! Failed authentication, slowed and then refused per client address (and sign-ins also per
//! user name), and every failure logged.
//!
//! A failure is a credential presented and refused (unknown, revoked, expired, malformed, of the
//! wrong kind), or an enrollment code that does not enroll. Per client address (an IPv4
//! address, or an IPv6 /64, which one machine usually holds whole):
//!
//! - from the `slow_after`th failure within the window on (the third by default), each failed
//!   answer is held back one second more than the last (at most [`MAX_DELAY`]), so guessing
//!   gets slow at once;
//! - at `max_failures` within `window` the address is locked out for `lockout`: every request
//!   that authenticates is answered `429 too_many_failed_attempts` with a `Retry-After`, before
//!   its credential is looked at, so a guess in that time learns nothing.
//!
//! Every failure is logged (`warn`, target `patrol_server::auth`) with the client address, the
//! kind of credential and the reason code, never the credential; a locked-out address's
//! further requests are not logged one by one (the lockout is, once), so a flood cannot fill
//! the log. The client address is the TCP peer's, or with `--trusted-proxy` the address that
//! proxy put last in `X-Forwarded-For`. The counts are per server instance and in memory.
//!
//! Failed sign-ins with a password (`POST /api/v1/session`) are counted the same way per user
//! name too, so that a guess at one account from many addresses is slowed and refused as well.
//! The cost: someone who knows a name can keep its sign-ins refused; the person still has
//! their bearer token, and an administrator sees the lockout in the log.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

use super::error::AppError;
use crate::config::ThrottleConfig;

/// The longest a failed answer is held back.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Addresses tracked at once; beyond it, only addresses already tracked are counted (an
/// attacker with more addresses than this is not slowed, but the memory stays bounded).
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
struct Record {
    /// Failures since `since`.
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// Failure counts by some key (a client address, a user name).
#[derive(Debug)]
struct Counts<K> {
    records: Mutex<HashMap<K, Record>>,
}

/// What [`Counts::failed`] found: the failures counted in the window, and whether this one
/// locked the key out.
struct Counted {
    failures: u32,
    locked_now: bool,
}

impl<K: std::hash::Hash + Eq + Clone> Counts<K> {
    fn new() -> Self {
        Counts {
            records: Mutex::new(HashMap::new()),
        }
    }

    /// 429 if `key` is locked out now.
    fn check(&self, key: &K) -> Result<(), AppError> {
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = records.get_mut(key) else {
            return Ok(());
        };
        match record.locked_until {
            Some(until) if until > now => Err(AppError::TooManyFailedAttempts {
                retry_after_secs: (until - now).as_secs().max(1),
            }),
            Some(_) => {
                // The lockout is over: a clean slate.
                records.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failure of `key`; `None` when too many keys are tracked to count a new one.
    fn failed(&self, key: K, config: &ThrottleConfig) -> Option<Counted> {
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= MAX_TRACKED && !records.contains_key(&key) {
            let window = config.window;
            records.retain(|_, r| {
                r.locked_until.is_some_and(|u| u > now) || now.duration_since(r.since) < window
            });
            if records.len() >= MAX_TRACKED {
                return None;
            }
        }
        let record = records.entry(key).or_insert(Record {
            failures: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(record.since) >= config.window {
            *record = Record {
                failures: 0,
                since: now,
                locked_until: None,
            };
        }
        record.failures = record.failures.saturating_add(1);
        let locked_now = record.failures >= config.max_failures && record.locked_until.is_none();
        if locked_now {
            record.locked_until = Some(now + config.lockout);
        }
        Some(Counted {
            failures: record.failures,
            locked_now,
        })
    }
}

/// The failure counts per client address, and per user name for sign-ins.
#[derive(Debug)]
pub struct AuthThrottle {
    config: ThrottleConfig,
    by_address: Counts<IpAddr>,
    /// Failed sign-ins per user name (as given, lower-cased): a guess at one account spread
    /// over many addresses is slowed and refused too.
    by_name: Counts<String>,
}

impl AuthThrottle {
    pub fn new(config: ThrottleConfig) -> Self {
        AuthThrottle {
            config,
            by_address: Counts::new(),
            by_name: Counts::new(),
        }
    }

    /// The client address of a request: its TCP peer, or, when that peer is a trusted proxy,
    /// the last address in `X-Forwarded-For` (the one the proxy added). `None` when the request
    /// did not come through the listener (a router driven directly, in tests).
    pub fn client(&self, extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()?
            .0
            .ip()
            .to_canonical();
        if !self.config.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back();
        Some(forwarded.map_or(peer, |a| a.to_canonical()))
    }

    /// 429 if `client` is locked out now.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), AppError> {
        match client.map(key) {
            Some(key) => self.by_address.check(&key),
            None => Ok(()),
        }
    }

    /// Counts and logs a failed authentication from `client`; returns how long to hold the
    /// answer back.
    pub fn failed(&self, client: Option<IpAddr>, credential: &str, reason: &str) -> Duration {
        let shown = client.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        tracing::warn!(target: "patrol_server::auth", client = %shown, credential, reason, "authentication failed");
        let Some(counted) = client.and_then(|c| self.by_address.failed(key(c), &self.config))
        else {
            return Duration::ZERO;
        };
        if counted.locked_now {
            tracing::warn!(
                target: "patrol_server::auth",
                client = %shown,
                failures = counted.failures,
                lockout_secs = self.config.lockout.as_secs(),
                "too many failed authentications; refusing this address for a while"
            );
        }
        self.delay(counted.failures)
    }

    /// 429 if sign-ins as `name` are locked out now.
    pub fn check_name(&self, name: &str) -> Result<(), AppError> {
        self.by_name.check(&name_key(name))
    }

    /// Counts a failed sign-in as `name` (logged with its address by [`AuthThrottle::failed`]);
    /// returns how long to hold the answer back.
    pub fn failed_name(&self, name: &str) -> Duration {
        let Some(counted) = self.by_name.failed(name_key(name), &self.config) else {
            return Duration::ZERO;
        };
        if counted.locked_now {
            tracing::warn!(
                target: "patrol_server::auth",
                user = %name_key(name),
                failures = counted.failures,
                lockout_secs = self.config.lockout.as_secs(),
                "too many failed sign-ins as this user; refusing its sign-ins for a while"
            );
        }
        self.delay(counted.failures)
    }

    /// How long the `failures`th failure in the window is held back.
    fn delay(&self, failures: u32) -> Duration {
        let over = failures.saturating_sub(self.config.slow_after.saturating_sub(1));
        Duration::from_secs(u64::from(over)).min(MAX_DELAY)
    }
}

/// What sign-in failures are counted by: the name as given, lower-cased and cut to the longest
/// user name, so that case and padding do not make new counts.
fn name_key(name: &str) -> String {
    name.chars()
        .take(crate::credentials::MAX_NAME_LEN)
        .flat_map(char::to_lowercase)
        .collect()
}

/// What the counts are kept by: an IPv4 address, or an IPv6 address's /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_failures: u32) -> AuthThrottle {
        AuthThrottle::new(ThrottleConfig {
            slow_after: 3,
            max_failures,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            trusted_proxies: vec![[10, 0, 0, 1].into()],
        })
    }

    #[test]
    fn failures_are_slowed_then_refused_per_address() {
        let t = throttle(5);
        let a: IpAddr = [192, 0, 2, 7].into();
        let b: IpAddr = [192, 0, 2, 8].into();
        let delays: Vec<u64> = (0..4)
            .map(|_| {
                t.failed(Some(a), "user token", "invalid_credential")
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [0, 0, 1, 2]);
        assert!(t.check(Some(a)).is_ok());
        t.failed(Some(a), "user token", "invalid_credential");
        assert!(matches!(
            t.check(Some(a)),
            Err(AppError::TooManyFailedAttempts { retry_after_secs }) if retry_after_secs > 0
        ));
        assert!(t.check(Some(b)).is_ok(), "another address is not refused");
        assert!(t.check(None).is_ok());
    }

    #[test]
    fn failed_sign_ins_are_counted_per_name_whatever_the_case() {
        let t = throttle(3);
        for _ in 0..2 {
            t.failed_name("Anna");
        }
        assert!(t.check_name("anna").is_ok());
        assert_eq!(t.failed_name("ANNA").as_secs(), 1);
        assert!(matches!(
            t.check_name("anna"),
            Err(AppError::TooManyFailedAttempts { .. })
        ));
        assert!(t.check_name("bob").is_ok());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let t = throttle(2);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap_or([0; 4].into());
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap_or([0; 4].into());
        t.failed(Some(one), "device credential", "invalid_credential");
        t.failed(Some(two), "device credential", "invalid_credential");
        assert!(t.check(Some(one)).is_err());
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let t = throttle(2);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            axum::http::HeaderValue::from_static("203.0.113.9, 198.51.100.4"),
        );
        let mut ext = Extensions::new();
        ext.insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4000))));
        assert_eq!(t.client(&ext, &headers), Some([198, 51, 100, 4].into()));
        let mut direct = Extensions::new();
        direct.insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 4000))));
        assert_eq!(t.client(&direct, &headers), Some([192, 0, 2, 1].into()));
        assert_eq!(t.client(&Extensions::new(), &headers), None);
    }
}
