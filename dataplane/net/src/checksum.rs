//! Internet checksum (RFC 1071) helpers.
//!
//! The checksum is computed in two steps so callers can combine pieces
//! (pseudo header + segment) without copying: [`sum`] produces a partial
//! one's-complement sum, partial sums are added with [`combine`], and
//! [`finish`] folds and complements the result into the on-wire value.

/// Partial one's-complement sum of `data` read as big-endian 16-bit words.
///
/// An odd trailing byte is padded with a zero low byte, as RFC 1071 requires.
/// The result is already folded to at most 16 significant bits, so any number
/// of partial sums can be added with [`combine`] without overflow concerns.
pub fn sum(data: &[u8]) -> u32 {
    // A u64 accumulator cannot overflow for any buffer that fits in memory
    // (2^48 words), so the hot loop needs no carry handling.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) + (w & 0xffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop above leaves at most 16 significant bits.
    acc as u32
}

/// Adds two partial sums, keeping the result folded.
pub fn combine(a: u32, b: u32) -> u32 {
    // Widen so that even unfolded inputs cannot lose a carry.
    let mut s = u64::from(a) + u64::from(b);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

/// Folds the carries of a partial sum into 16 bits (not complemented).
pub fn fold(sum: u32) -> u16 {
    let mut s = sum;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Folds and complements a partial sum into the value that goes on the wire.
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// The complete internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Whether `data` (checksum field included) plus `initial` sums to all-ones,
/// which is how a received checksum is validated.
pub fn verify(initial: u32, data: &[u8]) -> bool {
    fold(combine(initial, sum(data))) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference used to check the fast path.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for (i, &b) in data.iter().enumerate() {
            acc += if i % 2 == 0 {
                u64::from(b) << 8
            } else {
                u64::from(b)
            };
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // The worked example in RFC 1071 section 3.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn odd_lengths() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0x01]), 0x0100);
        assert_eq!(fold(sum(&[0xff, 0xff, 0xff])), 0xff00);
        // Nine bytes exercise the 8-byte loop plus an odd tail.
        let data = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(fold(sum(&data)), reference(&data));
    }

    #[test]
    fn no_overflow_on_large_buffers() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(fold(sum(&data)), 0xffff);
        assert_eq!(fold(combine(u32::MAX, u32::MAX)), reference(&[0xff; 16]));
    }

    #[test]
    fn verify_round_trip() {
        let mut data =
            *b"\x45\x00\x00\x1c\x00\x00\x00\x00\x40\x11\x00\x00\x0a\x00\x00\x01\x0a\x00\x00\x02";
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verify(0, &data));
        data[0] ^= 1;
        assert!(!verify(0, &data));
    }

    proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let s = sum(&data);
            prop_assert!(s <= 0xffff);
            prop_assert_eq!(fold(s), reference(&data));
        }

        #[test]
        fn combines_at_even_split(data in proptest::collection::vec(any::<u8>(), 0..300), split in 0usize..150) {
            let at = (split * 2).min(data.len() & !1);
            let (a, b) = data.split_at(at);
            prop_assert_eq!(fold(combine(sum(a), sum(b))), reference(&data));
        }
    }
}
