//! Zero-copy, panic-free packet views for the Bulkhead dataplane.
//!
//! Each protocol module offers a view `Foo<T: AsRef<[u8]>>` over a buffer in
//! the style of smoltcp's `wire` module: `new_checked` validates every
//! length the accessors rely on, so a checked view never panics on any
//! input; `new_unchecked` is for writers that build headers in place with
//! the `set_*` methods. [`parse()`] is the single-pass per-packet parser the
//! dataplane calls on every frame.
//!
//! Building an Ethernet + IPv4 + UDP frame in place and parsing it back:
//!
//! ```
//! use std::net::Ipv4Addr;
//! use net::ethernet::{EtherType, EthernetFrame, MacAddr};
//! use net::ip::IpProtocol;
//! use net::ipv4::Ipv4Packet;
//! use net::udp::UdpPacket;
//! use net::{parse, L3, L4};
//!
//! let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
//! let payload = b"ping";
//! let mut buf = [0u8; 14 + 20 + 8 + 4];
//!
//! let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
//! eth.set_dst_addr(MacAddr([0x02, 0, 0, 0, 0, 2]));
//! eth.set_src_addr(MacAddr([0x02, 0, 0, 0, 0, 1]));
//! eth.set_ethertype(EtherType::IPV4);
//!
//! let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
//! ip.set_version(4);
//! ip.set_header_len(20);
//! ip.set_total_len(20 + 8 + 4);
//! ip.set_ident(1);
//! ip.set_dont_frag(true);
//! ip.set_ttl(64);
//! ip.set_protocol(IpProtocol::UDP);
//! ip.set_src_addr(src);
//! ip.set_dst_addr(dst);
//! ip.fill_checksum();
//!
//! let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
//! udp.set_src_port(40000);
//! udp.set_dst_port(53);
//! udp.set_len(8 + 4);
//! udp.payload_mut().copy_from_slice(payload);
//! udp.fill_checksum_v4(src, dst);
//!
//! let p = parse(&buf).unwrap();
//! assert_eq!(p.vlans, [None, None]);
//! assert_eq!(p.l3_offset, 14);
//! assert!(matches!(p.l3, L3::Ipv4 { src: s, dst: d, proto: IpProtocol::UDP, frag: None, ttl: 64 }
//!     if s == src && d == dst));
//! assert_eq!(p.l4, L4::Udp { sport: 40000, dport: 53 });
//! assert_eq!(p.l4_offset, Some(34));
//!
//! // The views agree, and the checksums verify.
//! let ip = Ipv4Packet::new_checked(&buf[14..]).unwrap();
//! assert!(ip.verify_checksum());
//! let udp = UdpPacket::new_checked(ip.payload()).unwrap();
//! assert!(udp.verify_checksum_v4(src, dst));
//! assert_eq!(udp.payload(), payload);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod arp;
pub mod checksum;
mod error;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod link;
pub mod parse;
pub mod tcp;
pub mod udp;
pub mod vlan;

#[cfg(test)]
mod fixtures;

pub use error::{EmitError, Error, Result};
pub use ethernet::{EtherType, MacAddr};
pub use ip::{Fragment, IpAddrs, IpProtocol};
pub use parse::{parse, parse_into, Layer, ParseError, Parsed, L3, L4};
pub use tcp::TcpFlags;

#[cfg(test)]
mod tests;
