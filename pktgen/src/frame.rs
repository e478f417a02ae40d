//! Building Ethernet [+ 802.1Q] + IPv4/IPv6 + TCP/UDP frames in place.
//!
//! Every header is written through the `net` crate's views and setters and
//! every checksum is filled by its helpers, so the generator and the
//! dataplane share one definition of each wire format.
//!
//! ```
//! use bulkhead_pktgen::frame::{FrameSpec, IpSpec, L4Spec};
//!
//! let spec = FrameSpec::new(
//!     IpSpec::v4("10.0.0.1".parse().unwrap(), "172.16.0.1".parse().unwrap()),
//!     L4Spec::udp(40000, 53),
//! );
//! let mut frame = vec![0u8; 60]; // a 64-byte frame on the wire, less the FCS
//! frame[spec.header_len()..].fill(0xab); // the payload
//! spec.write(&mut frame).unwrap();
//! let p = net::parse(&frame).unwrap();
//! assert_eq!(p.ports(), Some((40000, 53)));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use net::ethernet::{EtherType, EthernetFrame, MacAddr};
use net::ip::IpProtocol;
use net::ipv4::Ipv4Packet;
use net::ipv6::Ipv6Packet;
use net::tcp::{TcpFlags, TcpPacket};
use net::udp::UdpPacket;
use net::vlan::VlanTag;

/// Length of the Ethernet frame check sequence, which is on the wire (and
/// in RFC 2544 frame sizes) but not in pcap records.
pub const FCS_LEN: usize = 4;
/// Smallest Ethernet frame on the wire, FCS included.
pub const MIN_FRAME_SIZE: usize = 64;
/// Largest (jumbo) frame on the wire supported, FCS included: a 9000-byte
/// MTU plus Ethernet header, one VLAN tag and FCS.
pub const MAX_FRAME_SIZE: usize = 9018;

/// Locally administered source MAC used by default.
pub const DEFAULT_SRC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
/// Locally administered destination MAC used by default.
pub const DEFAULT_DST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

/// Transport protocol of a generated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Proto {
    /// TCP (20-byte header, no options).
    Tcp,
    /// UDP.
    Udp,
}

impl L4Proto {
    /// Header length in bytes.
    pub const fn header_len(self) -> usize {
        match self {
            L4Proto::Tcp => TcpPacket::<&[u8]>::MIN_HEADER_LEN,
            L4Proto::Udp => UdpPacket::<&[u8]>::HEADER_LEN,
        }
    }

    /// The IP protocol number.
    pub const fn ip_protocol(self) -> IpProtocol {
        match self {
            L4Proto::Tcp => IpProtocol::TCP,
            L4Proto::Udp => IpProtocol::UDP,
        }
    }

    /// `"TCP"` or `"UDP"`.
    pub const fn name(self) -> &'static str {
        match self {
            L4Proto::Tcp => "TCP",
            L4Proto::Udp => "UDP",
        }
    }
}

/// The header stack of a frame, independent of field values: enough to
/// know the header length before any packet exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layers {
    /// One 802.1Q tag.
    pub vlan: bool,
    /// IPv6 rather than IPv4.
    pub ipv6: bool,
    /// Transport protocol.
    pub l4: L4Proto,
}

impl Layers {
    /// Total header length (Ethernet through L4) in bytes.
    pub const fn header_len(&self) -> usize {
        let eth = EthernetFrame::<&[u8]>::HEADER_LEN;
        let vlan = if self.vlan {
            VlanTag::<&[u8]>::HEADER_LEN
        } else {
            0
        };
        eth + vlan + self.l3_l4_header_len()
    }

    /// Length of the IP and transport headers.
    pub const fn l3_l4_header_len(&self) -> usize {
        let ip = if self.ipv6 {
            Ipv6Packet::<&[u8]>::HEADER_LEN
        } else {
            Ipv4Packet::<&[u8]>::MIN_HEADER_LEN
        };
        ip + self.l4.header_len()
    }

    /// Smallest RFC 2544 frame size (FCS included) holding these headers:
    /// the header length plus FCS, but never below the Ethernet minimum.
    pub const fn min_frame_size(&self) -> usize {
        let n = self.header_len() + FCS_LEN;
        if n < MIN_FRAME_SIZE {
            MIN_FRAME_SIZE
        } else {
            n
        }
    }

    /// A name like `Ethernet+802.1Q+IPv6+TCP`.
    pub fn describe(&self) -> String {
        format!(
            "Ethernet{}+{}+{}",
            if self.vlan { "+802.1Q" } else { "" },
            if self.ipv6 { "IPv6" } else { "IPv4" },
            self.l4.name()
        )
    }
}

/// Network-layer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSpec {
    /// IPv4 (20-byte header, no options).
    V4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
        /// Identification.
        ident: u16,
        /// Time to live.
        ttl: u8,
        /// Don't-fragment flag.
        dont_frag: bool,
    },
    /// IPv6 (no extension headers).
    V6 {
        /// Source address.
        src: Ipv6Addr,
        /// Destination address.
        dst: Ipv6Addr,
        /// Flow label (low 20 bits).
        flow_label: u32,
        /// Hop limit.
        hop_limit: u8,
    },
}

impl IpSpec {
    /// IPv4 with ident 0, TTL 64 and DF set.
    pub const fn v4(src: Ipv4Addr, dst: Ipv4Addr) -> IpSpec {
        IpSpec::V4 {
            src,
            dst,
            ident: 0,
            ttl: 64,
            dont_frag: true,
        }
    }

    /// IPv6 with flow label 0 and hop limit 64.
    pub const fn v6(src: Ipv6Addr, dst: Ipv6Addr) -> IpSpec {
        IpSpec::V6 {
            src,
            dst,
            flow_label: 0,
            hop_limit: 64,
        }
    }

    /// IPv4 or IPv6 with the defaults of [`v4`](Self::v4) /
    /// [`v6`](Self::v6); `None` if the families differ.
    pub fn from_addrs(src: IpAddr, dst: IpAddr) -> Option<IpSpec> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(IpSpec::v4(s, d)),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(IpSpec::v6(s, d)),
            _ => None,
        }
    }

    /// Whether this is IPv6.
    pub const fn is_ipv6(&self) -> bool {
        matches!(self, IpSpec::V6 { .. })
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        match *self {
            IpSpec::V4 { src, .. } => src.into(),
            IpSpec::V6 { src, .. } => src.into(),
        }
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        match *self {
            IpSpec::V4 { dst, .. } => dst.into(),
            IpSpec::V6 { dst, .. } => dst.into(),
        }
    }
}

/// Transport-layer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Spec {
    /// TCP (no options).
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Control bits.
        flags: TcpFlags,
        /// Receive window.
        window: u16,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
}

impl L4Spec {
    /// Window used by [`tcp_data`](Self::tcp_data).
    pub const DEFAULT_WINDOW: u16 = 64240;

    /// An established-connection data segment: ACK|PSH.
    pub const fn tcp_data(sport: u16, dport: u16, seq: u32, ack: u32) -> L4Spec {
        L4Spec::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags: TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0),
            window: Self::DEFAULT_WINDOW,
        }
    }

    /// A UDP datagram.
    pub const fn udp(sport: u16, dport: u16) -> L4Spec {
        L4Spec::Udp { sport, dport }
    }

    /// Which protocol.
    pub const fn proto(&self) -> L4Proto {
        match self {
            L4Spec::Tcp { .. } => L4Proto::Tcp,
            L4Spec::Udp { .. } => L4Proto::Udp,
        }
    }
}

/// Everything about one frame's headers; the payload is whatever follows
/// them in the buffer given to [`write`](Self::write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    /// Source MAC.
    pub src_mac: MacAddr,
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// VLAN id of a single 802.1Q tag (TPID 0x8100, PCP 0, DEI 0), if any.
    pub vlan: Option<u16>,
    /// Network layer.
    pub ip: IpSpec,
    /// Transport layer.
    pub l4: L4Spec,
}

/// Why a frame could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer cannot hold the headers.
    #[error("{len}-byte buffer is too short for {header_len} bytes of headers")]
    TooShort {
        /// Buffer length.
        len: usize,
        /// Header length needed.
        header_len: usize,
    },
    /// The IP packet would not fit its 16-bit length field.
    #[error("{len}-byte frame is too long for the IP length field")]
    TooLong {
        /// Buffer length.
        len: usize,
    },
    /// A VLAN id above 4095.
    #[error("VLAN id {0} does not fit in 12 bits")]
    BadVlanId(u16),
}

impl FrameSpec {
    /// A frame with the default MACs and no VLAN tag.
    pub const fn new(ip: IpSpec, l4: L4Spec) -> FrameSpec {
        FrameSpec {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            vlan: None,
            ip,
            l4,
        }
    }

    /// The header stack.
    pub const fn layers(&self) -> Layers {
        Layers {
            vlan: self.vlan.is_some(),
            ipv6: self.ip.is_ipv6(),
            l4: self.l4.proto(),
        }
    }

    /// Total header length; the payload starts here.
    pub const fn header_len(&self) -> usize {
        self.layers().header_len()
    }

    /// Writes the headers into `frame` (a frame without FCS), treating every
    /// byte after [`header_len`](Self::header_len) as payload: the caller
    /// puts the payload in place first, then this sets the IP and UDP
    /// lengths from `frame.len()` and fills the IPv4 header and L4
    /// checksums.
    pub fn write(&self, frame: &mut [u8]) -> Result<(), FrameError> {
        let header_len = self.header_len();
        if frame.len() < header_len {
            return Err(FrameError::TooShort {
                len: frame.len(),
                header_len,
            });
        }
        if let Some(vid) = self.vlan.filter(|&v| v > 0x0fff) {
            return Err(FrameError::BadVlanId(vid));
        }
        let ip_type = if self.ip.is_ipv6() {
            EtherType::IPV6
        } else {
            EtherType::IPV4
        };
        let l2_len = header_len - self.layers().l3_l4_header_len();
        // IPv4 total length counts its header, IPv6 payload length does not.
        let ip_len_field = match self.ip {
            IpSpec::V4 { .. } => frame.len() - l2_len,
            IpSpec::V6 { .. } => frame.len() - l2_len - Ipv6Packet::<&[u8]>::HEADER_LEN,
        };
        let ip_len_field =
            u16::try_from(ip_len_field).map_err(|_| FrameError::TooLong { len: frame.len() })?;

        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        eth.set_dst_addr(self.dst_mac);
        eth.set_src_addr(self.src_mac);
        match self.vlan {
            None => eth.set_ethertype(ip_type),
            Some(vid) => {
                eth.set_ethertype(EtherType::VLAN);
                let mut tag = VlanTag::new_unchecked(eth.payload_mut());
                tag.set_tci(0);
                tag.set_vid(vid);
                tag.set_ethertype(ip_type);
            }
        }
        let l3 = &mut frame[l2_len..];
        let proto = self.l4.proto().ip_protocol();
        match self.ip {
            IpSpec::V4 {
                src,
                dst,
                ident,
                ttl,
                dont_frag,
            } => {
                let mut ip = Ipv4Packet::new_unchecked(l3);
                ip.set_version(4);
                ip.set_header_len(Ipv4Packet::<&[u8]>::MIN_HEADER_LEN);
                ip.set_dscp(0);
                ip.set_ecn(0);
                ip.set_total_len(ip_len_field);
                ip.set_ident(ident);
                ip.clear_flags();
                ip.set_dont_frag(dont_frag);
                ip.set_ttl(ttl);
                ip.set_protocol(proto);
                ip.set_src_addr(src);
                ip.set_dst_addr(dst);
                ip.fill_checksum();
                write_l4(&self.l4, ip.payload_mut(), |seg| match seg {
                    Segment::Tcp(mut t) => t.fill_checksum_v4(src, dst),
                    Segment::Udp(mut u) => u.fill_checksum_v4(src, dst),
                });
            }
            IpSpec::V6 {
                src,
                dst,
                flow_label,
                hop_limit,
            } => {
                let mut ip = Ipv6Packet::new_unchecked(l3);
                ip.set_version(6);
                ip.set_traffic_class(0);
                ip.set_flow_label(flow_label);
                ip.set_payload_len(ip_len_field);
                ip.set_next_header(proto);
                ip.set_hop_limit(hop_limit);
                ip.set_src_addr(src);
                ip.set_dst_addr(dst);
                write_l4(&self.l4, ip.payload_mut(), |seg| match seg {
                    Segment::Tcp(mut t) => t.fill_checksum_v6(src, dst),
                    Segment::Udp(mut u) => u.fill_checksum_v6(src, dst),
                });
            }
        }
        Ok(())
    }

    /// Convenience for tests and one-off frames: a new buffer holding the
    /// headers followed by `payload`.
    pub fn build(&self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut frame = vec![0u8; self.header_len() + payload.len()];
        frame[self.header_len()..].copy_from_slice(payload);
        self.write(&mut frame)?;
        Ok(frame)
    }
}

/// A transport header view over exactly the segment, ready for its
/// checksum.
enum Segment<'a> {
    Tcp(TcpPacket<&'a mut [u8]>),
    Udp(UdpPacket<&'a mut [u8]>),
}

/// Writes the transport header into `seg` (the whole IP payload) and hands
/// the view to `checksum`.
fn write_l4(l4: &L4Spec, seg: &mut [u8], checksum: impl FnOnce(Segment<'_>)) {
    match *l4 {
        L4Spec::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window,
        } => {
            let mut tcp = TcpPacket::new_unchecked(seg);
            tcp.set_src_port(sport);
            tcp.set_dst_port(dport);
            tcp.set_seq_number(seq);
            tcp.set_ack_number(ack);
            tcp.set_header_len(TcpPacket::<&[u8]>::MIN_HEADER_LEN);
            tcp.set_flags(flags);
            tcp.set_window_len(window);
            tcp.set_urgent_at(0);
            checksum(Segment::Tcp(tcp));
        }
        L4Spec::Udp { sport, dport } => {
            // The IP length already fits 16 bits and includes the IP header.
            let len = seg.len() as u16;
            let mut udp = UdpPacket::new_unchecked(seg);
            udp.set_src_port(sport);
            udp.set_dst_port(dport);
            udp.set_len(len);
            checksum(Segment::Udp(udp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::{parse, L3, L4};

    const V4_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
    const V4_DST: Ipv4Addr = Ipv4Addr::new(172, 16, 9, 8);
    const V6_SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 0x1234);
    const V6_DST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb, 0, 0x55, 0, 0, 0xabcd, 1);

    fn spec(ipv6: bool, l4: L4Proto, vlan: Option<u16>) -> FrameSpec {
        let ip = if ipv6 {
            IpSpec::V6 {
                src: V6_SRC,
                dst: V6_DST,
                flow_label: 0xabcde,
                hop_limit: 64,
            }
        } else {
            IpSpec::V4 {
                src: V4_SRC,
                dst: V4_DST,
                ident: 0xbeef,
                ttl: 64,
                dont_frag: true,
            }
        };
        let l4 = match l4 {
            L4Proto::Tcp => L4Spec::tcp_data(40001, 502, 0xfffff000, 0x1234_5678),
            L4Proto::Udp => L4Spec::udp(53000, 53),
        };
        FrameSpec {
            vlan,
            ..FrameSpec::new(ip, l4)
        }
    }

    /// Builds a frame of `len` bytes with a patterned payload and checks
    /// that it parses back to exactly the requested fields, with valid
    /// checksums and exact lengths.
    fn check_round_trip(spec: &FrameSpec, len: usize) {
        let mut frame = vec![0u8; len];
        let hl = spec.header_len();
        for (i, b) in frame[hl..].iter_mut().enumerate() {
            *b = (i * 7 + 1) as u8;
        }
        let payload = frame[hl..].to_vec();
        spec.write(&mut frame).unwrap();

        let p = parse(&frame).unwrap_or_else(|e| panic!("{spec:?} at {len}: {e}"));
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.src_addr(), DEFAULT_SRC_MAC);
        assert_eq!(eth.dst_addr(), DEFAULT_DST_MAC);
        assert!(eth.src_addr().is_local() && eth.src_addr().is_unicast());
        let l3_offset = match spec.vlan {
            Some(vid) => {
                assert_eq!(eth.ethertype(), EtherType::VLAN);
                assert_eq!(p.vlans, [Some(vid), None]);
                let tag = VlanTag::new_checked(eth.payload()).unwrap();
                assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (0, false, vid));
                18
            }
            None => {
                assert_eq!(p.vlans, [None, None]);
                14
            }
        };
        assert_eq!(p.l3_offset, l3_offset);
        let l3 = &frame[l3_offset..];
        let proto = spec.l4.proto().ip_protocol();

        let seg: &[u8] = match spec.ip {
            IpSpec::V4 {
                src,
                dst,
                ident,
                ttl,
                dont_frag,
            } => {
                assert_eq!(p.ethertype, EtherType::IPV4);
                assert_eq!(
                    p.l3,
                    L3::Ipv4 {
                        src,
                        dst,
                        proto,
                        frag: None,
                        ttl
                    }
                );
                let ip = Ipv4Packet::new_checked(l3).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(usize::from(ip.total_len()), l3.len());
                assert_eq!(ip.ident(), ident);
                assert_eq!(ip.dont_frag(), dont_frag);
                assert!(!ip.is_fragment());
                assert_eq!((ip.dscp(), ip.ecn(), ip.header_len()), (0, 0, 20));
                let seg = ip.into_payload();
                match spec.l4 {
                    L4Spec::Tcp { .. } => assert!(TcpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v4(src, dst)),
                    L4Spec::Udp { .. } => {
                        let udp = UdpPacket::new_checked(seg).unwrap();
                        assert_ne!(udp.checksum(), 0);
                        assert!(udp.verify_checksum_v4(src, dst));
                    }
                }
                seg
            }
            IpSpec::V6 {
                src,
                dst,
                flow_label,
                hop_limit,
            } => {
                assert_eq!(p.ethertype, EtherType::IPV6);
                assert_eq!(
                    p.l3,
                    L3::Ipv6 {
                        src,
                        dst,
                        next: proto,
                        frag: None
                    }
                );
                let ip = Ipv6Packet::new_checked(l3).unwrap();
                assert_eq!(usize::from(ip.payload_len()) + 40, l3.len());
                assert_eq!(ip.flow_label(), flow_label);
                assert_eq!(ip.hop_limit(), hop_limit);
                assert_eq!(ip.traffic_class(), 0);
                let seg = ip.into_payload();
                match spec.l4 {
                    L4Spec::Tcp { .. } => assert!(TcpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v6(src, dst)),
                    L4Spec::Udp { .. } => assert!(UdpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v6(src, dst)),
                }
                seg
            }
        };
        assert_eq!(p.l4_offset, Some(hl - spec.l4.proto().header_len()));

        match spec.l4 {
            L4Spec::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
            } => {
                assert_eq!(
                    p.l4,
                    L4::Tcp {
                        sport,
                        dport,
                        flags,
                        seq,
                        ack,
                        window,
                        payload_len: payload.len() as u16,
                    }
                );
                assert_eq!(flags, TcpFlags::ACK | TcpFlags::PSH);
                let tcp = TcpPacket::new_checked(seg).unwrap();
                assert_eq!((tcp.header_len(), tcp.urgent_at()), (20, 0));
                assert_eq!(tcp.payload(), &payload[..]);
            }
            L4Spec::Udp { sport, dport } => {
                assert_eq!(p.l4, L4::Udp { sport, dport });
                let udp = UdpPacket::new_checked(seg).unwrap();
                assert_eq!(usize::from(udp.len()), seg.len());
                assert_eq!(udp.payload(), &payload[..]);
            }
        }
    }

    #[test]
    fn all_layer_combinations_round_trip_at_min_and_jumbo_sizes() {
        let mut n = 0;
        for ipv6 in [false, true] {
            for l4 in [L4Proto::Tcp, L4Proto::Udp] {
                for vlan in [None, Some(1), Some(100), Some(4094)] {
                    let s = spec(ipv6, l4, vlan);
                    let min = s.layers().min_frame_size() - FCS_LEN;
                    for len in [min, min + 1, 1500 + 14, MAX_FRAME_SIZE - FCS_LEN] {
                        check_round_trip(&s, len);
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 64);
    }

    #[test]
    fn header_lengths_and_min_sizes() {
        let l = |vlan, ipv6, l4| Layers { vlan, ipv6, l4 };
        assert_eq!(l(false, false, L4Proto::Tcp).header_len(), 54);
        assert_eq!(l(false, false, L4Proto::Udp).header_len(), 42);
        assert_eq!(l(true, false, L4Proto::Tcp).header_len(), 58);
        assert_eq!(l(false, true, L4Proto::Tcp).header_len(), 74);
        assert_eq!(l(true, true, L4Proto::Tcp).header_len(), 78);
        assert_eq!(l(true, true, L4Proto::Udp).header_len(), 66);
        assert_eq!(l(false, false, L4Proto::Tcp).min_frame_size(), 64);
        assert_eq!(l(true, true, L4Proto::Tcp).min_frame_size(), 82);
        assert_eq!(l(false, true, L4Proto::Udp).min_frame_size(), 66);
        assert_eq!(
            l(true, true, L4Proto::Tcp).describe(),
            "Ethernet+802.1Q+IPv6+TCP"
        );
        assert_eq!(
            l(false, false, L4Proto::Udp).describe(),
            "Ethernet+IPv4+UDP"
        );
    }

    #[test]
    fn zero_payload_is_fine() {
        let s = spec(true, L4Proto::Tcp, Some(7));
        check_round_trip(&s, s.header_len());
    }

    #[test]
    fn errors() {
        let s = spec(false, L4Proto::Tcp, None);
        let mut short = [0u8; 53];
        assert_eq!(
            s.write(&mut short),
            Err(FrameError::TooShort {
                len: 53,
                header_len: 54
            })
        );
        let mut huge = vec![0u8; 14 + 65536];
        assert_eq!(
            s.write(&mut huge),
            Err(FrameError::TooLong { len: 14 + 65536 })
        );
        let mut ok = vec![0u8; 14 + 65535];
        s.write(&mut ok).unwrap();
        parse(&ok).unwrap();

        let mut v6 = vec![0u8; 14 + 40 + 65536];
        assert!(spec(true, L4Proto::Udp, None).write(&mut v6).is_err());
        let bad_vlan = FrameSpec {
            vlan: Some(4096),
            ..s
        };
        assert_eq!(
            bad_vlan.write(&mut [0u8; 64]),
            Err(FrameError::BadVlanId(4096))
        );
    }

    #[test]
    fn build_and_udp_lengths_with_ipv4() {
        let s = FrameSpec::new(IpSpec::v4(V4_SRC, V4_DST), L4Spec::udp(1, 2));
        let f = s.build(b"hello").unwrap();
        assert_eq!(f.len(), 42 + 5);
        let udp = UdpPacket::new_checked(&f[34..]).unwrap();
        assert_eq!(udp.len(), 13);
        assert_eq!(udp.payload(), b"hello");
        assert_eq!(IpSpec::from_addrs(V4_SRC.into(), V6_DST.into()), None);
        assert_eq!(
            IpSpec::from_addrs(V6_SRC.into(), V6_DST.into()),
            Some(IpSpec::v6(V6_SRC, V6_DST))
        );
    }
}
