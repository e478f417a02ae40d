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
mod tests;
