//! ARP for Ethernet/IPv4 (RFC 826).

use std::net::Ipv4Addr;

use crate::error::{Error, Result};
use crate::ethernet::{EtherType, MacAddr};

/// ARP opcode: request.
pub const OPER_REQUEST: u16 = 1;
/// ARP opcode: reply.
pub const OPER_REPLY: u16 = 2;
/// Hardware type for Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// An ARP packet whose addresses are Ethernet and IPv4.
///
/// Other hardware/protocol address sizes are rejected by
/// [`ArpPacket::new_checked`] because the address accessors assume 6/4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Length of an Ethernet/IPv4 ARP packet.
    pub const HEADER_LEN: usize = 28;
    /// Length of the fixed part preceding the addresses.
    pub const FIXED_LEN: usize = 8;

    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps a buffer after checking it is a whole Ethernet/IPv4 ARP packet.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the fixed part, the address sizes and the total length.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < Self::FIXED_LEN {
            return Err(Error::Truncated);
        }
        if b[field::HLEN] != 6 || b[field::PLEN] != 4 {
            return Err(Error::Malformed);
        }
        if b.len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, i: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    fn mac_at(&self, i: usize) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5]])
    }

    fn ip_at(&self, i: usize) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3])
    }

    /// Hardware type (1 for Ethernet).
    pub fn htype(&self) -> u16 {
        self.u16_at(field::HTYPE)
    }

    /// Protocol type (an EtherType, IPv4 here).
    pub fn ptype(&self) -> EtherType {
        EtherType(self.u16_at(field::PTYPE))
    }

    /// Hardware address length.
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation ([`OPER_REQUEST`] or [`OPER_REPLY`]).
    pub fn oper(&self) -> u16 {
        self.u16_at(field::OPER)
    }

    /// Sender hardware address.
    pub fn sha(&self) -> MacAddr {
        self.mac_at(field::SHA)
    }

    /// Sender protocol address.
    pub fn spa(&self) -> Ipv4Addr {
        self.ip_at(field::SPA)
    }

    /// Target hardware address.
    pub fn tha(&self) -> MacAddr {
        self.mac_at(field::THA)
    }

    /// Target protocol address.
    pub fn tpa(&self) -> Ipv4Addr {
        self.ip_at(field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    fn set_u16_at(&mut self, i: usize, v: u16) {
        self.buffer.as_mut()[i..i + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the hardware type.
    pub fn set_htype(&mut self, v: u16) {
        self.set_u16_at(field::HTYPE, v);
    }

    /// Sets the protocol type.
    pub fn set_ptype(&mut self, v: EtherType) {
        self.set_u16_at(field::PTYPE, v.0);
    }

    /// Sets the hardware address length.
    pub fn set_hlen(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    /// Sets the protocol address length.
    pub fn set_plen(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    /// Sets htype/ptype/hlen/plen for Ethernet/IPv4, the only flavour in use.
    pub fn set_ethernet_ipv4(&mut self) {
        self.set_htype(HTYPE_ETHERNET);
        self.set_ptype(EtherType::IPV4);
        self.set_hlen(6);
        self.set_plen(4);
    }

    /// Sets the operation.
    pub fn set_oper(&mut self, v: u16) {
        self.set_u16_at(field::OPER, v);
    }

    /// Sets the sender hardware address.
    pub fn set_sha(&mut self, v: MacAddr) {
        self.buffer.as_mut()[field::SHA..field::SHA + 6].copy_from_slice(&v.0);
    }

    /// Sets the sender protocol address.
    pub fn set_spa(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&v.octets());
    }

    /// Sets the target hardware address.
    pub fn set_tha(&mut self, v: MacAddr) {
        self.buffer.as_mut()[field::THA..field::THA + 6].copy_from_slice(&v.0);
    }

    /// Sets the target protocol address.
    pub fn set_tpa(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&v.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::ARP_REQUEST as ARP_REQUEST_FRAME;

    #[test]
    fn fields() {
        let p = ArpPacket::new_checked(&ARP_REQUEST_FRAME[14..]).unwrap();
        assert_eq!(p.htype(), HTYPE_ETHERNET);
        assert_eq!(p.ptype(), EtherType::IPV4);
        assert_eq!((p.hlen(), p.plen()), (6, 4));
        assert_eq!(p.oper(), OPER_REQUEST);
        assert_eq!(p.sha(), MacAddr([0x00, 0x0c, 0x29, 0x3e, 0x5c, 0x1a]));
        assert_eq!(p.spa(), Ipv4Addr::new(192, 168, 1, 100));
        assert_eq!(p.tha(), MacAddr::ZERO);
        assert_eq!(p.tpa(), Ipv4Addr::new(192, 168, 1, 1));
    }

    #[test]
    fn truncations() {
        let body = &ARP_REQUEST_FRAME[14..];
        for n in 0..body.len() {
            match ArpPacket::new_checked(&body[..n]) {
                Ok(p) => {
                    assert!(n >= 28);
                    let _ = (p.sha(), p.tpa());
                }
                Err(e) => {
                    assert!(n < 28);
                    assert_eq!(e, Error::Truncated);
                }
            }
        }
    }

    #[test]
    fn wrong_address_sizes() {
        let mut body = ARP_REQUEST_FRAME;
        body[14 + 4] = 8;
        assert_eq!(
            ArpPacket::new_checked(&body[14..]).unwrap_err(),
            Error::Malformed
        );
        let mut body = ARP_REQUEST_FRAME;
        body[14 + 5] = 16;
        assert_eq!(
            ArpPacket::new_checked(&body[14..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn build_reply() {
        let mut buf = [0u8; 28];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        p.set_ethernet_ipv4();
        p.set_oper(OPER_REPLY);
        p.set_sha(MacAddr([2, 0, 0, 0, 0, 1]));
        p.set_spa(Ipv4Addr::new(192, 168, 1, 1));
        p.set_tha(MacAddr([0x00, 0x0c, 0x29, 0x3e, 0x5c, 0x1a]));
        p.set_tpa(Ipv4Addr::new(192, 168, 1, 100));
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.oper(), OPER_REPLY);
        assert_eq!(p.sha(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.tpa(), Ipv4Addr::new(192, 168, 1, 100));
    }
}
