//! Zero-copy, panic-free packet views for the Bulkhead dataplane, and the one header writer of the project.
//!
//! Each protocol module offers a view `Foo<T: AsRef<[u8]>>` over a buffer in
//! the style of smoltcp's `wire` module: `new_checked` validates every
//! length the accessors rely on, so a checked view never panics on any
//! input; `new_unchecked` is for writers that build headers in place with
//! the `set_*` methods. [`parse()`] is the single-pass per-packet parser the
//! dataplane calls on every frame.
//!
//! The emit side: a `FooRepr` per header ([`link::EthernetRepr`] with its VLAN tags, [`ipv4::Ipv4Repr`],
//! [`ipv6::Ipv6Repr`], [`ipv6::Ipv6FragmentRepr`], [`tcp::TcpRepr`], [`udp::UdpRepr`],
//! [`icmpv4::Icmpv4Repr`], [`icmpv6::Icmpv6Repr`]) whose `emit` writes the header through the view's
//! setters into a caller's buffer, checksum included (transport checksums over the pseudo header of
//! [`IpAddrs`]), and whose `parse` reads it back. `emit` never allocates and never panics: a buffer too
//! short, or a length that does not fit its field, is an [`EmitError`] before anything is written.
//!
//! Building an Ethernet + IPv4 + UDP frame in place and parsing it back:
//!
//! ```
//! use std::net::Ipv4Addr;
//! use net::ethernet::{EtherType, MacAddr};
//! use net::ipv4::{Ipv4Packet, Ipv4Repr};
//! use net::link::EthernetRepr;
//! use net::udp::{UdpPacket, UdpRepr};
//! use net::{parse, IpAddrs, IpProtocol, L3, L4};
//!
//! let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
//! let payload = b"ping";
//! let mut buf = [0u8; 14 + 20 + 8 + 4];
//!
//! let eth = EthernetRepr::new(MacAddr([0x02, 0, 0, 0, 0, 1]), MacAddr([0x02, 0, 0, 0, 0, 2]), EtherType::IPV4);
//! let l3 = eth.emit(&mut buf).unwrap();
//! let ip = Ipv4Repr { ident: 1, ..Ipv4Repr::new(src, dst, IpProtocol::UDP, 8 + payload.len()) };
//! ip.emit(&mut buf[l3..]).unwrap();
//! let l4 = l3 + Ipv4Repr::HEADER_LEN;
//! buf[l4 + UdpRepr::HEADER_LEN..].copy_from_slice(payload);
//! let udp = UdpRepr { src_port: 40000, dst_port: 53 };
//! udp.emit(&mut buf[l4..], &IpAddrs::V4 { src, dst }).unwrap();
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
//! let view = Ipv4Packet::new_checked(&buf[14..]).unwrap();
//! assert!(view.verify_checksum());
//! assert_eq!(Ipv4Repr::parse(&view), ip);
//! let datagram = UdpPacket::new_checked(view.payload()).unwrap();
//! assert!(datagram.verify_checksum_v4(src, dst));
//! assert_eq!(datagram.payload(), payload);
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
pub use parse::{parse, parse_common, parse_into, Ipv4Frame, Layer, ParseError, Parsed, L3, L4};
pub use tcp::TcpFlags;

#[cfg(test)]
mod tests;
