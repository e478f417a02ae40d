//! Ethernet II frames.

use core::fmt;

use crate::error::{Error, Result};

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00 (e.g. the unknown target in an ARP request).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads an address from the first six bytes of `b`; `None` if shorter.
    pub fn from_bytes(b: &[u8]) -> Option<MacAddr> {
        b.get(..6)
            .and_then(|s| <[u8; 6]>::try_from(s).ok())
            .map(MacAddr)
    }

    /// The raw bytes.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is the all-ones broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the I/G bit is set (includes broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether the U/L bit marks the address as locally administered.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

/// An EtherType value. A newtype rather than an enum so unknown values
/// round-trip losslessly.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP.
    pub const ARP: EtherType = EtherType(0x0806);
    /// IEEE 802.1Q VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IEEE 802.1ad service tag (QinQ outer tag).
    pub const QINQ: EtherType = EtherType(0x88A8);
    /// Pre-standard QinQ outer tag still emitted by some switches.
    pub const QINQ_OLD: EtherType = EtherType(0x9100);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86DD);

    /// Whether a VLAN tag (of any flavour) follows instead of a payload.
    pub const fn is_vlan(self) -> bool {
        matches!(self.0, 0x8100 | 0x88A8 | 0x9100)
    }

    /// Short lowercase name for known values.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0800 => "ipv4",
            0x0806 => "arp",
            0x8100 => "vlan",
            0x88A8 => "qinq",
            0x9100 => "qinq_old",
            0x86DD => "ipv6",
            _ => return None,
        })
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:04x}", self.0),
        }
    }
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EtherType({self})")
    }
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        EtherType(v)
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> Self {
        v.0
    }
}

mod field {
    use core::ops::{Range, RangeFrom};
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// An Ethernet II frame (no FCS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of the untagged header.
    pub const HEADER_LEN: usize = 14;

    /// Wraps a buffer without checking it; accessors may panic if it is too
    /// short. Meant for writers that size the buffer themselves.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer after checking that every accessor is in bounds.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks that the buffer holds a whole header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination address.
    pub fn dst_addr(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Source address.
    pub fn src_addr(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// EtherType (a VLAN TPID if the frame is tagged).
    pub fn ethertype(&self) -> EtherType {
        let b = self.buffer.as_ref();
        EtherType(u16::from_be_bytes([b[12], b[13]]))
    }

    /// Everything after the 14-byte header (VLAN tags included, if any).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ty: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ty.0.to_be_bytes());
    }

    /// Mutable access to everything after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// [`payload`](EthernetFrame::payload) with the buffer's lifetime rather than the
    /// view's, so the view can be a temporary.
    pub fn into_payload(self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        b.get(field::PAYLOAD).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ARP request from 52:54:00:12:34:56 for 10.0.0.1 (payload elided).
    const FRAME: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06,
    ];

    #[test]
    fn fields() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert!(f.payload().is_empty());
    }

    #[test]
    fn truncations() {
        for n in 0..FRAME.len() {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME[..n]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 20];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        f.set_dst_addr(MacAddr([1, 2, 3, 4, 5, 6]));
        f.set_src_addr(MacAddr([7, 8, 9, 10, 11, 12]));
        f.set_ethertype(EtherType::IPV6);
        f.payload_mut().fill(0xaa);
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(f.src_addr(), MacAddr([7, 8, 9, 10, 11, 12]));
        assert_eq!(f.ethertype(), EtherType::IPV6);
        assert_eq!(f.payload(), &[0xaa; 6]);
    }

    #[test]
    fn display() {
        assert_eq!(
            MacAddr([0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]).to_string(),
            "de:ad:be:ef:00:01"
        );
        assert_eq!(EtherType::IPV4.to_string(), "ipv4");
        assert_eq!(EtherType(0x1234).to_string(), "0x1234");
        assert!(EtherType::QINQ.is_vlan() && EtherType::QINQ_OLD.is_vlan());
        assert!(!EtherType::IPV6.is_vlan());
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert_eq!(MacAddr::from_bytes(&[1, 2, 3]), None);
    }
}
