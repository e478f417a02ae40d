//! Failed authentications: counted by reason (`bulkhead_control_auth_failures_total{reason}`) and slowed per
//! source. After `free_failures` failures from one source, the answer to each further failure waits a delay that
//! doubles from `failure_delay_ms` up to `max_failure_delay_ms` (an async sleep in the request's own task: no
//! server thread waits). A successful authentication from the source, or `forget_after_s` without a failure,
//! starts it afresh. Sources are IPv4 addresses and IPv6 /64 prefixes (what one host usually holds); at most
//! `tracked_sources` are remembered, the one whose last failure is oldest forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Deserialize;

use super::tokens::Refusal;

/// Why an authentication failed: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A secret no token has.
    Unknown,
    Expired,
    Revoked,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Missing,
        Reason::Unknown,
        Reason::Expired,
        Reason::Revoked,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Unknown => "unknown",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
        }
    }
}

impl From<Refusal> for Reason {
    fn from(r: Refusal) -> Reason {
        match r {
            Refusal::Unknown => Reason::Unknown,
            Refusal::Expired => Reason::Expired,
            Refusal::Revoked => Reason::Revoked,
        }
    }
}

/// `[auth]` in control.toml: how failed authentications are slowed, and how often last uses are saved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failures from one source answered at once.
    pub free_failures: u32,
    /// The delay of the first slowed answer; each further failure doubles it.
    pub failure_delay_ms: u64,
    /// The longest delay.
    pub max_failure_delay_ms: u64,
    /// A source with no failure for this long starts afresh.
    pub forget_after_s: u64,
    /// Most sources remembered.
    pub tracked_sources: usize,
    /// How often the tokens' last uses are written to the token file (and at shutdown).
    pub last_use_flush_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            free_failures: 5,
            failure_delay_ms: 250,
            max_failure_delay_ms: 8_000,
            forget_after_s: 900,
            tracked_sources: 4096,
            last_use_flush_s: 60,
        }
    }
}

impl AuthConfig {
    /// What is wrong with the values: (field, message).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_failure_delay_ms < self.failure_delay_ms {
            return Err((
                "auth.max_failure_delay_ms",
                "must be at least auth.failure_delay_ms",
            ));
        }
        if self.max_failure_delay_ms > 60_000 {
            return Err((
                "auth.max_failure_delay_ms",
                "must be at most 60000 (a client waits that long)",
            ));
        }
        if self.tracked_sources == 0 || self.tracked_sources > 1_000_000 {
            return Err(("auth.tracked_sources", "must be in 1..=1000000"));
        }
        if self.last_use_flush_s == 0 {
            return Err(("auth.last_use_flush_s", "must be at least 1"));
        }
        Ok(())
    }
}

struct Source {
    failures: u32,
    last: Instant,
}

/// The failure counter and the per-source slowdown.
pub struct Failures {
    config: AuthConfig,
    counter: IntCounterVec,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

/// The source a peer address is slowed as: itself (IPv4), its /64 (IPv6).
fn source(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

impl Failures {
    pub fn new(config: AuthConfig) -> Failures {
        let counter = IntCounterVec::new(
            Opts::new(
                "bulkhead_control_auth_failures_total",
                "Requests refused because their bearer token was missing, unknown, expired or revoked.",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        for r in Reason::ALL {
            counter.with_label_values(&[r.label()]);
        }
        Failures {
            config,
            counter,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Adds the counter to the registry `/metrics` renders.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.counter.clone()))
    }

    /// Counts a failure from `peer` (unknown when the listener did not say) and answers how long its answer
    /// must wait, with the number of failures from its source so far.
    pub fn failed(&self, peer: Option<IpAddr>, reason: Reason) -> (Duration, u32) {
        self.counter.with_label_values(&[reason.label()]).inc();
        let Some(peer) = peer else {
            return (Duration::ZERO, 0);
        };
        let now = Instant::now();
        let forget = Duration::from_secs(self.config.forget_after_s);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let key = source(peer);
        if !sources.contains_key(&key) && sources.len() >= self.config.tracked_sources {
            let oldest = sources.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                sources.remove(&oldest);
            }
        }
        let s = sources.entry(key).or_insert(Source {
            failures: 0,
            last: now,
        });
        if now.duration_since(s.last) > forget {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        (self.delay(s.failures), s.failures)
    }

    /// The delay of the answer to the `n`th failure in a row.
    fn delay(&self, n: u32) -> Duration {
        let Some(over) = n.checked_sub(self.config.free_failures + 1) else {
            return Duration::ZERO;
        };
        let ms = self
            .config
            .failure_delay_ms
            .saturating_mul(1u64 << over.min(32))
            .min(self.config.max_failure_delay_ms);
        Duration::from_millis(ms)
    }

    /// A successful authentication from `peer`: its source starts afresh.
    pub fn succeeded(&self, peer: Option<IpAddr>) {
        let Some(peer) = peer else { return };
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if !sources.is_empty() {
            sources.remove(&source(peer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(free: u32, tracked: usize) -> Failures {
        Failures::new(AuthConfig {
            free_failures: free,
            failure_delay_ms: 100,
            max_failure_delay_ms: 400,
            tracked_sources: tracked,
            ..AuthConfig::default()
        })
    }

    #[test]
    fn delays_grow_after_the_free_failures_are_bounded_and_reset_on_success() {
        let f = failures(2, 16);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let delays: Vec<u64> = (0..7)
            .map(|_| f.failed(Some(a), Reason::Unknown).0.as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 100, 200, 400, 400, 400]);
        // Another address is not slowed by a's failures.
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(f.failed(Some(b), Reason::Missing).0, Duration::ZERO);
        f.succeeded(Some(a));
        assert_eq!(f.failed(Some(a), Reason::Unknown), (Duration::ZERO, 1));
        // No address: counted, never slowed.
        assert_eq!(f.failed(None, Reason::Expired).0, Duration::ZERO);
        assert_eq!(f.counter.with_label_values(&["unknown"]).get(), 8);
        assert_eq!(f.counter.with_label_values(&["revoked"]).get(), 0);
    }

    #[test]
    fn ipv6_sources_are_prefixes_and_the_map_is_bounded() {
        let f = failures(0, 2);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        assert_eq!(f.failed(Some(one), Reason::Unknown).1, 1);
        assert_eq!(f.failed(Some(same_64), Reason::Unknown).1, 2);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        for i in 0..10u8 {
            f.failed(Some(IpAddr::from([198, 51, 100, i])), Reason::Unknown);
        }
        assert_eq!(f.sources.lock().unwrap().len(), 2);
        // The oldest were forgotten: `one`'s prefix starts afresh.
        assert_eq!(f.failed(Some(one), Reason::Unknown).1, 1);
    }
}
