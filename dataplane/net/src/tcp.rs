//! TCP segments (RFC 9293) and their options.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::{check_room, EmitError, Error, Result};
use crate::ip::{self, IpAddrs, IpProtocol};

/// TCP control bits, NS included (hence 16 bits wide).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x001);
    /// Synchronise sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x002);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x004);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x008);
    /// Acknowledgment field significant.
    pub const ACK: TcpFlags = TcpFlags(0x010);
    /// Urgent pointer field significant.
    pub const URG: TcpFlags = TcpFlags(0x020);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x040);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x080);
    /// ECN nonce (historic, RFC 3540).
    pub const NS: TcpFlags = TcpFlags(0x100);

    const ALL_BITS: u16 = 0x1ff;
    const LETTERS: [(TcpFlags, char); 9] = [
        (Self::FIN, 'F'),
        (Self::SYN, 'S'),
        (Self::RST, 'R'),
        (Self::PSH, 'P'),
        (Self::ACK, 'A'),
        (Self::URG, 'U'),
        (Self::ECE, 'E'),
        (Self::CWR, 'C'),
        (Self::NS, 'N'),
    ];

    /// No flags.
    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    /// Keeps only the nine defined bits.
    pub const fn from_bits_truncate(bits: u16) -> TcpFlags {
        TcpFlags(bits & Self::ALL_BITS)
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag in `other` is set.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Sets the flags in `other`.
    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    /// Clears the flags in `other`.
    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

/// One letter per set flag in FSRPAUECN order, e.g. "SA" for SYN+ACK; the
/// empty set prints as nothing.
impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (flag, letter) in Self::LETTERS {
            if self.contains(flag) {
                fmt::Write::write_char(f, letter)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self})")
    }
}

/// SACK blocks of a SACK option, as `(left edge, right edge)` pairs.
///
/// Borrows the option bytes, whose length is guaranteed to be a multiple of 8.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SackBlocks<'a> {
    data: &'a [u8],
}

impl<'a> SackBlocks<'a> {
    /// Wraps option data; `None` unless its length is a non-zero multiple of 8.
    pub fn new(data: &'a [u8]) -> Option<Self> {
        (!data.is_empty() && data.len() % 8 == 0).then_some(SackBlocks { data })
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.data.len() / 8
    }

    /// Whether there are no blocks (never true for a parsed option).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The raw option data.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Iterates over the blocks.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.data.chunks_exact(8).map(|c| {
            (
                u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
    }
}

impl fmt::Debug for SackBlocks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: end of the option list; what follows is padding.
    EndOfList,
    /// Kind 1: padding.
    NoOp,
    /// Kind 2: maximum segment size.
    Mss(u16),
    /// Kind 3: window scale shift count.
    WindowScale(u8),
    /// Kind 4: SACK permitted.
    SackPermitted,
    /// Kind 5: selective acknowledgment blocks.
    Sack(SackBlocks<'a>),
    /// Kind 8: timestamps.
    Timestamps {
        /// Sender's timestamp value.
        tsval: u32,
        /// Echoed timestamp.
        tsecr: u32,
    },
    /// Any other kind, with its data (the bytes after kind and length).
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data.
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// Bytes this option occupies on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOp => 1,
            TcpOption::Mss(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(b) => 2 + b.as_bytes().len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `buf`, returning its length, so
    /// generators can lay out an option list.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.wire_len();
        let out = buf.get_mut(..len).ok_or(Error::Truncated)?;
        match *self {
            TcpOption::EndOfList => out[0] = 0,
            TcpOption::NoOp => out[0] = 1,
            TcpOption::Mss(v) => {
                out[..2].copy_from_slice(&[2, 4]);
                out[2..].copy_from_slice(&v.to_be_bytes());
            }
            TcpOption::WindowScale(v) => out.copy_from_slice(&[3, 3, v]),
            TcpOption::SackPermitted => out.copy_from_slice(&[4, 2]),
            TcpOption::Sack(b) => {
                let l = u8::try_from(len).map_err(|_| Error::Malformed)?;
                out[..2].copy_from_slice(&[5, l]);
                out[2..].copy_from_slice(b.as_bytes());
            }
            TcpOption::Timestamps { tsval, tsecr } => {
                out[..2].copy_from_slice(&[8, 10]);
                out[2..6].copy_from_slice(&tsval.to_be_bytes());
                out[6..].copy_from_slice(&tsecr.to_be_bytes());
            }
            TcpOption::Unknown { kind, data } => {
                let l = u8::try_from(len).map_err(|_| Error::Malformed)?;
                out[..2].copy_from_slice(&[kind, l]);
                out[2..].copy_from_slice(data);
            }
        }
        Ok(len)
    }
}

/// Iterator over the options of a segment.
///
/// Yields `Err` once and then ends if an option is truncated or has an
/// impossible length, so a hostile option list can neither panic nor loop.
/// Ends after [`TcpOption::EndOfList`].
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// Iterates over a raw option area.
    pub fn new(options: &'a [u8]) -> Self {
        TcpOptions { rest: options }
    }

    fn next_option(&mut self) -> Result<TcpOption<'a>> {
        let (&kind, after_kind) = self.rest.split_first().ok_or(Error::Truncated)?;
        match kind {
            0 => {
                self.rest = &[];
                return Ok(TcpOption::EndOfList);
            }
            1 => {
                self.rest = after_kind;
                return Ok(TcpOption::NoOp);
            }
            _ => {}
        }
        let &len = after_kind.first().ok_or(Error::Truncated)?;
        let len = usize::from(len);
        if len < 2 {
            return Err(Error::Malformed);
        }
        let whole = self.rest.get(..len).ok_or(Error::Truncated)?;
        let data = &whole[2..];
        let opt = match (kind, data.len()) {
            (2, 2) => TcpOption::Mss(u16::from_be_bytes([data[0], data[1]])),
            (3, 1) => TcpOption::WindowScale(data[0]),
            (4, 0) => TcpOption::SackPermitted,
            (5, _) => TcpOption::Sack(SackBlocks::new(data).ok_or(Error::Malformed)?),
            (8, 8) => TcpOption::Timestamps {
                tsval: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                tsecr: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            },
            (2..=4 | 8, _) => return Err(Error::Malformed),
            _ => TcpOption::Unknown { kind, data },
        };
        self.rest = &self.rest[len..];
        Ok(opt)
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.next_option();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

impl core::iter::FusedIterator for TcpOptions<'_> {}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DOFF_FLAGS: usize = 12;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// A TCP segment. The buffer is taken to be exactly the segment (the IP
/// payload), which is what the checksum covers.
///
/// `new_checked` guarantees `20 <= header_len() <= buffer length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Wraps a buffer without checking it (for writers).
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer after validating the data offset.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the fixed header and the options fit.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.data_offset() < 5 {
            return Err(Error::Malformed);
        }
        if self.header_len() > len {
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

    fn u32_at(&self, i: usize) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        self.u32_at(field::SEQ)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        self.u32_at(field::ACK)
    }

    /// Data offset in 32-bit words.
    pub fn data_offset(&self) -> u8 {
        self.buffer.as_ref()[field::DOFF_FLAGS] >> 4
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits_truncate(self.u16_at(field::DOFF_FLAGS))
    }

    /// Receive window (unscaled).
    pub fn window_len(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }

    /// Checksum as on the wire.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        self.u16_at(field::URGENT)
    }

    /// Raw option bytes.
    pub fn options_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(Self::MIN_HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// Iterates over the options.
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options_bytes())
    }

    /// Segment data after the header.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(self.header_len()..).unwrap_or_default()
    }

    /// Segment length for the pseudo header: the view spans exactly the
    /// segment.
    fn segment_len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    /// Whether the checksum is correct for the given IPv4 endpoints.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let Ok(len) = u16::try_from(self.segment_len()) else {
            return false;
        };
        let ph = ip::pseudo_header_v4(src, dst, IpProtocol::TCP, len);
        checksum::verify(ph, self.buffer.as_ref())
    }

    /// Whether the checksum is correct for the given IPv6 endpoints.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let Ok(len) = u32::try_from(self.segment_len()) else {
            return false;
        };
        let ph = ip::pseudo_header_v6(src, dst, IpProtocol::TCP, len);
        checksum::verify(ph, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn set_u16_at(&mut self, i: usize, v: u16) {
        self.buffer.as_mut()[i..i + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn set_u32_at(&mut self, i: usize, v: u32) {
        self.buffer.as_mut()[i..i + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        self.set_u16_at(field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_u16_at(field::DST_PORT, v);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        self.set_u32_at(field::SEQ, v);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        self.set_u32_at(field::ACK, v);
    }

    /// Sets the header length in bytes; must be a multiple of 4 in 20..=60.
    pub fn set_header_len(&mut self, bytes: usize) {
        let b = &mut self.buffer.as_mut()[field::DOFF_FLAGS];
        *b = (*b & 0x0f) | (((bytes / 4) as u8) << 4);
    }

    /// Sets all control bits (the data offset is preserved).
    pub fn set_flags(&mut self, flags: TcpFlags) {
        let raw = self.u16_at(field::DOFF_FLAGS);
        let v = (raw & !TcpFlags::ALL_BITS) | (flags.0 & TcpFlags::ALL_BITS);
        self.set_u16_at(field::DOFF_FLAGS, v);
    }

    /// Sets the receive window.
    pub fn set_window_len(&mut self, v: u16) {
        self.set_u16_at(field::WINDOW, v);
    }

    /// Sets the checksum field verbatim.
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, v: u16) {
        self.set_u16_at(field::URGENT, v);
    }

    /// Mutable option area, sized by the current header length; fill it with
    /// [`TcpOption::emit`].
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer
            .as_mut()
            .get_mut(Self::MIN_HEADER_LEN..end)
            .unwrap_or_default()
    }

    /// Mutable segment data.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or_default()
    }

    /// Computes the checksum over the whole buffer with an IPv4 pseudo header.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = u16::try_from(self.segment_len()).unwrap_or(u16::MAX);
        self.finish_checksum(ip::pseudo_header_v4(src, dst, IpProtocol::TCP, len));
    }

    /// Computes the checksum over the whole buffer with an IPv6 pseudo header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let len = u32::try_from(self.segment_len()).unwrap_or(u32::MAX);
        self.finish_checksum(ip::pseudo_header_v6(src, dst, IpProtocol::TCP, len));
    }

    /// Computes the checksum over the whole buffer, given the pseudo header's partial sum.
    fn finish_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::combine(
            pseudo,
            checksum::sum(self.buffer.as_ref()),
        ));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// [`payload`](TcpPacket::payload) with the buffer's lifetime rather than the
    /// view's, so the view can be a temporary.
    pub fn into_payload(self) -> &'a [u8] {
        let b: &'a [u8] = T::as_ref(self.buffer);
        b.get(self.header_len()..).unwrap_or_default()
    }

    /// [`options`](TcpPacket::options) with the buffer's lifetime.
    pub fn into_options(self) -> TcpOptions<'a> {
        let b: &'a [u8] = T::as_ref(self.buffer);
        TcpOptions::new(
            b.get(Self::MIN_HEADER_LEN..self.header_len())
                .unwrap_or_default(),
        )
    }
}

/// A TCP header, as emitted and parsed. The payload is whatever follows the header in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Receive window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// The options as on the wire (see [`TcpOption::emit`]): a whole number of 32-bit words, at most 40
    /// bytes.
    pub options: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// A header without options or urgent data.
    pub const fn new(
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        window: u16,
    ) -> Self {
        TcpRepr {
            src_port,
            dst_port,
            seq,
            ack,
            flags,
            window,
            urgent: 0,
            options: &[],
        }
    }

    /// Length of the emitted header.
    pub const fn header_len(&self) -> usize {
        TcpPacket::<&[u8]>::MIN_HEADER_LEN + self.options.len()
    }

    /// Reads the header of a checked segment.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &TcpPacket<&'a T>) -> TcpRepr<'a> {
        let buffer: &'a [u8] = T::as_ref(p.buffer);
        TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq_number(),
            ack: p.ack_number(),
            flags: p.flags(),
            window: p.window_len(),
            urgent: p.urgent_at(),
            options: buffer
                .get(TcpPacket::<&[u8]>::MIN_HEADER_LEN..p.header_len())
                .unwrap_or_default(),
        }
    }

    /// Writes the header at the start of `segment` (header and payload, the payload already in place) and
    /// the checksum over all of it with the pseudo header of `addrs`.
    pub fn emit(&self, segment: &mut [u8], addrs: &IpAddrs) -> core::result::Result<(), EmitError> {
        let options = self.options.len();
        if options % 4 != 0 || options > 40 {
            return Err(EmitError::BadTcpOptions(options));
        }
        let header_len = self.header_len();
        check_room(segment, header_len)?;
        let pseudo = addrs.pseudo_header(IpProtocol::TCP, segment.len())?;
        // The setters keep the reserved bits; a fresh header has them zero.
        segment[..header_len].fill(0);
        let mut tcp = TcpPacket::new_unchecked(segment);
        tcp.set_src_port(self.src_port);
        tcp.set_dst_port(self.dst_port);
        tcp.set_seq_number(self.seq);
        tcp.set_ack_number(self.ack);
        tcp.set_header_len(header_len);
        tcp.set_flags(self.flags);
        tcp.set_window_len(self.window);
        tcp.set_urgent_at(self.urgent);
        tcp.options_mut().copy_from_slice(self.options);
        tcp.finish_checksum(pseudo);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
