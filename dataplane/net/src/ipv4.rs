//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use crate::checksum;
use crate::error::{check_room, EmitError, Error, Result};
use crate::ip::IpProtocol;

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_MASK: u16 = 0x1fff;

/// An IPv4 packet.
///
/// `new_checked` guarantees `20 <= header_len() <= total_len() <= buffer
/// length`, so every getter is in bounds. The buffer may extend past
/// `total_len` (Ethernet pads short frames); [`payload`](Self::payload)
/// excludes that padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after validating version, IHL and total length.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_header()?;
        p.check_total_len()?;
        Ok(p)
    }

    /// Like [`new_checked`](Self::new_checked) but tolerates `total_len`
    /// exceeding the buffer, for the header quoted inside ICMP errors, which
    /// is cut after 8 bytes of payload. The payload is then cut at the end
    /// of the buffer.
    pub fn new_checked_quoted(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_header()?;
        if usize::from(p.total_len()) < p.header_len() {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    /// Checks version and IHL against the buffer.
    pub fn check_header(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 || self.ihl() < 5 {
            return Err(Error::Malformed);
        }
        if self.header_len() > b.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Checks that `header_len <= total_len <= buffer length`.
    pub fn check_total_len(&self) -> Result<()> {
        let total = usize::from(self.total_len());
        if total < self.header_len() {
            return Err(Error::Malformed);
        }
        if total > self.buffer.as_ref().len() {
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

    /// IP version (4 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in 32-bit words.
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// Differentiated services code point.
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits.
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Length of header plus payload.
    pub fn total_len(&self) -> u16 {
        self.u16_at(field::TOTAL_LEN)
    }

    /// Identification, used for fragment reassembly.
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the wire field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (self.u16_at(field::FLAGS_FRAG) & FRAG_MASK) << 3
    }

    /// Whether this is any fragment of a larger datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum as on the wire.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// Header options (empty unless IHL > 5).
    pub fn options(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(Self::MIN_HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// The header bytes, options included.
    pub fn header(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..self.header_len().min(b.len())]
    }

    /// The payload, bounded by `total_len` (so Ethernet padding is excluded)
    /// and by the buffer (which only matters for quoted headers).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let (start, end) = self.payload_range(b.len());
        &b[start..end]
    }

    fn payload_range(&self, buf_len: usize) -> (usize, usize) {
        let start = self.header_len().min(buf_len);
        let end = usize::from(self.total_len()).clamp(start, buf_len);
        (start, end)
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(0, self.header())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn set_u16_at(&mut self, i: usize, v: u16) {
        self.buffer.as_mut()[i..i + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the version nibble (normally 4).
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }

    /// Sets the header length in bytes; must be a multiple of 4 in 20..=60.
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP (low 6 bits used).
    pub fn set_dscp(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (v << 2);
    }

    /// Sets the ECN bits (low 2 bits used).
    pub fn set_ecn(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (v & 0x03);
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        self.set_u16_at(field::TOTAL_LEN, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        self.set_u16_at(field::IDENT, v);
    }

    /// Sets the don't-fragment flag.
    pub fn set_dont_frag(&mut self, v: bool) {
        let raw = self.u16_at(field::FLAGS_FRAG);
        self.set_u16_at(
            field::FLAGS_FRAG,
            if v { raw | FLAG_DF } else { raw & !FLAG_DF },
        );
    }

    /// Sets the more-fragments flag.
    pub fn set_more_frags(&mut self, v: bool) {
        let raw = self.u16_at(field::FLAGS_FRAG);
        self.set_u16_at(
            field::FLAGS_FRAG,
            if v { raw | FLAG_MF } else { raw & !FLAG_MF },
        );
    }

    /// Sets the fragment offset in bytes (rounded down to a multiple of 8).
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let raw = self.u16_at(field::FLAGS_FRAG);
        self.set_u16_at(field::FLAGS_FRAG, (raw & !FRAG_MASK) | (bytes >> 3));
    }

    /// Clears DF, MF, the reserved bit and the fragment offset.
    pub fn clear_flags(&mut self) {
        self.set_u16_at(field::FLAGS_FRAG, 0);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the payload protocol.
    pub fn set_protocol(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = v.0;
    }

    /// Sets the checksum field verbatim (see [`fill_checksum`](Self::fill_checksum)).
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(field::CHECKSUM, v);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&v.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&v.octets());
    }

    /// Mutable header options, sized by the current header length.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer
            .as_mut()
            .get_mut(Self::MIN_HEADER_LEN..end)
            .unwrap_or_default()
    }

    /// Mutable payload, bounded by the current header and total lengths.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let (start, end) = self.payload_range(len);
        &mut self.buffer.as_mut()[start..end]
    }

    /// Recomputes the header checksum; call after the last header change.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// [`payload`](Ipv4Packet::payload) with the buffer's lifetime rather than the
    /// view's, so the view can be a temporary.
    pub fn into_payload(self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        let (start, end) = self.payload_range(b.len());
        &b[start..end]
    }
}

/// An option-less IPv4 header, as emitted and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Length of the payload (total length less the header).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Differentiated services code point (6 bits).
    pub dscp: u8,
    /// Explicit congestion notification (2 bits).
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Length of the emitted header.
    pub const HEADER_LEN: usize = Ipv4Packet::<&[u8]>::MIN_HEADER_LEN;

    /// A header with TTL 64, DF set, identification 0, DSCP and ECN 0: an atomic datagram.
    pub const fn new(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
    ) -> Self {
        Ipv4Repr {
            src,
            dst,
            protocol,
            payload_len,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
    }

    /// Reads the header of a checked packet; options are skipped (the payload starts after them).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Ipv4Repr {
        Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()).saturating_sub(p.header_len()),
            ttl: p.ttl(),
            dscp: p.dscp(),
            ecn: p.ecn(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
        }
    }

    /// Writes the 20-byte header at the start of `buf`, checksum included. The payload is not touched.
    pub fn emit(&self, buf: &mut [u8]) -> core::result::Result<(), EmitError> {
        check_room(buf, Self::HEADER_LEN)?;
        let total = Self::HEADER_LEN + self.payload_len;
        let total = u16::try_from(total).map_err(|_| EmitError::TooLong(total))?;
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..Self::HEADER_LEN]);
        ip.set_version(4);
        ip.set_header_len(Self::HEADER_LEN);
        ip.set_dscp(self.dscp);
        ip.set_ecn(self.ecn);
        ip.set_total_len(total);
        ip.set_ident(self.ident);
        ip.clear_flags();
        ip.set_dont_frag(self.dont_frag);
        ip.set_more_frags(self.more_frags);
        ip.set_frag_offset(self.frag_offset);
        ip.set_ttl(self.ttl);
        ip.set_protocol(self.protocol);
        ip.set_src_addr(self.src);
        ip.set_dst_addr(self.dst);
        ip.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
