//! ICMP for IPv6 (RFC 4443) and the neighbour-discovery types (RFC 4861).

use std::net::Ipv6Addr;

use crate::checksum;
use crate::error::{check_room, EmitError, Error, Result};
use crate::ip::{self, IpProtocol};

/// ICMPv6 message types.
pub mod types {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (carries the MTU).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect.
    pub const REDIRECT: u8 = 137;
}

/// Whether `ty` is an echo request or reply.
pub const fn is_echo(ty: u8) -> bool {
    matches!(ty, types::ECHO_REQUEST | types::ECHO_REPLY)
}

/// Whether `ty` is one of the four error types, which quote the packet.
pub const fn is_error(ty: u8) -> bool {
    matches!(ty, 1..=4)
}

/// Whether `ty` is a neighbour-discovery type (133–137), which a gateway
/// must let through for IPv6 to work at all.
pub const fn is_neighbor_discovery(ty: u8) -> bool {
    matches!(ty, 133..=137)
}

/// An ICMPv6 message. The buffer is taken to be exactly the message, which
/// is what the checksum covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Type, code, checksum and the 4-byte type-specific word.
    pub const HEADER_LEN: usize = 8;

    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer after checking that the 8-byte header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, i: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    /// Message type (see [`types`]).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Checksum as on the wire.
    pub fn checksum(&self) -> u16 {
        self.u16_at(2)
    }

    /// The type-specific second word.
    pub fn rest_of_header(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// Whether this is an error message.
    pub fn is_error(&self) -> bool {
        is_error(self.msg_type())
    }

    /// Whether this is a neighbour-discovery message.
    pub fn is_neighbor_discovery(&self) -> bool {
        is_neighbor_discovery(self.msg_type())
    }

    /// Echo identifier, for echo requests and replies only.
    pub fn echo_ident(&self) -> Option<u16> {
        is_echo(self.msg_type()).then(|| self.u16_at(4))
    }

    /// Echo sequence number, for echo requests and replies only.
    pub fn echo_seq(&self) -> Option<u16> {
        is_echo(self.msg_type()).then(|| self.u16_at(6))
    }

    /// MTU of a packet-too-big message.
    pub fn mtu(&self) -> Option<u32> {
        (self.msg_type() == types::PACKET_TOO_BIG).then(|| self.rest_of_header())
    }

    /// Target address of a neighbour solicitation/advertisement or redirect.
    pub fn nd_target(&self) -> Option<Ipv6Addr> {
        if !matches!(
            self.msg_type(),
            types::NEIGHBOR_SOLICIT | types::NEIGHBOR_ADVERT | types::REDIRECT
        ) {
            return None;
        }
        let a: [u8; 16] = self.buffer.as_ref().get(8..24)?.try_into().ok()?;
        Some(Ipv6Addr::from(a))
    }

    /// Everything after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(Self::HEADER_LEN..)
            .unwrap_or_default()
    }

    /// For error messages: as much of the invoking packet as was quoted
    /// (RFC 4443 quotes as much as fits in the minimum MTU).
    pub fn quoted(&self) -> Option<&[u8]> {
        self.is_error().then(|| self.payload())
    }

    /// Whether the checksum is correct for the given IPv6 endpoints.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let Ok(len) = u32::try_from(self.buffer.as_ref().len()) else {
            return false;
        };
        let ph = ip::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, len);
        checksum::verify(ph, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    fn set_u16_at(&mut self, i: usize, v: u16) {
        self.buffer.as_mut()[i..i + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the message type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[0] = v;
    }

    /// Sets the message code.
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[1] = v;
    }

    /// Sets the checksum field verbatim.
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(2, v);
    }

    /// Sets the type-specific second word (MTU, flags, or zero).
    pub fn set_rest_of_header(&mut self, v: u32) {
        self.buffer.as_mut()[4..8].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the echo identifier (bytes 4..6) regardless of type.
    pub fn set_echo_ident(&mut self, v: u16) {
        self.set_u16_at(4, v);
    }

    /// Sets the echo sequence number (bytes 6..8) regardless of type.
    pub fn set_echo_seq(&mut self, v: u16) {
        self.set_u16_at(6, v);
    }

    /// Sets the neighbour-discovery target address (bytes 8..24).
    pub fn set_nd_target(&mut self, v: Ipv6Addr) {
        self.buffer.as_mut()[8..24].copy_from_slice(&v.octets());
    }

    /// Mutable access to everything after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(Self::HEADER_LEN..)
            .unwrap_or_default()
    }

    /// Computes the checksum over the whole buffer with the pseudo header.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let len = u32::try_from(self.buffer.as_ref().len()).unwrap_or(u32::MAX);
        let ph = ip::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, len);
        let c = checksum::finish(checksum::combine(ph, checksum::sum(self.buffer.as_ref())));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv6Packet<&'a T> {
    /// [`payload`](Icmpv6Packet::payload) with the buffer's lifetime rather than the
    /// view's, so the view can be a temporary.
    pub fn into_payload(self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        b.get(Self::HEADER_LEN..).unwrap_or_default()
    }
}

/// An ICMPv6 header, as emitted and parsed: the message body (echo data, a quoted packet) is whatever
/// follows the 8-byte header in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmpv6Repr {
    /// Message type.
    pub msg_type: u8,
    /// Message code.
    pub msg_code: u8,
    /// The 4 bytes after the checksum (echo: identifier << 16 | sequence number).
    pub rest_of_header: u32,
}

impl Icmpv6Repr {
    /// Length of the header.
    pub const HEADER_LEN: usize = Icmpv6Packet::<&[u8]>::HEADER_LEN;

    /// An echo request or reply header.
    pub const fn echo(msg_type: u8, ident: u16, seq: u16) -> Self {
        Icmpv6Repr {
            msg_type,
            msg_code: 0,
            rest_of_header: ((ident as u32) << 16) | seq as u32,
        }
    }

    /// A destination-unreachable header with `msg_code` (the 4 bytes after the checksum unused, zero).
    pub const fn dest_unreachable(msg_code: u8) -> Self {
        Icmpv6Repr {
            msg_type: types::DEST_UNREACHABLE,
            msg_code,
            rest_of_header: 0,
        }
    }

    /// Reads the header of a checked message.
    pub fn parse<T: AsRef<[u8]>>(p: &Icmpv6Packet<T>) -> Self {
        Icmpv6Repr {
            msg_type: p.msg_type(),
            msg_code: p.msg_code(),
            rest_of_header: p.rest_of_header(),
        }
    }

    /// Writes the header at the start of `message` (header and body, the body already in place) and the
    /// checksum over all of it with the pseudo header of `src` and `dst`.
    pub fn emit(
        &self,
        message: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> core::result::Result<(), EmitError> {
        check_room(message, Self::HEADER_LEN)?;
        let len = message.len();
        u32::try_from(len).map_err(|_| EmitError::TooLong(len))?;
        let mut icmp = Icmpv6Packet::new_unchecked(message);
        icmp.set_msg_type(self.msg_type);
        icmp.set_msg_code(self.msg_code);
        icmp.set_rest_of_header(self.rest_of_header);
        icmp.fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::ipv6::Ipv6Packet;

    #[test]
    fn neighbor_solicitation() {
        let ip = Ipv6Packet::new_checked(&fixtures::ICMPV6_NS[14..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::ICMPV6);
        assert_eq!(ip.hop_limit(), 255);
        let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(m.msg_type(), types::NEIGHBOR_SOLICIT);
        assert_eq!(m.msg_code(), 0);
        assert_eq!(m.checksum(), 0xf5db);
        assert!(m.is_neighbor_discovery() && !m.is_error());
        assert!(m.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert!(!m.verify_checksum(ip.src_addr(), Ipv6Addr::LOCALHOST));
        assert_eq!(m.nd_target(), Some("fe80::2".parse().unwrap()));
        assert_eq!(m.echo_ident(), None);
        assert_eq!(m.quoted(), None);
        assert_eq!(
            &m.payload()[16..],
            &[1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
        );
    }

    #[test]
    fn truncations() {
        let msg = &fixtures::ICMPV6_NS[54..];
        for n in 0..=msg.len() {
            match Icmpv6Packet::new_checked(&msg[..n]) {
                Ok(m) => {
                    assert!(n >= 8);
                    assert_eq!(m.nd_target().is_some(), n >= 24);
                }
                Err(e) => assert_eq!((e, n < 8), (Error::Truncated, true)),
            }
        }
    }

    #[test]
    fn build_echo_and_too_big() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut buf = [0u8; 8 + 5];
        let mut m = Icmpv6Packet::new_unchecked(&mut buf[..]);
        m.set_msg_type(types::ECHO_REQUEST);
        m.set_msg_code(0);
        m.set_echo_ident(0xbeef);
        m.set_echo_seq(2);
        m.payload_mut().copy_from_slice(b"12345");
        m.fill_checksum(src, dst);
        let m = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert!(m.verify_checksum(src, dst));
        assert_eq!((m.echo_ident(), m.echo_seq()), (Some(0xbeef), Some(2)));
        let mut buf = [0u8; 8 + 48];
        let mut m = Icmpv6Packet::new_unchecked(&mut buf[..]);
        m.set_msg_type(types::PACKET_TOO_BIG);
        m.set_rest_of_header(1280);
        m.set_nd_target(src);
        assert_eq!(m.mtu(), Some(1280));
        assert_eq!(m.nd_target(), None);
        assert!(m.is_error());
        assert_eq!(m.quoted().map(<[u8]>::len), Some(48));
        let mut m = Icmpv6Packet::new_unchecked(&mut buf[..]);
        m.set_msg_type(types::NEIGHBOR_ADVERT);
        assert_eq!(m.nd_target(), Some(src));
    }
}
