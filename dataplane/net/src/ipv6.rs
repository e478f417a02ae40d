//! IPv6 headers (RFC 8200) and a bounded extension-header walker.

use std::net::Ipv6Addr;

use crate::error::{check_room, EmitError, Error, Result};
use crate::ip::{Fragment, IpProtocol};

/// The walker gives up after this many extension headers. RFC 8200 allows
/// any number, but real traffic carries at most a handful and an unbounded
/// walk is a per-packet CPU amplification vector.
pub const MAX_EXT_HEADERS: usize = 8;

mod field {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// An IPv6 packet.
///
/// `new_checked` guarantees `40 + payload_len() <= buffer length`. Jumbograms
/// (payload length 0 plus a jumbo option) are not supported: their payload
/// reads as empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 40;

    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after validating version and payload length.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_checked_quoted(buffer)?;
        if Self::HEADER_LEN + usize::from(p.payload_len()) > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Like [`new_checked`](Self::new_checked) but tolerates a payload length
    /// beyond the buffer, for packets quoted (and cut) inside ICMPv6 errors.
    pub fn new_checked_quoted(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn word0(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    fn addr_at(&self, i: usize) -> Ipv6Addr {
        let b = self.buffer.as_ref();
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[i..i + 16]);
        Ipv6Addr::from(a)
    }

    /// IP version (6 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class (DSCP << 2 | ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        self.word0() & 0x000f_ffff
    }

    /// Length of everything after the fixed header.
    pub fn payload_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::PAYLOAD_LEN], b[field::PAYLOAD_LEN + 1]])
    }

    /// Type of the first extension header or of the upper-layer header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        self.addr_at(field::SRC)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.addr_at(field::DST)
    }

    fn payload_range(&self, buf_len: usize) -> (usize, usize) {
        let start = Self::HEADER_LEN.min(buf_len);
        let end = (Self::HEADER_LEN + usize::from(self.payload_len())).clamp(start, buf_len);
        (start, end)
    }

    /// Everything after the fixed header (extension headers included),
    /// bounded by `payload_len` so Ethernet padding is excluded.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let (start, end) = self.payload_range(b.len());
        &b[start..end]
    }

    /// Walks the extension-header chain; see [`walk_extension_headers`].
    /// Offsets in the result are relative to the start of this packet.
    pub fn walk_extension_headers(&self) -> core::result::Result<Ipv6Walk, Ipv6WalkError> {
        walk_extension_headers(self.next_header(), self.payload(), Self::HEADER_LEN)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_word0(&mut self, v: u32) {
        self.buffer.as_mut()[0..4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the version nibble (normally 6).
    pub fn set_version(&mut self, v: u8) {
        let w = (self.word0() & 0x0fff_ffff) | (u32::from(v & 0x0f) << 28);
        self.set_word0(w);
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, v: u8) {
        let w = (self.word0() & 0xf00f_ffff) | (u32::from(v) << 20);
        self.set_word0(w);
    }

    /// Sets the flow label (low 20 bits used).
    pub fn set_flow_label(&mut self, v: u32) {
        let w = (self.word0() & 0xfff0_0000) | (v & 0x000f_ffff);
        self.set_word0(w);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2]
            .copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = v.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, v: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&v.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, v: Ipv6Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&v.octets());
    }

    /// Mutable payload, bounded by the current payload length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let (start, end) = self.payload_range(len);
        &mut self.buffer.as_mut()[start..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Outcome of walking the extension-header chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Walk {
    /// The first non-extension header type (TCP, UDP, ICMPv6, ESP, No-Next,
    /// anything unknown). For non-first fragments this is the fragment
    /// header's next header, whose header is in the first fragment.
    pub upper_protocol: IpProtocol,
    /// Where that header starts (relative to the base passed to the walker).
    pub upper_offset: usize,
    /// The fragment header, if one was crossed.
    pub fragment: Option<Fragment>,
}

/// Why the extension-header chain could not be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Ipv6WalkError {
    /// An extension header runs past the payload.
    #[error("truncated IPv6 extension header")]
    Truncated,
    /// More than [`MAX_EXT_HEADERS`] extension headers.
    #[error("too many IPv6 extension headers")]
    TooManyHeaders,
    /// A hop-by-hop header anywhere but directly after the fixed header.
    #[error("IPv6 hop-by-hop header not first")]
    HopByHopNotFirst,
    /// A header whose length field is impossible (AH shorter than 12 bytes).
    #[error("malformed IPv6 extension header")]
    Malformed,
}

impl From<Ipv6WalkError> for Error {
    fn from(e: Ipv6WalkError) -> Self {
        match e {
            Ipv6WalkError::Truncated => Error::Truncated,
            _ => Error::Malformed,
        }
    }
}

/// Length of an IPv6 fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// Walks the extension headers in `payload` (the bytes after the fixed
/// header), starting with header type `next`.
///
/// Reported offsets are `base + position in payload`, so passing 40 gives
/// offsets from the start of the IPv6 header. The walk stops at the first
/// non-extension header, at ESP/No-Next-Header (whose contents are opaque)
/// and after the fragment header of a non-first fragment (the rest of the
/// chain lives in the first fragment).
pub fn walk_extension_headers(
    mut next: IpProtocol,
    payload: &[u8],
    base: usize,
) -> core::result::Result<Ipv6Walk, Ipv6WalkError> {
    let mut off = 0usize;
    let mut fragment = None;
    for count in 0..=MAX_EXT_HEADERS {
        let is_ext = matches!(
            next,
            IpProtocol::HOPOPT
                | IpProtocol::IPV6_ROUTE
                | IpProtocol::IPV6_OPTS
                | IpProtocol::IPV6_FRAG
                | IpProtocol::AH
        );
        if !is_ext {
            break;
        }
        if count == MAX_EXT_HEADERS {
            return Err(Ipv6WalkError::TooManyHeaders);
        }
        if next == IpProtocol::HOPOPT && count != 0 {
            return Err(Ipv6WalkError::HopByHopNotFirst);
        }
        let len = if next == IpProtocol::IPV6_FRAG {
            FRAGMENT_HEADER_LEN
        } else {
            let hdr_len = usize::from(*payload.get(off + 1).ok_or(Ipv6WalkError::Truncated)?);
            if next == IpProtocol::AH {
                // AH counts 4-byte units beyond the first two; anything
                // under 12 bytes cannot hold its own fixed fields.
                let len = (hdr_len + 2) * 4;
                if len < 12 {
                    return Err(Ipv6WalkError::Malformed);
                }
                len
            } else {
                (hdr_len + 1) * 8
            }
        };
        let hdr = payload
            .get(off..off + len)
            .ok_or(Ipv6WalkError::Truncated)?;
        let this = next;
        next = IpProtocol(hdr[0]);
        off += len;
        if this == IpProtocol::IPV6_FRAG {
            let frag = FragmentHeader::new_unchecked(hdr).fragment();
            fragment = Some(frag);
            if !frag.is_first() {
                // The rest of the chain and the upper-layer header live in
                // the first fragment.
                break;
            }
        }
    }
    Ok(Ipv6Walk {
        upper_protocol: next,
        upper_offset: base + off,
        fragment,
    })
}

/// A generic extension header with the common `next header, length` prefix
/// (hop-by-hop, routing, destination options), for writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        ExtHeader { buffer }
    }

    /// Wraps a buffer after checking it holds the whole header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let h = Self::new_unchecked(buffer);
        let b = h.buffer.as_ref();
        if b.len() < 2 || b.len() < h.header_len() {
            return Err(Error::Truncated);
        }
        Ok(h)
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Type of the following header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[0])
    }

    /// Header length in bytes (the wire field counts 8-byte units beyond
    /// the first 8).
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[1]) + 1) * 8
    }

    /// Option bytes after the 2-byte prefix.
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(2..self.header_len()).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ExtHeader<T> {
    /// Sets the next header.
    pub fn set_next_header(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[0] = v.0;
    }

    /// Sets the length in bytes; must be a multiple of 8 in 8..=2048.
    pub fn set_header_len(&mut self, bytes: usize) {
        self.buffer.as_mut()[1] = (bytes / 8).saturating_sub(1) as u8;
    }

    /// Mutable option bytes; fill with Pad1/PadN as needed.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer.as_mut().get_mut(2..end).unwrap_or_default()
    }
}

/// An 8-byte IPv6 fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        FragmentHeader { buffer }
    }

    /// Wraps a buffer after checking it holds the whole header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Type of the following header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[0])
    }

    fn off_flags(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        self.off_flags() & 0xfff8
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.off_flags() & 1 != 0
    }

    /// Identification.
    pub fn ident(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// All fragment fields at once.
    pub fn fragment(&self) -> Fragment {
        Fragment {
            offset: self.frag_offset(),
            more: self.more_frags(),
            ident: self.ident(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> FragmentHeader<T> {
    /// Sets the next header and clears the reserved byte.
    pub fn set_next_header(&mut self, v: IpProtocol) {
        let b = self.buffer.as_mut();
        b[0] = v.0;
        b[1] = 0;
    }

    /// Sets the offset in bytes (rounded down to a multiple of 8).
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let v = (self.off_flags() & 0x0007) | (bytes & 0xfff8);
        self.buffer.as_mut()[2..4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the more-fragments flag.
    pub fn set_more_frags(&mut self, more: bool) {
        let v = (self.off_flags() & !1) | u16::from(more);
        self.buffer.as_mut()[2..4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u32) {
        self.buffer.as_mut()[4..8].copy_from_slice(&v.to_be_bytes());
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// [`payload`](Ipv6Packet::payload) with the buffer's lifetime rather than the
    /// view's, so the view can be a temporary.
    pub fn into_payload(self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        let (start, end) = self.payload_range(b.len());
        &b[start..end]
    }
}

/// An IPv6 fixed header, as emitted and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Type of the first header after this one.
    pub next_header: IpProtocol,
    /// Length of everything after the fixed header.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Length of the emitted header.
    pub const HEADER_LEN: usize = Ipv6Packet::<&[u8]>::HEADER_LEN;

    /// A header with hop limit 64, traffic class and flow label 0.
    pub const fn new(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next_header: IpProtocol,
        payload_len: usize,
    ) -> Self {
        Ipv6Repr {
            src,
            dst,
            next_header,
            payload_len,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
    }

    /// Reads the fixed header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Ipv6Repr {
        Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        }
    }

    /// Writes the 40-byte fixed header at the start of `buf`. The payload is not touched.
    pub fn emit(&self, buf: &mut [u8]) -> core::result::Result<(), EmitError> {
        check_room(buf, Self::HEADER_LEN)?;
        let len =
            u16::try_from(self.payload_len).map_err(|_| EmitError::TooLong(self.payload_len))?;
        let mut ip = Ipv6Packet::new_unchecked(&mut buf[..Self::HEADER_LEN]);
        ip.set_version(6);
        ip.set_traffic_class(self.traffic_class);
        ip.set_flow_label(self.flow_label);
        ip.set_payload_len(len);
        ip.set_next_header(self.next_header);
        ip.set_hop_limit(self.hop_limit);
        ip.set_src_addr(self.src);
        ip.set_dst_addr(self.dst);
        Ok(())
    }
}

/// An IPv6 fragment header, as emitted and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6FragmentRepr {
    /// Type of the header the fragmented packet starts with.
    pub next_header: IpProtocol,
    /// Offset, more-fragments flag and identification.
    pub fragment: Fragment,
}

impl Ipv6FragmentRepr {
    /// Reads a checked fragment header.
    pub fn parse<T: AsRef<[u8]>>(h: &FragmentHeader<T>) -> Ipv6FragmentRepr {
        Ipv6FragmentRepr {
            next_header: h.next_header(),
            fragment: h.fragment(),
        }
    }

    /// Writes the 8-byte header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> core::result::Result<(), EmitError> {
        check_room(buf, FRAGMENT_HEADER_LEN)?;
        let buf = &mut buf[..FRAGMENT_HEADER_LEN];
        // The setters keep the reserved bits; a fresh header has them zero.
        buf.fill(0);
        let mut h = FragmentHeader::new_unchecked(buf);
        h.set_next_header(self.next_header);
        h.set_frag_offset(self.fragment.offset);
        h.set_more_frags(self.fragment.more);
        h.set_ident(self.fragment.ident);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
