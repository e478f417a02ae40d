use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Proof that the Environment Abstraction Layer is up. There is at most one per process (DPDK cannot be
/// initialized twice); every other handle in this crate borrows it, so dropping it — which runs
/// `rte_eal_cleanup` — can only happen after ports, pools and packets are gone.
#[derive(Debug)]
pub struct Eal {
    // EAL is initialized and cleaned up on the main thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Eal {
    /// Checks the runtime DPDK version, then runs `rte_eal_init` with `args` (`args[0]` is the program name).
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        check_runtime_version()?;
        if INITIALIZED.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyInitialized);
        }
        let owned: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_ref()).map_err(|_| Error::BadArgument(a.as_ref().into())))
            .collect::<Result<_>>()?;
        // The EAL may keep pointers into argv (and permutes it), so argv lives as long as the process.
        let strings: &'static mut [CString] = Box::leak(owned.into_boxed_slice());
        let argv: &'static mut [*mut c_char] = Box::leak(
            strings
                .iter_mut()
                .map(|s| s.as_ptr() as *mut c_char)
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let argc = i32::try_from(argv.len()).map_err(|_| Error::BadArgument("argc".into()))?;
        // SAFETY: argv holds argc valid NUL-terminated strings that are never freed; the INITIALIZED flag
        // guarantees a single call per process.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(Error::from_rte_errno("rte_eal_init"));
        }
        Ok(Eal {
            _not_send: std::marker::PhantomData,
        })
    }

    /// The lcore the EAL runs the calling (main) thread on.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: the EAL is initialized.
        unsafe { dpdk_sys::rte_get_main_lcore() }
    }

    /// Whether `lcore` was enabled with `-l`/`--lcores`.
    pub fn lcore_enabled(&self, lcore: u32) -> bool {
        // SAFETY: the EAL is initialized; out-of-range ids are answered with 0.
        unsafe { dpdk_sys::rte_lcore_is_enabled(lcore) != 0 }
    }

    /// NUMA socket of `lcore` (0 on single-socket machines).
    pub fn lcore_socket(&self, lcore: u32) -> u32 {
        // SAFETY: the EAL is initialized.
        unsafe { dpdk_sys::rte_lcore_to_socket_id(lcore) }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: every handle that uses EAL memory borrows `self`, so none is alive any more.
        unsafe { dpdk_sys::rte_eal_cleanup() };
    }
}

/// The DPDK version found at run time, e.g. `DPDK 22.11.11`.
pub fn runtime_version() -> String {
    // SAFETY: rte_version returns a pointer to a static string; callable before rte_eal_init.
    unsafe { CStr::from_ptr(dpdk_sys::rte_version()) }
        .to_string_lossy()
        .into_owned()
}

/// Refuses a shared libdpdk other than the one the bindings were generated from: struct layouts and inline
/// fast-path code are compiled into Bulkhead, so a different library would be silently misread.
fn check_runtime_version() -> Result<()> {
    // SAFETY: plain getters of the loaded library's compiled-in constants.
    let found = unsafe {
        (
            dpdk_sys::rte_version_year(),
            dpdk_sys::rte_version_month(),
            dpdk_sys::rte_version_minor(),
        )
    };
    if !same_version(dpdk_sys::BUILD_VERSION, found) {
        return Err(Error::VersionMismatch {
            built: dpdk_sys::BUILD_VERSION.into(),
            found: runtime_version(),
        });
    }
    Ok(())
}

/// Whether pkg-config's version string (`22.11.11`) names the release `(year, month, minor)`.
fn same_version(built: &str, (year, month, minor): (u32, u32, u32)) -> bool {
    let parts: Vec<Option<u32>> = built.split('.').map(|p| p.parse().ok()).collect();
    parts == [Some(year), Some(month), Some(minor)]
}

/// The time-stamp counter (cycles); cheap enough for the poll loop, and not a syscall.
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: reads the CPU's time-stamp counter; no memory is touched.
    unsafe { dpdk_sys::rte_rdtsc() }
}

/// Frequency of [`tsc`] in Hz, as measured by the EAL.
pub fn tsc_hz(_eal: &Eal) -> u64 {
    // SAFETY: the EAL is initialized (witnessed by the argument).
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

#[cfg(test)]
mod tests {
    use super::same_version;

    #[test]
    fn versions_must_match_exactly() {
        assert!(same_version("22.11.11", (22, 11, 11)));
        assert!(!same_version("22.11.11", (22, 11, 4)));
        assert!(!same_version("22.11.11", (23, 11, 11)));
        assert!(!same_version("22.11", (22, 11, 0)));
        assert!(!same_version("22.11.11-rc1", (22, 11, 11)));
    }

    #[test]
    fn this_build_runs_against_its_own_library() {
        super::check_runtime_version()
            .expect("the DPDK found at run time is the one built against");
    }
}
