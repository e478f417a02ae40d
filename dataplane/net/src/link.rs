//! The link layer as emitted and parsed: an Ethernet header with its VLAN tags. Apart from the views
//! ([`ethernet`](crate::ethernet), [`vlan`](crate::vlan)) because it uses both.

use crate::error::{check_room, EmitError, Result};
use crate::ethernet::{EtherType, EthernetFrame, MacAddr};
use crate::parse::MAX_VLAN_TAGS;
use crate::vlan::{VlanRepr, VlanTag};

/// An Ethernet header with up to [`MAX_VLAN_TAGS`] VLAN tags, as emitted and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// VLAN tags, outermost first; a `None` ends the list.
    pub vlans: [Option<VlanRepr>; MAX_VLAN_TAGS],
    /// EtherType of the payload, after the tags.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// An untagged header.
    pub const fn new(src: MacAddr, dst: MacAddr, ethertype: EtherType) -> EthernetRepr {
        EthernetRepr {
            dst,
            src,
            vlans: [None; MAX_VLAN_TAGS],
            ethertype,
        }
    }

    /// The tags present, outermost first.
    pub fn tags(&self) -> impl Iterator<Item = VlanRepr> + '_ {
        self.vlans.iter().map_while(|t| *t)
    }

    /// Length of the header and tags: where the payload starts.
    pub fn header_len(&self) -> usize {
        EthernetFrame::<&[u8]>::HEADER_LEN + VlanTag::<&[u8]>::HEADER_LEN * self.tags().count()
    }

    /// Reads the header of `frame` and up to [`MAX_VLAN_TAGS`] tags. A frame with more tags reports the
    /// TPID of the next one as its EtherType.
    pub fn parse(frame: &[u8]) -> Result<EthernetRepr> {
        let eth = EthernetFrame::new_checked(frame)?;
        let mut repr = EthernetRepr::new(eth.src_addr(), eth.dst_addr(), eth.ethertype());
        let mut rest = eth.payload();
        for slot in &mut repr.vlans {
            if !repr.ethertype.is_vlan() {
                break;
            }
            let tag = VlanTag::new_checked(rest)?;
            *slot = Some(VlanRepr {
                tpid: repr.ethertype,
                tci: tag.tci(),
            });
            repr.ethertype = tag.ethertype();
            rest = tag.into_payload();
        }
        Ok(repr)
    }

    /// Writes the header and tags at the start of `buf`; returns their length (where the payload goes).
    pub fn emit(&self, buf: &mut [u8]) -> core::result::Result<usize, EmitError> {
        let len = self.header_len();
        check_room(buf, len)?;
        let mut eth = EthernetFrame::new_unchecked(&mut *buf);
        eth.set_dst_addr(self.dst);
        eth.set_src_addr(self.src);
        let mut tags = self.tags().peekable();
        eth.set_ethertype(tags.peek().map_or(self.ethertype, |t| t.tpid));
        let mut at = EthernetFrame::<&[u8]>::HEADER_LEN;
        while let Some(t) = tags.next() {
            let mut tag = VlanTag::new_unchecked(&mut buf[at..]);
            tag.set_tci(t.tci);
            tag.set_ethertype(tags.peek().map_or(self.ethertype, |n| n.tpid));
            at += VlanTag::<&[u8]>::HEADER_LEN;
        }
        Ok(len)
    }
}
