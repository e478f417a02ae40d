//! IEEE 802.1Q / 802.1ad VLAN tags.
//!
//! The view starts *after* the TPID (which lives in the preceding
//! EtherType field), so it covers the TCI and the encapsulated EtherType.

use crate::error::{EmitError, Error, Result};
use crate::ethernet::EtherType;

/// A 4-byte VLAN tag: TCI followed by the inner EtherType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Length of the tag as seen by this view.
    pub const HEADER_LEN: usize = 4;

    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole tag.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// Checks that the buffer holds a whole tag.
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

    /// The raw tag control information.
    pub fn tci(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType of what follows the tag (another TPID for QinQ).
    pub fn ethertype(&self) -> EtherType {
        let b = self.buffer.as_ref();
        EtherType(u16::from_be_bytes([b[2], b[3]]))
    }

    /// Everything after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the raw TCI.
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[0..2].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the priority (only the low 3 bits are used).
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & 0x1fff) | (u16::from(pcp & 0x7) << 13);
        self.set_tci(tci);
    }

    /// Sets the drop eligible indicator.
    pub fn set_dei(&mut self, dei: bool) {
        let tci = (self.tci() & !0x1000) | if dei { 0x1000 } else { 0 };
        self.set_tci(tci);
    }

    /// Sets the VLAN id (only the low 12 bits are used).
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & 0xf000) | (vid & 0x0fff);
        self.set_tci(tci);
    }

    /// Sets the encapsulated EtherType.
    pub fn set_ethertype(&mut self, ty: EtherType) {
        self.buffer.as_mut()[2..4].copy_from_slice(&ty.0.to_be_bytes());
    }

    /// Mutable access to everything after the tag.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VlanTag<&'a T> {
    /// [`payload`](VlanTag::payload) with the buffer's lifetime rather than the
    /// view's, so the view can be a temporary.
    pub fn into_payload(self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        b.get(Self::HEADER_LEN..).unwrap_or_default()
    }
}

/// One 802.1Q/802.1ad tag as written: the TPID that announces it and its TCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanRepr {
    /// The EtherType announcing the tag (0x8100, 0x88a8, 0x9100).
    pub tpid: EtherType,
    /// Priority (3 bits), drop eligibility (1 bit) and VLAN id (12 bits).
    pub tci: u16,
}

impl VlanRepr {
    /// An 802.1Q tag (TPID 0x8100) with priority 0 carrying `vid`, which must fit 12 bits.
    pub const fn dot1q(vid: u16) -> core::result::Result<VlanRepr, EmitError> {
        if vid > 0x0fff {
            return Err(EmitError::BadVlanId(vid));
        }
        Ok(VlanRepr {
            tpid: EtherType::VLAN,
            tci: vid,
        })
    }

    /// The VLAN id.
    pub const fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        // PCP 5, DEI 1, VID 0x123, then IPv4.
        let tag = [0xb1, 0x23, 0x08, 0x00, 0x45];
        let t = VlanTag::new_checked(&tag[..]).unwrap();
        assert_eq!(t.pcp(), 5);
        assert!(t.dei());
        assert_eq!(t.vid(), 0x123);
        assert_eq!(t.ethertype(), EtherType::IPV4);
        assert_eq!(t.payload(), &[0x45]);
        for n in 0..4 {
            assert_eq!(VlanTag::new_checked(&tag[..n]), Err(Error::Truncated));
        }
    }

    #[test]
    fn setters_preserve_neighbours() {
        let mut buf = [0u8; 4];
        let mut t = VlanTag::new_unchecked(&mut buf[..]);
        t.set_vid(0xfff);
        t.set_pcp(7);
        t.set_dei(true);
        t.set_vid(42);
        t.set_ethertype(EtherType::IPV6);
        assert_eq!(t.pcp(), 7);
        assert!(t.dei());
        assert_eq!(t.vid(), 42);
        t.set_dei(false);
        t.set_pcp(0);
        assert_eq!(t.tci(), 42);
        assert_eq!(buf, [0x00, 0x2a, 0x86, 0xdd]);
    }
}
