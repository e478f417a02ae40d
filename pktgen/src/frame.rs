//! The one frame builder of every workload: Ethernet [+ 802.1Q] + IPv4/IPv6 + TCP (any flags), UDP,
//! ICMP/ICMPv6 or a raw protocol, in place into a caller's buffer ([`FrameSpec::write`], the benchmark
//! flows) or into a new one ([`FrameSpec::build`], [`FrameSpec::build_padded`]); IPv4 fragments and IPv6
//! fragment headers for the attack workload ([`FrameSpec::segment`], [`FrameSpec::fragment`]).
//!
//! Every header is written by the `net` crate's emit side (`Repr::emit`), checksums included, so the
//! generator and the dataplane share one definition of each wire format.
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
use net::icmpv4::Icmpv4Repr;
use net::icmpv6::Icmpv6Repr;
use net::ipv4::{Ipv4Packet, Ipv4Repr};
use net::ipv6::{Ipv6FragmentRepr, Ipv6Packet, Ipv6Repr, FRAGMENT_HEADER_LEN};
use net::link::EthernetRepr;
use net::tcp::{TcpFlags, TcpPacket, TcpRepr};
use net::udp::{UdpPacket, UdpRepr};
use net::vlan::{VlanRepr, VlanTag};
use net::{EmitError, Fragment, IpAddrs, IpProtocol};

/// Length of the Ethernet frame check sequence, which is on the wire (and
/// in RFC 2544 frame sizes) but not in pcap records.
pub const FCS_LEN: usize = 4;
/// Smallest Ethernet frame on the wire, FCS included.
pub const MIN_FRAME_SIZE: usize = 64;
/// Largest (jumbo) frame on the wire supported, FCS included: a 9000-byte
/// MTU plus Ethernet header, one VLAN tag and FCS.
pub const MAX_FRAME_SIZE: usize = 9018;

/// Shortest frame [`FrameSpec::build_padded`] and [`FrameSpec::fragment`] write, FCS excluded: shorter
/// frames get zero padding after the IP packet, as an Ethernet sender adds.
pub const MIN_FRAME_LEN: usize = MIN_FRAME_SIZE - FCS_LEN;

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
        self.addrs().src()
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        self.addrs().dst()
    }

    /// Source and destination, as transport checksums cover them.
    pub const fn addrs(&self) -> IpAddrs {
        match *self {
            IpSpec::V4 { src, dst, .. } => IpAddrs::V4 { src, dst },
            IpSpec::V6 { src, dst, .. } => IpAddrs::V6 { src, dst },
        }
    }

    /// The mirror image: source and destination swapped.
    pub const fn reversed(self) -> IpSpec {
        match self {
            IpSpec::V4 {
                src,
                dst,
                ident,
                ttl,
                dont_frag,
            } => IpSpec::V4 {
                src: dst,
                dst: src,
                ident,
                ttl,
                dont_frag,
            },
            IpSpec::V6 {
                src,
                dst,
                flow_label,
                hop_limit,
            } => IpSpec::V6 {
                src: dst,
                dst: src,
                flow_label,
                hop_limit,
            },
        }
    }

    /// With IPv4 identification `ident` (IPv6 has none).
    pub const fn with_ident(self, ident: u16) -> IpSpec {
        match self {
            IpSpec::V4 {
                src,
                dst,
                ttl,
                dont_frag,
                ..
            } => IpSpec::V4 {
                src,
                dst,
                ident,
                ttl,
                dont_frag,
            },
            v6 => v6,
        }
    }

    /// Length of the header.
    pub const fn header_len(&self) -> usize {
        match self {
            IpSpec::V4 { .. } => Ipv4Repr::HEADER_LEN,
            IpSpec::V6 { .. } => Ipv6Repr::HEADER_LEN,
        }
    }

    /// The header for `payload_len` bytes of `protocol`, possibly a fragment (flags and offset for IPv4,
    /// whose identification is then the fragment's; IPv6 takes a fragment header, written separately).
    fn emit(
        &self,
        buf: &mut [u8],
        protocol: IpProtocol,
        payload_len: usize,
        frag: Option<Fragment>,
    ) -> Result<(), EmitError> {
        match *self {
            IpSpec::V4 {
                src,
                dst,
                ident,
                ttl,
                dont_frag,
            } => {
                let repr = Ipv4Repr {
                    ttl,
                    ident,
                    dont_frag,
                    ..Ipv4Repr::new(src, dst, protocol, payload_len)
                };
                let repr = match frag {
                    None => repr,
                    Some(f) => Ipv4Repr {
                        // Fragment identifications are 16 bits wide in IPv4.
                        ident: f.ident as u16,
                        dont_frag: false,
                        more_frags: f.more,
                        frag_offset: f.offset,
                        ..repr
                    },
                };
                repr.emit(buf)
            }
            IpSpec::V6 {
                src,
                dst,
                flow_label,
                hop_limit,
            } => Ipv6Repr {
                flow_label,
                hop_limit,
                ..Ipv6Repr::new(src, dst, protocol, payload_len)
            }
            .emit(buf),
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
    /// ICMP over IPv4, or ICMPv6 over IPv6 (chosen by the address family).
    Icmp {
        /// Message type.
        ty: u8,
        /// Message code.
        code: u8,
        /// The 4 bytes after the checksum (echo: ident << 16 | seq).
        rest: u32,
    },
    /// Any other protocol: the payload follows the IP header directly.
    Raw {
        /// IP protocol number.
        proto: u8,
    },
}

impl L4Spec {
    /// Window used by [`tcp_data`](Self::tcp_data) and [`tcp`](Self::tcp).
    pub const DEFAULT_WINDOW: u16 = 64240;

    /// A TCP header with any flags and the default window.
    pub const fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: TcpFlags) -> L4Spec {
        L4Spec::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window: Self::DEFAULT_WINDOW,
        }
    }

    /// An established-connection data segment: ACK|PSH.
    pub const fn tcp_data(sport: u16, dport: u16, seq: u32, ack: u32) -> L4Spec {
        Self::tcp(
            sport,
            dport,
            seq,
            ack,
            TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0),
        )
    }

    /// A UDP datagram.
    pub const fn udp(sport: u16, dport: u16) -> L4Spec {
        L4Spec::Udp { sport, dport }
    }

    /// An ICMP/ICMPv6 echo request or reply header.
    pub const fn echo(ty: u8, ident: u16, seq: u16) -> L4Spec {
        L4Spec::Icmp {
            ty,
            code: 0,
            rest: Icmpv4Repr::echo(ty, ident, seq).rest_of_header,
        }
    }

    /// Header length in bytes.
    pub const fn header_len(&self) -> usize {
        match self {
            L4Spec::Tcp { .. } => TcpPacket::<&[u8]>::MIN_HEADER_LEN,
            L4Spec::Udp { .. } => UdpRepr::HEADER_LEN,
            L4Spec::Icmp { .. } => Icmpv4Repr::HEADER_LEN,
            L4Spec::Raw { .. } => 0,
        }
    }

    /// The IP protocol number, given the family (ICMP is 1 or 58).
    pub const fn ip_protocol(&self, ipv6: bool) -> IpProtocol {
        match *self {
            L4Spec::Tcp { .. } => IpProtocol::TCP,
            L4Spec::Udp { .. } => IpProtocol::UDP,
            L4Spec::Icmp { .. } if ipv6 => IpProtocol::ICMPV6,
            L4Spec::Icmp { .. } => IpProtocol::ICMP,
            L4Spec::Raw { proto } => IpProtocol(proto),
        }
    }

    /// Writes the header at the start of `seg` (header and payload, the payload in place) with its
    /// checksum over all of `seg`.
    fn emit(&self, seg: &mut [u8], addrs: &IpAddrs) -> Result<(), EmitError> {
        match *self {
            L4Spec::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
            } => TcpRepr::new(sport, dport, seq, ack, flags, window).emit(seg, addrs),
            L4Spec::Udp { sport, dport } => UdpRepr {
                src_port: sport,
                dst_port: dport,
            }
            .emit(seg, addrs),
            L4Spec::Icmp { ty, code, rest } => match *addrs {
                IpAddrs::V4 { .. } => Icmpv4Repr {
                    msg_type: ty,
                    msg_code: code,
                    rest_of_header: rest,
                }
                .emit(seg),
                IpAddrs::V6 { src, dst } => Icmpv6Repr {
                    msg_type: ty,
                    msg_code: code,
                    rest_of_header: rest,
                }
                .emit(seg, src, dst),
            },
            L4Spec::Raw { .. } => Ok(()),
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

    /// The mirror image: MACs and addresses swapped (the transport is kept).
    pub const fn reversed(&self) -> FrameSpec {
        FrameSpec {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            ip: self.ip.reversed(),
            ..*self
        }
    }

    /// Length of the Ethernet header and VLAN tag.
    pub const fn l2_len(&self) -> usize {
        let tag = if self.vlan.is_some() {
            VlanTag::<&[u8]>::HEADER_LEN
        } else {
            0
        };
        EthernetFrame::<&[u8]>::HEADER_LEN + tag
    }

    /// Total header length (Ethernet through transport); the payload starts here.
    pub const fn header_len(&self) -> usize {
        self.l2_len() + self.ip.header_len() + self.l4.header_len()
    }

    /// Writes the headers into `frame` (a frame without FCS), treating every
    /// byte after [`header_len`](Self::header_len) as payload: the caller
    /// puts the payload in place first, then this sets the IP and UDP
    /// lengths from `frame.len()` and fills every checksum.
    pub fn write(&self, frame: &mut [u8]) -> Result<(), FrameError> {
        let header_len = self.header_len();
        if frame.len() < header_len {
            return Err(FrameError::TooShort {
                len: frame.len(),
                header_len,
            });
        }
        let len = frame.len();
        let too_long = |e| frame_error(e, len);
        let l3 = self.write_link(frame).map_err(too_long)?;
        let l4 = l3 + self.ip.header_len();
        let protocol = self.l4.ip_protocol(self.ip.is_ipv6());
        let seg_len = frame.len() - l4;
        self.ip
            .emit(&mut frame[l3..], protocol, seg_len, None)
            .map_err(too_long)?;
        self.l4
            .emit(&mut frame[l4..], &self.ip.addrs())
            .map_err(too_long)
    }

    /// A new buffer holding the headers followed by `payload`.
    pub fn build(&self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut frame = vec![0u8; self.header_len() + payload.len()];
        frame[self.header_len()..].copy_from_slice(payload);
        self.write(&mut frame)?;
        Ok(frame)
    }

    /// [`build`](Self::build), zero-padded to [`MIN_FRAME_LEN`] after the IP packet.
    pub fn build_padded(&self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut frame = self.build(payload)?;
        frame.resize(frame.len().max(MIN_FRAME_LEN), 0);
        Ok(frame)
    }

    /// The transport segment (header + `payload`) alone, its checksum computed for the whole datagram
    /// (as the sender's stack computes it), for [`fragment`](Self::fragment) to cut.
    pub fn segment(&self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let hl = self.l4.header_len();
        let mut seg = vec![0u8; hl + payload.len()];
        seg[hl..].copy_from_slice(payload);
        let len = seg.len();
        self.l4
            .emit(&mut seg, &self.ip.addrs())
            .map_err(|_| FrameError::TooLong { len })?;
        Ok(seg)
    }

    /// The frame carrying `ip_payload` (a [`segment`](Self::segment) or a slice of one) as it is, with
    /// the transport's protocol number, zero-padded to [`MIN_FRAME_LEN`]. With `frag`, an IPv4 fragment
    /// (flags, offset, the fragment's identification) or an IPv6 packet with a fragment header.
    pub fn fragment(
        &self,
        frag: Option<Fragment>,
        ip_payload: &[u8],
    ) -> Result<Vec<u8>, FrameError> {
        let frag_header = match (frag, &self.ip) {
            (Some(_), IpSpec::V6 { .. }) => FRAGMENT_HEADER_LEN,
            _ => 0,
        };
        let l3 = self.l2_len();
        let l4 = l3 + self.ip.header_len() + frag_header;
        let mut f = vec![0u8; (l4 + ip_payload.len()).max(MIN_FRAME_LEN)];
        let too_long = |e| frame_error(e, l4 + ip_payload.len());
        self.write_link(&mut f).map_err(too_long)?;
        f[l4..l4 + ip_payload.len()].copy_from_slice(ip_payload);
        let protocol = self.l4.ip_protocol(self.ip.is_ipv6());
        let payload_len = frag_header + ip_payload.len();
        match (frag, self.ip.is_ipv6()) {
            (Some(fragment), true) => {
                let ext = Ipv6FragmentRepr {
                    next_header: protocol,
                    fragment,
                };
                ext.emit(&mut f[l4 - FRAGMENT_HEADER_LEN..])
                    .map_err(too_long)?;
                self.ip
                    .emit(&mut f[l3..], IpProtocol::IPV6_FRAG, payload_len, None)
                    .map_err(too_long)?;
            }
            _ => self
                .ip
                .emit(&mut f[l3..], protocol, payload_len, frag)
                .map_err(too_long)?,
        }
        Ok(f)
    }

    /// Writes the Ethernet header and tag; returns where the IP header starts.
    fn write_link(&self, frame: &mut [u8]) -> Result<usize, EmitError> {
        let ethertype = if self.ip.is_ipv6() {
            EtherType::IPV6
        } else {
            EtherType::IPV4
        };
        let mut eth = EthernetRepr::new(self.src_mac, self.dst_mac, ethertype);
        if let Some(vid) = self.vlan {
            eth.vlans[0] = Some(VlanRepr::dot1q(vid)?);
        }
        eth.emit(frame)
    }
}

/// What an emit error means for a `len`-byte frame whose buffer was sized for its headers: a VLAN id out
/// of range, or a length past its field.
fn frame_error(e: EmitError, len: usize) -> FrameError {
    match e {
        EmitError::BadVlanId(vid) => FrameError::BadVlanId(vid),
        _ => FrameError::TooLong { len },
    }
}

/// A deterministic, recognisable payload: byte `i` is `(seed + i) as u8`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::icmpv4::Icmpv4Packet;
    use net::icmpv6::Icmpv6Packet;
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
        let proto = spec.l4.ip_protocol(spec.ip.is_ipv6());

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
                    _ => {
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
                    _ => assert!(UdpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v6(src, dst)),
                }
                seg
            }
        };
        assert_eq!(p.l4_offset, Some(hl - spec.l4.header_len()));

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
            other => panic!("round trips cover TCP and UDP, not {other:?}"),
        }
    }

    #[test]
    fn all_layer_combinations_round_trip_at_min_and_jumbo_sizes() {
        let mut n = 0;
        for ipv6 in [false, true] {
            for l4 in [L4Proto::Tcp, L4Proto::Udp] {
                for vlan in [None, Some(1), Some(100), Some(4094)] {
                    let s = spec(ipv6, l4, vlan);
                    let layers = Layers {
                        vlan: vlan.is_some(),
                        ipv6,
                        l4,
                    };
                    let min = layers.min_frame_size() - FCS_LEN;
                    assert_eq!(layers.header_len(), s.header_len());
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

    fn spec_of(src: &str, dst: &str, l4: L4Spec) -> FrameSpec {
        let ip = IpSpec::from_addrs(src.parse().unwrap(), dst.parse().unwrap()).unwrap();
        FrameSpec::new(ip, l4)
    }

    #[test]
    fn icmp_echo_both_families_parse_and_verify() {
        let f = spec_of("10.0.0.1", "10.0.0.2", L4Spec::echo(8, 0x1234, 7))
            .build_padded(b"abcd")
            .unwrap();
        assert_eq!(f.len(), MIN_FRAME_LEN);
        let p = parse(&f).unwrap();
        assert_eq!(
            p.l4,
            L4::Icmp {
                ty: 8,
                code: 0,
                ident: Some(0x1234)
            }
        );
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.total_len()), 20 + 8 + 4);
        assert!(Icmpv4Packet::new_checked(ip.into_payload())
            .unwrap()
            .verify_checksum());

        let spec = FrameSpec {
            vlan: Some(30),
            ..spec_of("fd00::1", "fd00::2", L4Spec::echo(128, 9, 1))
        };
        let f = spec.build_padded(&[0; 100]).unwrap();
        let p = parse(&f).unwrap();
        assert_eq!(p.vlans, [Some(30), None]);
        assert_eq!(
            p.l4,
            L4::Icmpv6 {
                ty: 128,
                code: 0,
                ident: Some(9)
            }
        );
        let ip = Ipv6Packet::new_checked(&f[18..]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        assert!(Icmpv6Packet::new_checked(ip.into_payload())
            .unwrap()
            .verify_checksum(src, dst));
    }

    #[test]
    fn fragments_carry_the_fragment_fields() {
        for (s, d) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
            let spec = spec_of(s, d, L4Spec::udp(1, 2));
            let frag = Fragment {
                offset: 16,
                more: true,
                ident: 0xabcd,
            };
            let f = spec.fragment(Some(frag), &[0u8; 24]).unwrap();
            let p = parse(&f).unwrap();
            assert_eq!(p.fragment(), Some(frag));
            assert_eq!(p.l4, L4::None);
            assert_eq!(p.ip_proto(), Some(IpProtocol::UDP));
        }
        // A segment cut short and carried whole: the IP length says where it ends.
        let spec = spec_of(
            "10.0.0.1",
            "10.0.0.2",
            L4Spec::tcp(1, 2, 3, 4, TcpFlags::SYN),
        );
        let seg = spec.segment(&[]).unwrap();
        assert_eq!(seg.len(), 20);
        let f = spec.fragment(None, &seg[..12]).unwrap();
        assert_eq!(f.len(), MIN_FRAME_LEN);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.total_len(), ip.dont_frag()), (32, true));
        assert!(ip.verify_checksum());
    }

    #[test]
    fn raw_protocol_and_reversal() {
        let spec = spec_of("10.0.0.1", "10.0.0.2", L4Spec::Raw { proto: 47 });
        let f = spec.reversed().build_padded(&[1; 40]).unwrap();
        let p = parse(&f).unwrap();
        assert!(matches!(
            p.l3,
            L3::Ipv4 {
                proto: IpProtocol(47),
                ..
            }
        ));
        assert_eq!(p.src_ip(), Some(spec.ip.dst()));
        assert_eq!(p.l4, L4::None);
        assert_eq!(f.len(), 14 + 20 + 40);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (eth.src_addr(), eth.dst_addr()),
            (DEFAULT_DST_MAC, DEFAULT_SRC_MAC)
        );
    }
}
