//! Feeds arbitrary frames to `net::parse` and to every view, checking that
//! nothing panics and that the parser and the views agree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use net::arp::ArpPacket;
use net::ethernet::EthernetFrame;
use net::icmpv4::Icmpv4Packet;
use net::icmpv6::Icmpv6Packet;
use net::ipv4::Ipv4Packet;
use net::ipv6::{walk_extension_headers, ExtHeader, FragmentHeader, Ipv6Packet};
use net::tcp::{TcpOptions, TcpPacket};
use net::udp::UdpPacket;
use net::vlan::VlanTag;
use net::{IpProtocol, L3, L4};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

const A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Every checked view with all its getters, then the in-place writers that
/// a checked view permits (on a copy).
fn exercise_views(b: &[u8]) {
    if let Ok(e) = EthernetFrame::new_checked(b) {
        black_box((e.dst_addr(), e.src_addr(), e.ethertype(), e.payload().len()));
        black_box(e.dst_addr().to_string());
    }
    if let Ok(v) = VlanTag::new_checked(b) {
        black_box((v.tci(), v.pcp(), v.dei(), v.vid(), v.ethertype(), v.payload().len()));
    }
    if let Ok(a) = ArpPacket::new_checked(b) {
        black_box((a.htype(), a.ptype(), a.hlen(), a.plen(), a.oper()));
        black_box((a.sha(), a.spa(), a.tha(), a.tpa()));
    }
    for ip in [Ipv4Packet::new_checked(b), Ipv4Packet::new_checked_quoted(b)]
        .into_iter()
        .flatten()
    {
        black_box((ip.version(), ip.ihl(), ip.header_len(), ip.dscp(), ip.ecn()));
        black_box((ip.total_len(), ip.ident(), ip.dont_frag(), ip.more_frags()));
        black_box((ip.frag_offset(), ip.is_fragment(), ip.ttl(), ip.protocol()));
        black_box((ip.checksum(), ip.src_addr(), ip.dst_addr(), ip.verify_checksum()));
        black_box((ip.options().len(), ip.header().len(), ip.payload().len()));
        let mut copy = b.to_vec();
        let mut w = Ipv4Packet::new_unchecked(&mut copy[..]);
        w.payload_mut().fill(0);
        w.options_mut().fill(1);
        w.fill_checksum();
        assert!(Ipv4Packet::new_checked_quoted(&copy[..]).is_ok_and(|p| p.verify_checksum()));
    }
    for ip in [Ipv6Packet::new_checked(b), Ipv6Packet::new_checked_quoted(b)]
        .into_iter()
        .flatten()
    {
        black_box((ip.version(), ip.traffic_class(), ip.flow_label(), ip.payload_len()));
        black_box((ip.next_header(), ip.hop_limit(), ip.src_addr(), ip.dst_addr()));
        black_box(ip.payload().len());
        if let Ok(w) = ip.walk_extension_headers() {
            assert!(w.upper_offset >= 40 && w.upper_offset <= 40 + ip.payload().len());
        }
    }
    if let Ok(h) = ExtHeader::new_checked(b) {
        black_box((h.next_header(), h.header_len(), h.data().len()));
    }
    if let Ok(f) = FragmentHeader::new_checked(b) {
        black_box(f.fragment());
    }
    if let Ok(t) = TcpPacket::new_checked(b) {
        black_box((t.src_port(), t.dst_port(), t.seq_number(), t.ack_number()));
        black_box((t.data_offset(), t.header_len(), t.flags(), t.window_len()));
        black_box((t.checksum(), t.urgent_at(), t.payload().len()));
        black_box((t.verify_checksum_v4(A4, B4), t.verify_checksum_v6(A6, B6)));
        black_box(t.flags().to_string());
        exercise_options(t.options_bytes());
        let mut copy = b.to_vec();
        let mut w = TcpPacket::new_unchecked(&mut copy[..]);
        w.fill_checksum_v4(A4, B4);
        assert!(w.verify_checksum_v4(A4, B4));
        w.fill_checksum_v6(A6, B6);
        assert!(w.verify_checksum_v6(A6, B6));
    }
    for u in [UdpPacket::new_checked(b), UdpPacket::new_checked_header(b)]
        .into_iter()
        .flatten()
    {
        black_box((u.src_port(), u.dst_port(), u.len(), u.checksum(), u.payload().len()));
        black_box((u.verify_checksum_v4(A4, B4), u.verify_checksum_v6(A6, B6)));
        let mut copy = b.to_vec();
        let mut w = UdpPacket::new_unchecked(&mut copy[..]);
        w.fill_checksum_v6(A6, B6);
        w.payload_mut().fill(0xa5);
    }
    if let Ok(m) = Icmpv4Packet::new_checked(b) {
        black_box((m.msg_type(), m.msg_code(), m.checksum(), m.rest_of_header()));
        black_box((m.echo_ident(), m.echo_seq(), m.next_hop_mtu(), m.verify_checksum()));
        black_box(m.payload().len());
        if let Some(q) = m.quoted() {
            let inner = Ipv4Packet::new_checked_quoted(q);
            assert!(inner.is_ok(), "quoted() returned an unusable header");
        }
    }
    if let Ok(m) = Icmpv6Packet::new_checked(b) {
        black_box((m.msg_type(), m.msg_code(), m.checksum(), m.rest_of_header()));
        black_box((m.is_error(), m.is_neighbor_discovery(), m.echo_ident(), m.echo_seq()));
        black_box((m.mtu(), m.nd_target(), m.quoted().map(<[u8]>::len)));
        black_box(m.verify_checksum(A6, B6));
    }
}

fn exercise_options(opts: &[u8]) {
    let mut errors = 0;
    let mut n = 0;
    for o in TcpOptions::new(opts) {
        n += 1;
        // Each item consumes at least one byte, so this bounds the loop.
        assert!(n <= opts.len());
        match o {
            Ok(opt) => {
                assert_eq!(errors, 0, "item after an error");
                let mut buf = [0u8; 64];
                if let net::tcp::TcpOption::Sack(s) = opt {
                    black_box(s.iter().count());
                }
                black_box(opt.emit(&mut buf).ok());
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 1);
}

fuzz_target!(|data: &[u8]| {
    // The raw input as every kind of header, and behind the usual
    // Ethernet/VLAN offsets.
    for off in [0, 14, 18, 22, 34, 38, 42, 54, 62] {
        if let Some(b) = data.get(off..) {
            exercise_views(b);
            exercise_options(b);
            for next in [0u8, 43, 44, 51, 60] {
                black_box(walk_extension_headers(IpProtocol(next), b, 40).ok());
            }
        }
    }

    let Ok(p) = net::parse(data) else {
        if let Err(e) = net::parse(data) {
            black_box((e.as_str(), e.to_string()));
        }
        return;
    };
    black_box((p.vlan_count(), p.src_ip(), p.dst_ip(), p.ports(), format!("{p:?}")));

    // What the parser accepted, the views must accept too.
    let l3 = &data[p.l3_offset..];
    let l4_bytes: Option<&[u8]> = match p.l3 {
        L3::Ipv4 { src, proto, .. } => {
            let ip = Ipv4Packet::new_checked(l3).expect("parse accepted bad IPv4");
            assert_eq!((ip.src_addr(), ip.protocol()), (src, proto));
            p.l4_offset.map(|_| ip.into_payload())
        }
        L3::Ipv6 { src, next, frag, .. } => {
            let ip = Ipv6Packet::new_checked(l3).expect("parse accepted bad IPv6");
            assert_eq!(ip.src_addr(), src);
            let w = ip.walk_extension_headers().expect("parse accepted a bad chain");
            assert_eq!((w.upper_protocol, w.fragment), (next, frag));
            let end = 40 + usize::from(ip.payload_len());
            p.l4_offset.map(|_| &l3[w.upper_offset..end])
        }
        L3::Arp => {
            ArpPacket::new_checked(l3).expect("parse accepted bad ARP");
            None
        }
        L3::Other(_) => None,
    };
    if let Some(b) = l4_bytes {
        match p.l4 {
            L4::Tcp { sport, payload_len, .. } => {
                let t = TcpPacket::new_checked(b).expect("parse accepted bad TCP");
                assert_eq!(t.src_port(), sport);
                assert_eq!(t.payload().len(), usize::from(payload_len));
            }
            L4::Udp { sport, .. } => {
                let u = UdpPacket::new_checked_header(b).expect("parse accepted bad UDP");
                assert_eq!(u.src_port(), sport);
            }
            L4::Icmp { ty, .. } => {
                let m = Icmpv4Packet::new_checked(b).expect("parse accepted bad ICMP");
                assert_eq!(m.msg_type(), ty);
            }
            L4::Icmpv6 { ty, .. } => {
                let m = Icmpv6Packet::new_checked(b).expect("parse accepted bad ICMPv6");
                assert_eq!(m.msg_type(), ty);
            }
            L4::None => {}
        }
    }
});
