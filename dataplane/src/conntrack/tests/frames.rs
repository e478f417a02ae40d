//! Builders of test frames.

use std::net::IpAddr;

use net::TcpFlags;

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

fn push16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn push32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

/// The IP packet (no Ethernet header).
pub fn ip_packet(src: IpAddr, dst: IpAddr, l4: &L4Spec) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let mut t = Vec::new();
    let proto = match l4 {
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
            push16(&mut t, *sport);
            push16(&mut t, *dport);
            push32(&mut t, *seq);
            push32(&mut t, *ack);
            let opt_words: u16 = if wscale.is_some() { 1 } else { 0 };
            push16(&mut t, ((5 + opt_words) << 12) | flags.bits());
            push16(&mut t, *window);
            push32(&mut t, 0);
            if let Some(ws) = wscale {
                t.extend_from_slice(&[1, 3, 3, *ws]);
            }
            t.resize(t.len() + len, 0xab);
            6
        }
        L4Spec::Udp { sport, dport, len } => {
            push16(&mut t, *sport);
            push16(&mut t, *dport);
            push16(&mut t, (8 + len) as u16);
            push16(&mut t, 0);
            t.resize(t.len() + len, 0xcd);
            17
        }
        L4Spec::Echo { request, ident } => {
            let ty = match (v6, request) {
                (false, true) => 8,
                (false, false) => 0,
                (true, true) => 128,
                (true, false) => 129,
            };
            t.extend_from_slice(&[ty, 0, 0, 0]);
            push16(&mut t, *ident);
            push16(&mut t, 1);
            t.extend_from_slice(b"abcdefgh");
            if v6 {
                58
            } else {
                1
            }
        }
        L4Spec::Error { ty, code, quoted } => {
            t.extend_from_slice(&[*ty, *code, 0, 0, 0, 0, 0, 0]);
            t.extend_from_slice(quoted);
            if v6 {
                58
            } else {
                1
            }
        }
        L4Spec::IcmpOther { ty } => {
            t.extend_from_slice(&[*ty, 0, 0, 0, 0, 0, 0, 0]);
            if v6 {
                t.extend_from_slice(&[0; 16]);
                58
            } else {
                1
            }
        }
        L4Spec::Raw { proto } => {
            t.extend_from_slice(&[0; 12]);
            *proto
        }
    };
    let mut ip = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip.extend_from_slice(&[0x45, 0]);
            push16(&mut ip, (20 + t.len()) as u16);
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            push16(&mut ip, t.len() as u16);
            ip.extend_from_slice(&[proto, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    ip.extend_from_slice(&t);
    ip
}

/// An Ethernet frame, optionally 802.1Q-tagged.
pub fn frame(vlan: Option<u16>, src: IpAddr, dst: IpAddr, l4: &L4Spec) -> Vec<u8> {
    let ip = ip_packet(src, dst, l4);
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        push16(&mut f, v);
    }
    f.extend_from_slice(if src.is_ipv6() {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    f.extend_from_slice(&ip);
    if f.len() < 60 {
        f.resize(60, 0);
    }
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
