use std::ffi::CStr;

/// Linux errno for "operation not supported" (errno.h is not part of the bindings).
pub(crate) const ENOTSUP: i32 = 95;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong below the dataplane. DPDK reports failures as negative errno values (or `rte_errno`);
/// they are kept with the name of the call that failed so a message always says what was being attempted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DPDK at run time is {found}, but Bulkhead was built against DPDK {built}; rebuild or install the matching libdpdk")]
    VersionMismatch { built: String, found: String },
    #[error("the EAL is already initialized in this process")]
    AlreadyInitialized,
    #[error("EAL argument {0:?} contains a NUL byte")]
    BadArgument(String),
    #[error("no DPDK port named {0:?} (check the device string and that its driver is available)")]
    NoSuchPort(String),
    #[error("port {0:?} must be configured before it is started")]
    NotConfigured(String),
    #[error("port {0} is already started: its queues were handed out")]
    AlreadyStarted(u16),
    #[error("port {port:?} ({driver}) cannot hash flows to queues (no RSS on IP/TCP/UDP): with several workers, \
             the two directions of a connection could reach different workers; run one worker on this device")]
    NoRss { port: String, driver: String },
    #[error("invalid ACL field layout: {0}")]
    AclLayout(#[from] crate::acl::LayoutError),
    #[error("invalid ACL rule: {0}")]
    AclRule(#[from] crate::acl::RuleError),
    #[error("the ACL context was created for at most {max_rules} rules")]
    AclFull { max_rules: u32 },
    #[error("ACL input {index} is {len} bytes long, but the field layout reads {need} bytes")]
    AclInputTooShort {
        index: usize,
        len: usize,
        need: usize,
    },
    #[error("{inputs} inputs need {need} result slots, but only {got} were given")]
    AclResultsTooShort {
        inputs: usize,
        need: usize,
        got: usize,
    },
    #[error("rte_acl cannot hold {max_rules} rules of {rule_size} bytes (it sizes the rule storage in 32 bits)")]
    AclCapacity { max_rules: u32, rule_size: usize },
    #[error("{0} ACL categories: a context is built for 1 to 16, and classifies 1 or a multiple of 4 up to 16")]
    AclCategories(u32),
    #[error("ACL algorithm {0:?} is not available here (CPU, DPDK build, or the EAL's --force-max-simd-bitwidth)")]
    AclAlgorithmUnsupported(crate::acl::Alg),
    #[error("a QSBR variable holds 1 to {max} reader threads, not {0}", max = crate::rcu::MAX_THREADS)]
    RcuMaxThreads(u32),
    #[error(
        "RCU reader thread id {id} is out of range: this QSBR variable has {max_threads} slots"
    )]
    RcuThreadIdRange { id: u32, max_threads: u32 },
    #[error("RCU reader thread id {0} is already taken by a live reader")]
    RcuThreadIdTaken(u32),
    #[error("all {0} RCU reader slots are taken")]
    RcuNoFreeThreadId(u32),
    #[error("{op} failed: {reason} (errno {errno})")]
    Call {
        op: &'static str,
        errno: i32,
        reason: String,
    },
}

impl Error {
    /// Builds an error from a DPDK errno (either sign).
    pub(crate) fn call(op: &'static str, errno: i32) -> Self {
        let errno = errno.abs();
        // SAFETY: rte_strerror returns a pointer to a static or thread-local string, valid until the next call
        // on this thread; we copy it out immediately.
        let reason = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) }
            .to_string_lossy()
            .into_owned();
        Error::Call { op, errno, reason }
    }

    /// Builds an error from the calling thread's `rte_errno`.
    pub(crate) fn from_rte_errno(op: &'static str) -> Self {
        // SAFETY: reads a thread-local integer; no preconditions.
        Self::call(op, unsafe { dpdk_sys::bh_rte_errno() })
    }

    /// The errno of a failed DPDK call, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Turns DPDK's `0 or -errno` convention into a `Result`.
pub(crate) fn check(op: &'static str, ret: i32) -> Result<()> {
    if ret < 0 {
        Err(Error::call(op, ret))
    } else {
        Ok(())
    }
}
