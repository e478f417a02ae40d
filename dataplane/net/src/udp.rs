//! UDP datagrams (RFC 768).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::{check_room, EmitError, Error, Result};
use crate::ip::{self, IpAddrs, IpProtocol};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A UDP datagram.
///
/// `new_checked` guarantees `8 <= len() <= buffer length`; the payload is
/// bounded by `len()`. The first fragment of a fragmented datagram fails the
/// check (its length field covers all fragments); use
/// [`new_checked_header`](Self::new_checked_header) to read its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Length of the header.
    pub const HEADER_LEN: usize = 8;

    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after validating the length field.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_checked_header(buffer)?;
        if usize::from(p.len()) > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Checks only that the header fits and the length field is at least 8,
    /// for first fragments and datagrams quoted in ICMP errors.
    pub fn new_checked_header(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if usize::from(p.len()) < Self::HEADER_LEN {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, i: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// Length of header plus payload, as claimed by the header.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        self.u16_at(field::LENGTH)
    }

    /// Checksum as on the wire (0 over IPv4 means "not computed").
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    fn datagram_end(&self) -> usize {
        let b = self.buffer.as_ref();
        usize::from(self.len()).clamp(Self::HEADER_LEN.min(b.len()), b.len())
    }

    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.datagram_end();
        b.get(Self::HEADER_LEN..end).unwrap_or_default()
    }

    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.datagram_end()]
    }

    /// Whether the checksum is correct for the given IPv4 endpoints; a zero
    /// checksum (not computed) is accepted, as RFC 768 allows.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let ph = ip::pseudo_header_v4(src, dst, IpProtocol::UDP, self.len());
        checksum::verify(ph, self.datagram())
    }

    /// Whether the checksum is correct for the given IPv6 endpoints; zero is
    /// rejected because IPv6 makes the checksum mandatory (RFC 8200 8.1).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let ph = ip::pseudo_header_v6(src, dst, IpProtocol::UDP, u32::from(self.len()));
        checksum::verify(ph, self.datagram())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn set_u16_at(&mut self, i: usize, v: u16) {
        self.buffer.as_mut()[i..i + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        self.set_u16_at(field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_u16_at(field::DST_PORT, v);
    }

    /// Sets the length field (header plus payload).
    pub fn set_len(&mut self, v: u16) {
        self.set_u16_at(field::LENGTH, v);
    }

    /// Sets the checksum field verbatim.
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(field::CHECKSUM, v);
    }

    /// Mutable payload, bounded by the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.datagram_end();
        self.buffer
            .as_mut()
            .get_mut(Self::HEADER_LEN..end)
            .unwrap_or_default()
    }

    fn finish_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::combine(pseudo, checksum::sum(self.datagram())));
        // A computed zero is sent as all-ones; zero means "no checksum".
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Computes the checksum with an IPv4 pseudo header; set the length first.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let ph = ip::pseudo_header_v4(src, dst, IpProtocol::UDP, self.len());
        self.finish_checksum(ph);
    }

    /// Computes the checksum with an IPv6 pseudo header; set the length first.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let ph = ip::pseudo_header_v6(src, dst, IpProtocol::UDP, u32::from(self.len()));
        self.finish_checksum(ph);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// [`payload`](UdpPacket::payload) with the buffer's lifetime rather than the
    /// view's, so the view can be a temporary.
    pub fn into_payload(self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        let end = self.datagram_end();
        b.get(Self::HEADER_LEN..end).unwrap_or_default()
    }
}

/// A UDP header, as emitted and parsed. The payload is whatever follows the header in the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Length of the header.
    pub const HEADER_LEN: usize = UdpPacket::<&[u8]>::HEADER_LEN;

    /// Reads the ports of a checked datagram.
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> UdpRepr {
        UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
        }
    }

    /// Writes the header at the start of `datagram` (header and payload, the payload already in place),
    /// its length set to all of `datagram`, and the checksum with the pseudo header of `addrs`.
    pub fn emit(
        &self,
        datagram: &mut [u8],
        addrs: &IpAddrs,
    ) -> core::result::Result<(), EmitError> {
        check_room(datagram, Self::HEADER_LEN)?;
        let len = datagram.len();
        let len = u16::try_from(len).map_err(|_| EmitError::TooLong(len))?;
        let pseudo = addrs.pseudo_header(IpProtocol::UDP, usize::from(len))?;
        let mut udp = UdpPacket::new_unchecked(datagram);
        udp.set_src_port(self.src_port);
        udp.set_dst_port(self.dst_port);
        udp.set_len(len);
        udp.finish_checksum(pseudo);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn dgram() -> &'static [u8] {
        &fixtures::UDP_V6_HBH_FRAG[14 + 40 + 16..]
    }

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
    }

    #[test]
    fn fields() {
        let u = UdpPacket::new_checked(dgram()).unwrap();
        assert_eq!(u.src_port(), 40000);
        assert_eq!(u.dst_port(), 53);
        assert_eq!(u.len(), 20);
        assert_eq!(u.checksum(), 0x8ca4);
        assert_eq!(u.payload(), b"hello bulkhd");
        let (s, d) = addrs();
        assert!(u.verify_checksum_v6(s, d));
        assert!(!u.verify_checksum_v6(d, Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn truncations() {
        let d = dgram();
        for n in 0..=d.len() {
            match UdpPacket::new_checked(&d[..n]) {
                Ok(u) => {
                    assert_eq!(n, d.len());
                    assert_eq!(u.payload().len(), 12);
                }
                Err(e) => assert_eq!(e, Error::Truncated),
            }
            if n >= 8 {
                let u = UdpPacket::new_checked_header(&d[..n]).unwrap();
                assert_eq!(u.payload().len(), n - 8);
            }
        }
    }

    #[test]
    fn bad_length() {
        let mut d = dgram().to_vec();
        d[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(UdpPacket::new_checked(&d[..]), Err(Error::Malformed));
        d[4..6].copy_from_slice(&21u16.to_be_bytes());
        assert_eq!(UdpPacket::new_checked(&d[..]), Err(Error::Truncated));
        // Trailing bytes beyond the length field are not payload.
        d.push(0);
        let u = UdpPacket::new_checked(&d[..]).unwrap();
        assert_eq!(u.payload().len(), 13);
    }

    #[test]
    fn checksum_round_trip() {
        let (s, d) = addrs();
        let mut buf = [0u8; 8 + 3 + 4];
        let mut u = UdpPacket::new_unchecked(&mut buf[..]);
        u.set_src_port(1234);
        u.set_dst_port(5678);
        u.set_len(11);
        u.payload_mut().copy_from_slice(b"odd");
        u.fill_checksum_v6(s, d);
        assert!(u.verify_checksum_v6(s, d));
        let v4s = Ipv4Addr::new(10, 1, 2, 3);
        let v4d = Ipv4Addr::new(10, 3, 2, 1);
        u.fill_checksum_v4(v4s, v4d);
        assert!(u.verify_checksum_v4(v4s, v4d));
        assert!(!u.verify_checksum_v4(v4s, Ipv4Addr::new(10, 9, 9, 9)));
        u.set_checksum(0);
        assert!(u.verify_checksum_v4(v4s, Ipv4Addr::new(10, 9, 9, 9)));
        assert!(!u.verify_checksum_v6(s, d));
        // The fixture's checksum is reproduced.
        let mut f = dgram().to_vec();
        let mut u = UdpPacket::new_unchecked(&mut f[..]);
        u.fill_checksum_v6(s, d);
        assert_eq!(u.checksum(), 0x8ca4);
    }
}
