//! The generator's error type.

use std::io;
use std::path::PathBuf;

/// Anything that stops a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line argument (named as on the command line, e.g.
    /// `--frame-size`) is unusable, alone or combined with others.
    #[error("invalid value for '{arg}': {reason}")]
    InvalidArgument {
        /// The argument, e.g. `--frame-size`.
        arg: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} '{}': {source}", path.display())]
    Io {
        /// What was being done: "create", "write", ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The pcap writer rejected a record.
    #[error("cannot write '{}': {source}", path.display())]
    Pcap {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: pcap_file::PcapError,
    },
    /// A live run (`send`, `rfc2544`) failed.
    #[cfg(feature = "live")]
    #[error(transparent)]
    Live(#[from] crate::live::Error),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn arg(arg: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            arg,
            reason: reason.into(),
        }
    }

    /// The process exit code for this error: 2 for bad arguments (as for
    /// command-line parse errors), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::InvalidArgument { .. } => 2,
            Error::Io { .. } | Error::Pcap { .. } => 1,
            #[cfg(feature = "live")]
            Error::Live(e) => e.exit_code(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
