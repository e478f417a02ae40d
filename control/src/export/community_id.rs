//! Community ID v1 (Corelight's community-id-spec): a flow hash that Zeek, Suricata and most SIEMs compute the
//! same way, so a flow exported here can be joined with their records.
//!
//! `"1:" + base64(SHA-1(seed ‖ addr_a ‖ addr_b ‖ proto ‖ 0 ‖ port_a ‖ port_b))`, all big-endian, with the
//! endpoints ordered so both directions of a flow hash alike. ICMP and ICMPv6 put the type and code where the
//! ports go; a type that has a counterpart (echo and echo reply, ...) maps its code to the counterpart type so
//! request and answer meet, and one without is hashed one-way (never reordered).
//!
//! There is no Rust crate of standing for the algorithm itself (the few on crates.io are unmaintained
//! one-person ports), so it is written here on top of the RustCrypto `sha1` and the `base64` crates; the
//! spec's published vectors hold it equal to the reference implementations.

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest, Sha1};

use protocol::FlowEvent;

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

/// The Community ID of a flow given as its originator's tuple. For ICMP/ICMPv6 `sport` is the type and `dport`
/// the code; protocols other than TCP, UDP, SCTP, ICMP and ICMPv6 are hashed without ports.
pub fn community_id(
    seed: u16,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
) -> String {
    let (mut a, mut b) = ((src, sport), (dst, dport));
    let mut one_way = false;
    let has_ports = match proto {
        TCP | UDP | SCTP => true,
        ICMP | ICMPV6 => {
            let (ty, code) = (sport as u8, dport);
            let pairs: &[(u8, u8)] = if proto == ICMP {
                &ICMP_PAIRS
            } else {
                &ICMPV6_PAIRS
            };
            match counterpart(pairs, ty) {
                Some(other) => b.1 = u16::from(other),
                None => {
                    b.1 = code;
                    one_way = true;
                }
            }
            true
        }
        _ => false,
    };
    // The spec orders endpoints by address bytes, then port: `IpAddr`'s order within one family.
    if !one_way && (b.0, b.1) < (a.0, a.1) {
        std::mem::swap(&mut a, &mut b);
    }
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    for addr in [a.0, b.0] {
        match addr {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
    }
    h.update([proto, 0]);
    if has_ports {
        h.update(a.1.to_be_bytes());
        h.update(b.1.to_be_bytes());
    }
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    )
}

/// ICMP request and answer types that hash as one two-way flow, per the spec: echo, router, timestamp,
/// information and address mask.
const ICMP_PAIRS: [(u8, u8); 5] = [(8, 0), (10, 9), (13, 14), (15, 16), (17, 18)];

/// The same for ICMPv6: echo, multicast listener, router, neighbor, node information, home agent discovery.
const ICMPV6_PAIRS: [(u8, u8); 6] = [
    (128, 129),
    (130, 131),
    (133, 134),
    (135, 136),
    (139, 140),
    (144, 145),
];

/// The type that answers (or is answered by) type `ty`, if it has one.
fn counterpart(pairs: &[(u8, u8)], ty: u8) -> Option<u8> {
    pairs.iter().find_map(|&(a, b)| match ty {
        t if t == a => Some(b),
        t if t == b => Some(a),
        _ => None,
    })
}

/// The Community ID (seed 0, as Zeek and Suricata default to) of a dataplane flow event; ICMP by its type and
/// code ([`FlowEvent::icmp_type_code`]).
pub fn of_event(e: &FlowEvent) -> String {
    let (sport, dport) = match e.icmp_type_code() {
        Some((ty, code)) => (u16::from(ty), u16::from(code)),
        None => (e.sport, e.dport),
    };
    community_id(0, e.src, e.dst, sport, dport, e.proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The vectors the spec publishes (and Zeek's own test carries), with seeds 0 and 1, both directions.
    #[test]
    fn the_published_vectors() {
        let v6a = ip("fe80:0001:0203:0405:0607:0809:0A0B:0C0D");
        let v6b = ip("fe80:1011:1213:1415:1617:1819:1A1B:1C1D");
        let (a, b) = (ip("1.2.3.4"), ip("5.6.7.8"));
        let cases = [
            (0, a, b, 1122, 3344, TCP, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
            (0, a, b, 1122, 3344, UDP, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
            (0, a, b, 8, 0, ICMP, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="),
            (
                0,
                v6a,
                v6b,
                128,
                0,
                ICMPV6,
                "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
            ),
            (1, a, b, 1122, 3344, TCP, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
            (1, a, b, 1122, 3344, UDP, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
            (1, a, b, 8, 0, ICMP, "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
            (
                1,
                v6a,
                v6b,
                128,
                0,
                ICMPV6,
                "1:IO27GQzPuCtNnwFvjWALMHu5tJE=",
            ),
            (0, a, b, 0, 0, 46, "1:ikv3kmf89luf73WPz1jOs49S768="),
        ];
        for (seed, src, dst, sport, dport, proto, want) in cases {
            assert_eq!(
                community_id(seed, src, dst, sport, dport, proto),
                want,
                "{src}:{sport} -> {dst}:{dport} proto {proto} seed {seed}"
            );
        }
        // The answers hash like the requests.
        assert_eq!(
            community_id(0, b, a, 3344, 1122, TCP),
            "1:wCb3OG7yAFWelaUydu0D+125CLM="
        );
        assert_eq!(
            community_id(0, b, a, 0, 0, ICMP),
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="
        );
        assert_eq!(
            community_id(0, v6b, v6a, 129, 0, ICMPV6),
            "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="
        );
    }

    #[test]
    fn one_way_icmp_is_never_reordered() {
        // Destination unreachable (3) has no counterpart: the two directions differ.
        let (a, b) = (ip("10.0.0.2"), ip("10.0.0.1"));
        assert_ne!(
            community_id(0, a, b, 3, 1, ICMP),
            community_id(0, b, a, 3, 1, ICMP)
        );
    }
}
