//! Which segment a source address is in, for the per-segment flood limit: the most specific segment (longest
//! prefix) holding the address with the frame's VLAN, the first in document order among equally specific ones.
//! Built with the [`Ruleset`](crate::ruleset::Ruleset); asked only for new flows while the limit is on, with one
//! hash probe per prefix length the policy uses, allocating nothing.

use std::hash::BuildHasher;
use std::net::IpAddr;

use foldhash::fast::FixedState;
use hashbrown::HashMap;
use policy::Policy;

use crate::conntrack::SegmentKey;

/// Seed of the segment-name hash: fixed, so a segment has the same key in every policy version.
const NAME_SEED: u64 = 0x5e6_3e47;

/// One segment's identity and VLAN list.
#[derive(Debug)]
struct Member {
    key: SegmentKey,
    /// `None`: any frame, tagged or not.
    vlans: Option<Box<[u16]>>,
}

/// Source address → segment; see the module documentation.
#[derive(Debug, Default)]
pub struct SegmentIndex {
    /// Prefix lengths in use per family (IPv4, IPv6), longest first.
    lengths: [Vec<u8>; 2],
    /// (IPv6?, length, network bits) → the segments with that prefix, in document order.
    prefixes: HashMap<(bool, u8, u128), Vec<u32>>,
    members: Vec<Member>,
}

/// The network bits of `addr` under a prefix of `len` bits (of 32 for IPv4, 128 for IPv6).
fn network(bits: u128, width: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (u32::from(width - len)))
    }
}

fn bits(addr: IpAddr) -> (bool, u128, u8) {
    match addr {
        IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (true, u128::from(a), 128),
    }
}

impl SegmentIndex {
    /// The index of `policy`'s segments.
    pub fn new(policy: &Policy) -> Self {
        let names = FixedState::with_seed(NAME_SEED);
        let mut index = SegmentIndex::default();
        for (i, seg) in policy.segments().iter().enumerate() {
            index.members.push(Member {
                key: SegmentKey(names.hash_one(seg.name.as_str())),
                vlans: seg.vlans.as_ref().map(|v| v.clone().into_boxed_slice()),
            });
            for net in &seg.prefixes {
                let (v6, addr, width) = bits(net.addr());
                let len = net.prefix_len();
                let list = index
                    .prefixes
                    .entry((v6, len, network(addr, width, len)))
                    .or_default();
                if !list.contains(&(i as u32)) {
                    list.push(i as u32);
                }
                let lengths = &mut index.lengths[usize::from(v6)];
                if !lengths.contains(&len) {
                    lengths.push(len);
                }
            }
        }
        for lengths in &mut index.lengths {
            lengths.sort_unstable_by(|a, b| b.cmp(a));
        }
        index
    }

    /// The segment of a source `addr` seen with outer VLAN `vlan` (0: untagged).
    pub fn segment_of(&self, addr: IpAddr, vlan: u16) -> Option<SegmentKey> {
        let (v6, bits, width) = bits(addr);
        for &len in &self.lengths[usize::from(v6)] {
            let Some(list) = self.prefixes.get(&(v6, len, network(bits, width, len))) else {
                continue;
            };
            let member = list.iter().map(|&i| &self.members[i as usize]).find(|m| {
                m.vlans
                    .as_ref()
                    .is_none_or(|vlans| vlan != 0 && vlans.contains(&vlan))
            });
            if let Some(m) = member {
                return Some(m.key);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_most_specific_segment_with_the_frames_vlan() {
        let policy = Policy::from_value(json!({
            "format": "bulkhead.policy/v1",
            "segments": [
                {"name": "zone", "prefixes": ["10.0.0.0/8", "fd00::/16"]},
                {"name": "plant", "prefixes": ["10.1.0.0/16"]},
                {"name": "plant-vlan", "prefixes": ["10.1.2.0/24"], "vlans": [7]},
                {"name": "everything", "prefixes": ["0.0.0.0/0"]}
            ],
            "services": [], "rules": []
        }))
        .unwrap();
        let index = SegmentIndex::new(&policy);
        let key = |name: &str| {
            let names = FixedState::with_seed(NAME_SEED);
            Some(SegmentKey(names.hash_one(name)))
        };
        let at = |a: &str, vlan| index.segment_of(a.parse().unwrap(), vlan);
        assert_eq!(at("10.1.2.3", 7), key("plant-vlan"));
        assert_eq!(at("10.1.2.3", 0), key("plant"));
        assert_eq!(at("10.1.2.3", 8), key("plant"));
        assert_eq!(at("10.9.0.1", 0), key("zone"));
        assert_eq!(at("192.0.2.1", 0), key("everything"));
        assert_eq!(at("fd00::1", 0), key("zone"));
        assert_eq!(at("2001:db8::1", 0), None);
        // The same name has the same key in another policy version.
        let other = Policy::from_value(json!({
            "format": "bulkhead.policy/v1",
            "segments": [{"name": "plant", "prefixes": ["192.168.0.0/16"]}],
            "services": [], "rules": []
        }))
        .unwrap();
        assert_eq!(
            SegmentIndex::new(&other).segment_of("192.168.1.1".parse().unwrap(), 0),
            key("plant")
        );
    }
}
