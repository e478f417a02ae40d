//! Builders of test frames, through `net`'s emit side.

use std::net::IpAddr;

use net::ethernet::{EtherType, MacAddr};
use net::icmpv4::{self, Icmpv4Repr};
use net::icmpv6::{self, Icmpv6Repr};
use net::ipv4::Ipv4Repr;
use net::ipv6::Ipv6Repr;
use net::link::EthernetRepr;
use net::tcp::TcpRepr;
use net::udp::UdpRepr;
use net::vlan::VlanRepr;
use net::{IpAddrs, IpProtocol, TcpFlags};

/// Transport layer of a test packet.
#[derive(Debug, Clone)]
pub enum L4Spec {
    Tcp {
        sport: u16,
        dport: u16,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        window: u16,
        wscale: Option<u8>,
        len: usize,
    },
    Udp {
        sport: u16,
        dport: u16,
        len: usize,
    },
    /// ICMP (v4 or v6 by the addresses) echo request or reply.
    Echo {
        request: bool,
        ident: u16,
    },
    /// ICMP (v4 or v6) error quoting `quoted` (an IP packet, cut as routers do).
    Error {
        ty: u8,
        code: u8,
        quoted: Vec<u8>,
    },
    /// Any other ICMP/ICMPv6 type with an 8-byte body.
    IcmpOther {
        ty: u8,
    },
    /// An IP protocol without ports.
    Raw {
        proto: u8,
    },
}

/// The transport segment of `l4` and its protocol, checksum filled for `addrs`.
fn segment(addrs: &IpAddrs, l4: &L4Spec) -> (IpProtocol, Vec<u8>) {
    let v6 = addrs.is_ipv6();
    let icmp = if v6 {
        IpProtocol::ICMPV6
    } else {
        IpProtocol::ICMP
    };
    match l4 {
        L4Spec::Tcp {
            sport,
            dport,
            flags,
            seq,
            ack,
            window,
            wscale,
            len,
        } => {
            // NOP + window scale: one 32-bit word of options.
            let ws = wscale.map(|ws| [1, 3, 3, ws]);
            let repr = TcpRepr {
                options: ws.as_ref().map_or(&[][..], |o| &o[..]),
                ..TcpRepr::new(*sport, *dport, *seq, *ack, *flags, *window)
            };
            let mut t = vec![0xab; repr.header_len() + len];
            repr.emit(&mut t, addrs).unwrap();
            (IpProtocol::TCP, t)
        }
        L4Spec::Udp { sport, dport, len } => {
            let mut t = vec![0xcd; UdpRepr::HEADER_LEN + len];
            let repr = UdpRepr {
                src_port: *sport,
                dst_port: *dport,
            };
            repr.emit(&mut t, addrs).unwrap();
            (IpProtocol::UDP, t)
        }
        L4Spec::Echo { request, ident } => {
            let ty = match (v6, request) {
                (false, true) => icmpv4::types::ECHO_REQUEST,
                (false, false) => icmpv4::types::ECHO_REPLY,
                (true, true) => icmpv6::types::ECHO_REQUEST,
                (true, false) => icmpv6::types::ECHO_REPLY,
            };
            let rest = Icmpv4Repr::echo(ty, *ident, 1).rest_of_header;
            (icmp, icmp_message(addrs, ty, 0, rest, b"abcdefgh"))
        }
        L4Spec::Error { ty, code, quoted } => (icmp, icmp_message(addrs, *ty, *code, 0, quoted)),
        L4Spec::IcmpOther { ty } => {
            let body: &[u8] = if v6 { &[0; 16] } else { &[] };
            (icmp, icmp_message(addrs, *ty, 0, 0, body))
        }
        L4Spec::Raw { proto } => (IpProtocol(*proto), vec![0; 12]),
    }
}

/// An ICMP (IPv4) or ICMPv6 (IPv6) message.
fn icmp_message(addrs: &IpAddrs, msg_type: u8, msg_code: u8, rest: u32, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; Icmpv4Repr::HEADER_LEN + body.len()];
    m[Icmpv4Repr::HEADER_LEN..].copy_from_slice(body);
    match *addrs {
        IpAddrs::V4 { .. } => Icmpv4Repr {
            msg_type,
            msg_code,
            rest_of_header: rest,
        }
        .emit(&mut m),
        IpAddrs::V6 { src, dst } => Icmpv6Repr {
            msg_type,
            msg_code,
            rest_of_header: rest,
        }
        .emit(&mut m, src, dst),
    }
    .unwrap();
    m
}

/// The IP packet (no Ethernet header): TTL/hop limit 64, IPv4 with DF.
pub fn ip_packet(src: IpAddr, dst: IpAddr, l4: &L4Spec) -> Vec<u8> {
    let addrs = IpAddrs::new(src, dst).expect("one address family");
    let (proto, seg) = segment(&addrs, l4);
    let hl = if addrs.is_ipv6() {
        Ipv6Repr::HEADER_LEN
    } else {
        Ipv4Repr::HEADER_LEN
    };
    let mut ip = vec![0u8; hl + seg.len()];
    ip[hl..].copy_from_slice(&seg);
    match addrs {
        IpAddrs::V4 { src, dst } => Ipv4Repr::new(src, dst, proto, seg.len()).emit(&mut ip),
        IpAddrs::V6 { src, dst } => Ipv6Repr::new(src, dst, proto, seg.len()).emit(&mut ip),
    }
    .unwrap();
    ip
}

/// An Ethernet frame, optionally 802.1Q-tagged, zero-padded to 60 bytes.
pub fn frame(vlan: Option<u16>, src: IpAddr, dst: IpAddr, l4: &L4Spec) -> Vec<u8> {
    let ip = ip_packet(src, dst, l4);
    let ethertype = if src.is_ipv6() {
        EtherType::IPV6
    } else {
        EtherType::IPV4
    };
    let mut eth = EthernetRepr::new(
        MacAddr([2, 0, 0, 0, 0, 1]),
        MacAddr([2, 0, 0, 0, 0, 2]),
        ethertype,
    );
    eth.vlans[0] = vlan.map(|v| VlanRepr::dot1q(v).unwrap());
    let mut f = vec![0u8; (eth.header_len() + ip.len()).max(60)];
    let l3 = eth.emit(&mut f).unwrap();
    f[l3..l3 + ip.len()].copy_from_slice(&ip);
    f
}

/// A TCP segment spec.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    sport: u16,
    dport: u16,
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    window: u16,
    wscale: Option<u8>,
    len: usize,
) -> L4Spec {
    L4Spec::Tcp {
        sport,
        dport,
        flags,
        seq,
        ack,
        window,
        wscale,
        len,
    }
}

/// What an IPv4 router quotes: the header plus 8 bytes.
pub fn quote_v4(packet: &[u8]) -> Vec<u8> {
    packet[..packet.len().min(28)].to_vec()
}
