//! The gateways control manages: `[[gateways]]` in the config (or the single `dataplane_socket`, the gateway
//! [`LOCAL`]), one [`Dataplane`] client each (its own timeout and reconnect backoff), and what control last
//! learned of each (its status, when it last answered, its last error, whether reconciliation verified or refused
//! it). Requests to several gateways run concurrently ([`Gateways::each`]), so a slow gateway delays only its
//! own part of an answer.
//!
//! A remote gateway is reached over mutual TLS ([`tls`]): control presents `client_cert`/`client_key` and accepts
//! the gateway's certificate only if `ca` signs it (for `server_name`, by default the address's host) or if its
//! SHA-256 is `pin`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::Downgrade;
pub use crate::dataplane::LOCAL;
use crate::dataplane::{Dataplane, DataplaneError, Transport};

pub mod tls;

/// One `[[gateways]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// How the API, the metrics' `gateway` label and the flow log call it: 1 to 32 of `A-Z a-z 0-9 _ . -`.
    pub name: String,
    /// Its local control socket (the one it reserves for control).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Its remote listener, `host:port` (mutual TLS).
    #[serde(default)]
    pub address: Option<String>,
    /// CA certificates (PEM) that sign the gateway's certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Instead of `ca`: the SHA-256 of the gateway's certificate (64 hex digits, colons allowed).
    #[serde(default)]
    pub pin: Option<String>,
    /// The certificate (PEM chain) and key control presents to the gateway.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The name the gateway's certificate must carry (with `ca`); default: the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// How long to wait for one answer of this gateway; default: `dataplane_timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The HA pair it belongs to: exactly two gateways name the same pair (same rules as `name`, and no
    /// gateway may be called like a pair). Control never sets a member's role (keepalived does); it shows
    /// both, sums their counters and commits to both like to any gateway.
    #[serde(default)]
    pub pair: Option<String>,
}

impl GatewayConfig {
    /// The gateway of a config that gives only `dataplane_socket`.
    pub fn local(socket: PathBuf) -> GatewayConfig {
        GatewayConfig {
            name: LOCAL.into(),
            socket: Some(socket),
            address: None,
            ca: None,
            pin: None,
            client_cert: None,
            client_key: None,
            server_name: None,
            timeout_ms: None,
            pair: None,
        }
    }

    /// Checks one entry: (the field, relative to the entry, and what is wrong).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        check_name(&self.name).map_err(|m| ("name", m))?;
        if let Some(pair) = &self.pair {
            check_name(pair).map_err(|m| ("pair", m))?;
        }
        let tls_fields = self.ca.is_some()
            || self.pin.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.server_name.is_some();
        match (&self.socket, &self.address) {
            (Some(_), Some(_)) => Err((
                "address",
                "give socket (a local gateway) or address (a remote one), not both".into(),
            )),
            (None, None) => Err((
                "socket",
                "give socket (a local gateway) or address (a remote one)".into(),
            )),
            (Some(s), None) if s.as_os_str().is_empty() => {
                Err(("socket", "must not be empty".into()))
            }
            (Some(_), None) if tls_fields => Err((
                "socket",
                "ca, pin, client_cert, client_key and server_name are for a remote gateway (address)".into(),
            )),
            (Some(_), None) => self.check_timeout(),
            (None, Some(address)) => {
                let port = address.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                if !matches!(port, Some(Ok(p)) if p > 0) || crate::export::host_of(address).is_empty()
                {
                    return Err(("address", format!("{address:?}: expected host:port")));
                }
                match (&self.ca, &self.pin) {
                    (Some(_), Some(_)) => {
                        return Err(("pin", "give ca or pin, not both".into()));
                    }
                    (None, None) => {
                        return Err((
                            "ca",
                            "a remote gateway's certificate is checked against ca (a PEM file) or pin \
                             (its SHA-256): give one"
                                .into(),
                        ));
                    }
                    (None, Some(pin)) => parse_pin(pin).map(|_| ()).map_err(|r| ("pin", r.into()))?,
                    (Some(_), None) => {}
                }
                if self.client_cert.is_none() || self.client_key.is_none() {
                    return Err((
                        if self.client_cert.is_none() {
                            "client_cert"
                        } else {
                            "client_key"
                        },
                        "a remote gateway requires a client certificate: give client_cert and client_key"
                            .into(),
                    ));
                }
                self.check_timeout()
            }
        }
    }

    fn check_timeout(&self) -> Result<(), (&'static str, String)> {
        match self.timeout_ms {
            Some(0) => Err(("timeout_ms", "must be at least 1".into())),
            _ => Ok(()),
        }
    }
}

/// A gateway's or a pair's name: 1 to 32 of `A-Z a-z 0-9 _ . -`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?}: 1 to 32 of A-Z a-z 0-9 _ . -"))
    }
}

/// A pin as bytes: 64 hex digits, colons between byte pairs allowed (as `openssl x509 -fingerprint` prints).
pub fn parse_pin(pin: &str) -> Result<[u8; 32], &'static str> {
    const WHY: &str = "expected the certificate's SHA-256: 64 hex digits, colons allowed";
    let hex: String = pin.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WHY);
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| WHY)?;
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway {gateway}: {field}: {reason}")]
    Tls {
        gateway: String,
        field: String,
        reason: String,
    },
}

/// What control last learned of a gateway.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its last `status` answer, or why there was none.
    pub status: Result<protocol::Status, String>,
    /// When it last answered anything.
    pub last_contact: Option<SystemTime>,
    /// The last failure of a request to it (cleared by the next status it answers).
    pub last_error: Option<String>,
    /// The last reconciliation that verified it runs the active version: (version, its uptime then).
    pub verified: Option<(u64, f64)>,
    /// Set while reconciliation refuses to move it to an older version than it runs.
    pub refused: Option<Downgrade>,
}

/// One managed gateway.
#[derive(Debug)]
pub struct Gateway {
    pub client: Dataplane,
    /// The HA pair it belongs to (`pair` in its config entry).
    pub pair: Option<String>,
    seen: Mutex<Seen>,
}

impl Gateway {
    pub fn new(client: Dataplane) -> Gateway {
        Gateway {
            client,
            pair: None,
            seen: Mutex::new(Seen {
                status: Err("not asked yet".into()),
                last_contact: None,
                last_error: None,
                verified: None,
                refused: None,
            }),
        }
    }

    pub fn name(&self) -> &str {
        self.client.name()
    }

    /// What control last learned of it.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks its status and remembers the answer (or the failure).
    pub async fn refresh(&self) -> Result<protocol::Status, DataplaneError> {
        let status = self.client.status().await;
        let mut seen = self.seen();
        match &status {
            Ok(s) => {
                seen.status = Ok(s.clone());
                seen.last_contact = Some(SystemTime::now());
                seen.last_error = None;
            }
            Err(e) => {
                seen.status = Err(e.to_string());
                seen.last_error = Some(e.to_string());
                seen.verified = None;
            }
        }
        status
    }

    /// Records a failed request (a commit step, a push).
    pub fn failed(&self, what: &str, e: &DataplaneError) {
        let mut seen = self.seen();
        seen.last_error = Some(format!("{what}: {e}"));
        seen.verified = None;
    }

    /// Records that it now enforces `version` (it said so in answer to a publish or a push).
    pub fn enforces(&self, version: u64) {
        let mut seen = self.seen();
        seen.last_contact = Some(SystemTime::now());
        if let Ok(status) = &mut seen.status {
            status.policy_version = u32::try_from(version).ok();
        }
    }

    /// Forgets the last verification: the next reconciliation compares documents again.
    pub fn unverify(&self) {
        self.seen().verified = None;
    }

    /// Its part in an HA pair as it last said (`None` when it did not answer, or has no `[ha]`).
    pub fn ha(&self) -> Option<protocol::HaStatus> {
        self.seen().status.as_ref().ok().and_then(|s| s.ha.clone())
    }

    /// The version it last said it runs.
    pub fn running(&self) -> Option<u64> {
        self.seen()
            .status
            .as_ref()
            .ok()
            .and_then(|s| s.policy_version)
            .map(u64::from)
    }

    /// Its entry in `GET /gateways`, `/health` and `/status`, against the store's `active` version.
    pub fn to_json(&self, active: Option<u64>) -> Value {
        let seen = self.seen().clone();
        let (reachable, version, flows, uptime) = match &seen.status {
            Ok(s) => (
                true,
                s.policy_version,
                Some(s.flows_active),
                Some(s.uptime_s),
            ),
            Err(_) => (false, None, None, None),
        };
        let in_sync = reachable && active.is_some() && version.map(u64::from) == active;
        // What the gateway says, never what control decided: keepalived sets the roles.
        let ha = seen.status.as_ref().ok().map(|s| s.ha.as_ref());
        let role = match ha {
            None => Value::Null,
            Some(None) => json!("standalone"),
            Some(Some(ha)) => json!(ha.role),
        };
        let (transport, address) = match self.client.transport() {
            Transport::Unix(path) => ("unix", path.display().to_string()),
            Transport::Tls { address, .. } => ("tls", address.clone()),
        };
        json!({
            "name": self.name(),
            "transport": transport,
            "address": address,
            "reachable": reachable,
            "policy_version": version,
            "in_sync": in_sync,
            "pair": self.pair,
            "role": role,
            "ha": ha.flatten(),
            "flows_active": flows,
            "uptime_s": uptime,
            "last_contact": seen.last_contact.map(crate::time::rfc3339),
            "last_error": seen.last_error,
            "reconcile_refused": seen.refused.map(|d| json!({
                "active_version": d.active_version,
                "dataplane_version": d.dataplane_version,
                "reason": crate::reconcile::refusal_reason(&d),
            })),
        })
    }
}

/// The configured gateways, in config order, and the store's active version as last seen.
#[derive(Debug, Clone)]
pub struct Gateways(Vec<Arc<Gateway>>, Arc<Mutex<Option<u64>>>);

/// A `gateway` parameter that names no configured gateway.
#[derive(Debug, thiserror::Error)]
#[error("no gateway {0:?} (configured: {1})")]
pub struct UnknownGateway(pub String, pub String);

impl Gateways {
    /// A client per entry; `timeout_ms` where an entry gives none. Reads the TLS files the entries name.
    pub fn connect(configs: &[GatewayConfig], timeout_ms: u64) -> Result<Gateways, GatewayError> {
        let mut out = Vec::with_capacity(configs.len());
        for gw in configs {
            let transport = match (&gw.socket, &gw.address) {
                (Some(socket), _) => Transport::Unix(socket.clone()),
                (None, Some(address)) => {
                    let (connector, server_name) = tls::connector(gw, address)?;
                    Transport::Tls {
                        address: address.clone(),
                        connector,
                        server_name,
                    }
                }
                (None, None) => unreachable!("checked with the config"),
            };
            let timeout = Duration::from_millis(gw.timeout_ms.unwrap_or(timeout_ms));
            let mut gateway =
                Gateway::new(Dataplane::with_transport(&gw.name, transport).with_timeout(timeout));
            gateway.pair.clone_from(&gw.pair);
            out.push(Arc::new(gateway));
        }
        Ok(Gateways(out, Arc::default()))
    }

    /// One gateway for an existing client (tests, and control run in process).
    pub fn single(client: Dataplane) -> Gateways {
        Gateways(vec![Arc::new(Gateway::new(client))], Arc::default())
    }

    /// The store's active version, without waiting for the store: a commit holds the store while it waits for
    /// the gateways, and `health` must not wait with it. While the store is busy, the version last seen.
    pub fn active_version(&self, store: &tokio::sync::Mutex<crate::store::Store>) -> Option<u64> {
        let mut seen = self.1.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(store) = store.try_lock() {
            *seen = store.active_version();
        }
        *seen
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Gateway>> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|g| g.name()).collect()
    }

    /// What a `gateway` parameter names: the gateway `name`, the two members of the HA pair `name`, or every
    /// gateway when `None`.
    pub fn select(&self, name: Option<&str>) -> Result<Vec<Arc<Gateway>>, UnknownGateway> {
        let Some(n) = name else {
            return Ok(self.0.clone());
        };
        if let Some(g) = self.get(n) {
            return Ok(vec![g]);
        }
        let members = self.members(n);
        if members.is_empty() {
            return Err(UnknownGateway(n.to_string(), self.known()));
        }
        Ok(members)
    }

    /// The names a `gateway` parameter may take, for an error message: every gateway, then every pair.
    fn known(&self) -> String {
        let pairs = self.pair_names().into_iter().map(|p| format!("pair {p}"));
        let names: Vec<String> = self
            .names()
            .into_iter()
            .map(String::from)
            .chain(pairs)
            .collect();
        names.join(", ")
    }

    /// The gateway called `name` (a pair's name is none).
    pub fn get(&self, name: &str) -> Option<Arc<Gateway>> {
        self.0.iter().find(|g| g.name() == name).cloned()
    }

    /// The names of the members of the pair `name` (none when no pair has that name): a `gateway` filter of
    /// recorded traffic that names a pair matches them (traffic is recorded under the member that carried it).
    pub fn member_names(&self, name: &str) -> Vec<String> {
        self.members(name)
            .iter()
            .map(|g| g.name().to_string())
            .collect()
    }

    /// Every pair with its members' names (for parts of control that see names only, like the flow log).
    pub fn pairs(&self) -> Vec<(String, Vec<String>)> {
        self.pair_names()
            .into_iter()
            .map(|p| (p.to_string(), self.member_names(p)))
            .collect()
    }

    /// `gateways` with, for each HA pair among them, only its active member (when exactly one member says it is
    /// active): the standby tracks copies of the active's connections, which would count twice.
    pub fn active_members(gateways: Vec<Arc<Gateway>>) -> Vec<Arc<Gateway>> {
        let is_active = |g: &Gateway| g.ha().is_some_and(|h| h.role == protocol::Role::Active);
        let sole_active = |pair: &str| {
            let active: Vec<&Arc<Gateway>> = gateways
                .iter()
                .filter(|g| g.pair.as_deref() == Some(pair) && is_active(g))
                .collect();
            active.len() == 1
        };
        let keep: Vec<bool> = gateways
            .iter()
            .map(|g| match g.pair.as_deref() {
                Some(pair) if sole_active(pair) => is_active(g),
                _ => true,
            })
            .collect();
        gateways
            .into_iter()
            .zip(keep)
            .filter_map(|(g, keep)| keep.then_some(g))
            .collect()
    }

    /// Runs `f` on every gateway of `gateways` at once; the answers in the same order.
    pub async fn each<'a, T, F, Fut>(gateways: &'a [Arc<Gateway>], f: F) -> Vec<T>
    where
        F: Fn(&'a Arc<Gateway>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        futures_util::future::join_all(gateways.iter().map(f)).await
    }

    /// The highest version any gateway last said it runs.
    pub fn highest_running(&self) -> Option<u64> {
        self.0.iter().filter_map(|g| g.running()).max()
    }

    /// Every gateway's entry, against the store's `active` version.
    pub fn to_json(&self, active: Option<u64>) -> Vec<Value> {
        self.0.iter().map(|g| g.to_json(active)).collect()
    }

    /// The HA pairs' names, in config order of their first member.
    pub fn pair_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for pair in self.0.iter().filter_map(|g| g.pair.as_deref()) {
            if !names.contains(&pair) {
                names.push(pair);
            }
        }
        names
    }

    /// The members of the pair `name` (none when no pair has that name).
    pub fn members(&self, name: &str) -> Vec<Arc<Gateway>> {
        self.0
            .iter()
            .filter(|g| g.pair.as_deref() == Some(name))
            .cloned()
            .collect()
    }

    /// Every HA pair from what its members last said: which one is active (`null` when none or both claim
    /// it), whether the connection-state sync is complete (the active member sends and has everything
    /// acknowledged), and the flows each member tracks.
    pub fn pairs_json(&self) -> Vec<Value> {
        self.pair_names()
            .into_iter()
            .map(|pair| {
                let members = self.members(pair);
                let has = |g: &Gateway, role| g.ha().is_some_and(|h| h.role == role);
                let active: Vec<&Arc<Gateway>> = members
                    .iter()
                    .filter(|g| has(g, protocol::Role::Active))
                    .collect();
                let active = match active.as_slice() {
                    [one] => Some(*one),
                    _ => None,
                };
                let sync_complete = active.is_some_and(|g| {
                    g.ha()
                        .and_then(|h| h.sync)
                        .is_some_and(|s| s.state == protocol::SyncState::InSync)
                });
                let flows: serde_json::Map<String, Value> = members
                    .iter()
                    .map(|g| {
                        let flows = g.seen().status.as_ref().ok().map(|s| s.flows_active);
                        (g.name().to_string(), json!(flows))
                    })
                    .collect();
                json!({
                    "name": pair,
                    "members": members.iter().map(|g| g.name()).collect::<Vec<_>>(),
                    "active": active.map(|g| g.name()),
                    "sync_complete": sync_complete,
                    "flows_active": flows,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_read_with_or_without_colons() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let with_colons = crate::tls::fingerprint_sha256(b"");
        assert_eq!(parse_pin(hex), parse_pin(&with_colons));
        assert_eq!(parse_pin(hex).unwrap()[0], 0xe3);
        assert!(parse_pin("e3b0").is_err());
        assert!(parse_pin(&hex.replace('e', "g")).is_err());
    }

    /// Gateways `a` and `b` (the pair `ab`) and `c`, none asked yet.
    fn three() -> Gateways {
        let entry = |name: &str, pair: Option<&str>| GatewayConfig {
            pair: pair.map(String::from),
            ..GatewayConfig::local(PathBuf::from(format!("/nowhere/{name}.sock")))
        };
        let mut configs = vec![
            entry("a", Some("ab")),
            entry("b", Some("ab")),
            entry("c", None),
        ];
        for (c, name) in configs.iter_mut().zip(["a", "b", "c"]) {
            c.name = name.into();
        }
        Gateways::connect(&configs, 1000).unwrap()
    }

    fn names(list: &[Arc<Gateway>]) -> Vec<&str> {
        list.iter().map(|g| g.name()).collect()
    }

    /// Makes `g` say it has `role` in its pair.
    fn says(g: &Gateway, role: &str) {
        let status = json!({
            "policy_version": 1, "policy_loaded_at": null, "rules": 0, "workers": [1], "uptime_s": 1.0,
            "flows_active": 0, "dpdk": "", "last_swap": {"compile_ms": 0.0, "persist_ms": 0.0, "grace_period_us": 0.0},
            "ha": {"role": role, "role_changes": 1},
        });
        g.seen().status = Ok(serde_json::from_value(status).unwrap());
    }

    #[test]
    fn a_gateway_parameter_names_a_gateway_or_a_pair() {
        let gws = three();
        assert_eq!(names(&gws.select(None).unwrap()), ["a", "b", "c"]);
        assert_eq!(names(&gws.select(Some("c")).unwrap()), ["c"]);
        assert_eq!(names(&gws.select(Some("a")).unwrap()), ["a"]);
        assert_eq!(names(&gws.select(Some("ab")).unwrap()), ["a", "b"]);
        let e = gws.select(Some("x")).unwrap_err().to_string();
        assert_eq!(e, "no gateway \"x\" (configured: a, b, c, pair ab)");
        assert_eq!(gws.member_names("ab"), ["a", "b"]);
        assert!(gws.member_names("c").is_empty(), "a gateway has no members");
        assert_eq!(
            gws.pairs(),
            [("ab".to_string(), vec!["a".to_string(), "b".to_string()])]
        );
        assert!(gws.get("ab").is_none(), "a pair is no gateway");
    }

    #[test]
    fn of_a_pair_only_its_sole_active_member_is_examined() {
        let gws = three();
        let all = || gws.select(None).unwrap();
        // Nobody answered yet: no member is known active, both are kept.
        assert_eq!(names(&Gateways::active_members(all())), ["a", "b", "c"]);
        let list = gws.select(None).unwrap();
        says(&list[0], "standby");
        says(&list[1], "active");
        assert_eq!(names(&Gateways::active_members(all())), ["b", "c"]);
        let pair = gws.select(Some("ab")).unwrap();
        assert_eq!(names(&Gateways::active_members(pair)), ["b"]);
        // Both claim it (split brain): neither copy can be preferred, both are kept.
        says(&list[0], "active");
        assert_eq!(names(&Gateways::active_members(all())), ["a", "b", "c"]);
    }
}
