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
