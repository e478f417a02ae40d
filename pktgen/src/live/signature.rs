//! The stamp a sent packet carries at the start of its transport payload:
//!
//! ```text
//! 0      4              12             20     22
//! | "BHpg" | seq (u64 BE) | tsc (u64 BE) | fix |
//! ```
//!
//! `fix` makes the stamp checksum-neutral: the one's-complement sum of the
//! 22 bytes equals that of the bytes they replace, so the TCP/UDP/ICMP
//! checksum of the original packet stays valid without locating or
//! recomputing it (the payload starts at an even offset from the transport
//! header, so the 16-bit words line up). A packet whose payload is shorter
//! than [`LEN`] (a 64-byte TCP or UDP frame, say), a fragment, or a frame
//! that does not parse carries no stamp; see [`super::recorder`] for how
//! those are matched.

use net::checksum;
use net::parse::{parse, Parsed, L3, L4};

/// The stamp's first bytes.
pub const MAGIC: [u8; 4] = *b"BHpg";
/// Bytes a stamp takes.
pub const LEN: usize = 22;

/// What a stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number (trial in the top 16 bits, packet number below).
    pub seq: u64,
    /// TSC when the packet was built for transmission.
    pub tsc: u64,
}

/// Where a stamp fits in `frame`: the offset of the transport payload, if
/// the frame is an unfragmented TCP, UDP, ICMP or ICMPv6 packet whose
/// payload (as the IP length says, within the frame) holds [`LEN`] bytes.
pub fn slot(frame: &[u8]) -> Option<usize> {
    slot_parsed(&parse(frame).ok()?, frame)
}

/// [`slot`] for a frame already parsed into `p`.
pub fn slot_parsed(p: &Parsed, frame: &[u8]) -> Option<usize> {
    let l4 = p.l4_offset?;
    let ip_end = match p.l3 {
        L3::Ipv4 { frag: None, .. } => {
            let total = u16::from_be_bytes([frame[p.l3_offset + 2], frame[p.l3_offset + 3]]);
            p.l3_offset + usize::from(total)
        }
        L3::Ipv6 { frag: None, .. } => {
            let len = u16::from_be_bytes([frame[p.l3_offset + 4], frame[p.l3_offset + 5]]);
            p.l3_offset + 40 + usize::from(len)
        }
        _ => return None,
    };
    let header = match p.l4 {
        L4::Tcp { .. } => usize::from(frame.get(l4 + 12)? >> 4) * 4,
        L4::Udp { .. } | L4::Icmp { .. } | L4::Icmpv6 { .. } => 8,
        L4::None => return None,
    };
    let start = l4 + header;
    let end = ip_end.min(frame.len());
    (end >= start + LEN).then_some(start)
}

/// The one's-complement sum (folded) of the bytes a stamp at `off` replaces.
pub fn original_sum(frame: &[u8], off: usize) -> u16 {
    checksum::fold(checksum::sum(&frame[off..off + LEN]))
}

/// Writes `stamp` at `off`, balanced against `orig_sum` (from
/// [`original_sum`] on the unstamped frame) so the packet's checksum holds.
pub fn write(frame: &mut [u8], off: usize, orig_sum: u16, stamp: Stamp) {
    let s = &mut frame[off..off + LEN];
    s[..4].copy_from_slice(&MAGIC);
    s[4..12].copy_from_slice(&stamp.seq.to_be_bytes());
    s[12..20].copy_from_slice(&stamp.tsc.to_be_bytes());
    // orig - sum(first 20) in one's complement arithmetic: adding the
    // complement subtracts.
    let head = checksum::fold(checksum::sum(&s[..20]));
    let fix = checksum::fold(checksum::combine(u32::from(orig_sum), u32::from(!head)));
    s[20..22].copy_from_slice(&fix.to_be_bytes());
}

/// Reads the stamp of a received frame, if it carries one.
pub fn read(frame: &[u8]) -> Option<Stamp> {
    let off = slot(frame)?;
    read_at(frame, off)
}

/// Reads a stamp at a known offset.
pub fn read_at(frame: &[u8], off: usize) -> Option<Stamp> {
    let s = frame.get(off..off + LEN)?;
    if s[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_be_bytes(s[4..12].try_into().ok()?);
    let tsc = u64::from_be_bytes(s[12..20].try_into().ok()?);
    Some(Stamp { seq, tsc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{FlowSet, FlowsConfig};
    use crate::frame::L4Proto;
    use net::ipv4::Ipv4Packet;
    use net::ipv6::Ipv6Packet;
    use net::tcp::TcpPacket;
    use net::udp::UdpPacket;

    fn frames(proto: L4Proto, ipv6: bool, frame_size: usize) -> Vec<Vec<u8>> {
        let set = FlowSet::new(&FlowsConfig {
            flows: 8,
            frame_size,
            proto,
            ipv6,
            ..FlowsConfig::default()
        })
        .unwrap();
        let mut out = Vec::new();
        set.for_each_frame(|f| {
            out.push(f.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    fn l4_checksum_ok(frame: &[u8]) -> bool {
        let p = parse(frame).unwrap();
        match (p.l3, p.l4) {
            (L3::Ipv4 { src, dst, .. }, L4::Udp { .. }) => {
                let ip = Ipv4Packet::new_checked(&frame[p.l3_offset..]).unwrap();
                UdpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum_v4(src, dst)
            }
            (L3::Ipv4 { src, dst, .. }, L4::Tcp { .. }) => {
                let ip = Ipv4Packet::new_checked(&frame[p.l3_offset..]).unwrap();
                TcpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum_v4(src, dst)
            }
            (L3::Ipv6 { src, dst, .. }, L4::Udp { .. }) => {
                let ip = Ipv6Packet::new_checked(&frame[p.l3_offset..]).unwrap();
                UdpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum_v6(src, dst)
            }
            (L3::Ipv6 { src, dst, .. }, L4::Tcp { .. }) => {
                let ip = Ipv6Packet::new_checked(&frame[p.l3_offset..]).unwrap();
                TcpPacket::new_checked(ip.payload())
                    .unwrap()
                    .verify_checksum_v6(src, dst)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn stamps_round_trip_and_keep_checksums_valid() {
        for proto in [L4Proto::Tcp, L4Proto::Udp] {
            for ipv6 in [false, true] {
                for f in frames(proto, ipv6, 200) {
                    assert!(l4_checksum_ok(&f));
                    let off = slot(&f).expect("a 200-byte frame has room");
                    let orig = original_sum(&f, off);
                    for (i, (seq, tsc)) in [(0, 0), (u64::MAX, 1), (0x1234_5678_9abc, u64::MAX)]
                        .into_iter()
                        .enumerate()
                    {
                        let mut g = f.clone();
                        write(&mut g, off, orig, Stamp { seq, tsc });
                        assert_eq!(read(&g), Some(Stamp { seq, tsc }), "case {i}");
                        assert!(l4_checksum_ok(&g), "{proto:?} v6={ipv6} case {i}");
                        assert_eq!(g[..off], f[..off], "headers untouched");
                    }
                }
            }
        }
    }

    #[test]
    fn minimum_size_frames_have_no_slot() {
        for proto in [L4Proto::Tcp, L4Proto::Udp] {
            for f in frames(proto, false, 64) {
                assert_eq!(slot(&f), None);
                assert_eq!(read(&f), None);
            }
        }
        assert_eq!(slot(&[]), None);
        assert_eq!(slot(&[0u8; 100]), None);
    }

    #[test]
    fn unstamped_payload_is_not_read_as_a_stamp() {
        let f = frames(L4Proto::Udp, false, 200).remove(0);
        assert_eq!(read(&f), None);
    }
}
