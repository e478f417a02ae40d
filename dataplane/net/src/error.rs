//! The error type shared by all packet views.

/// Why a view refused a buffer.
///
/// Deliberately tiny and `Copy`: views are built per packet, so errors must
/// be free to construct and pass around. The per-packet parser
/// ([`crate::parse()`]) reports more precise reasons via
/// [`crate::ParseError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field claims).
    #[error("buffer truncated")]
    Truncated,
    /// A field holds a value the format does not allow.
    #[error("malformed header")]
    Malformed,
}

/// Result alias for view constructors and fallible helpers.
pub type Result<T> = core::result::Result<T, Error>;

/// Why a header could not be emitted. Checked before anything is written, so a failed emit leaves the
/// buffer as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EmitError {
    /// The buffer cannot hold what the header describes.
    #[error("{len}-byte buffer is too short for {needed} bytes")]
    BufferTooShort {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        len: usize,
    },
    /// A length does not fit its header field.
    #[error("length {0} does not fit the header's length field")]
    TooLong(usize),
    /// A VLAN id above 4095.
    #[error("VLAN id {0} does not fit in 12 bits")]
    BadVlanId(u16),
    /// TCP options that are not a whole number of 32-bit words, or longer than 40 bytes.
    #[error("{0} bytes of TCP options are not a whole number of words up to 40")]
    BadTcpOptions(usize),
}

/// Fails with [`EmitError::BufferTooShort`] unless `buf` holds `needed` bytes.
pub(crate) fn check_room(buf: &[u8], needed: usize) -> core::result::Result<(), EmitError> {
    if buf.len() < needed {
        return Err(EmitError::BufferTooShort {
            needed,
            len: buf.len(),
        });
    }
    Ok(())
}
