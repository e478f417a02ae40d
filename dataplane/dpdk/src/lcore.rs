//! Running work on the EAL's worker lcores.
//!
//! Each worker lcore is an EAL thread pinned to its core. [`scope`] launches closures on them and, like
//! `std::thread::scope`, waits for every one before returning — even if the calling code panics — so the
//! closures may borrow from the caller (queues, counters, stop flags) without `'static` or reference counting.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{check, Result};
use crate::Eal;

type Work<'env> = Box<dyn FnOnce() + Send + 'env>;

/// Handle to launch work inside a [`scope`].
pub struct Scope<'env> {
    launched: RefCell<Vec<u32>>,
    _env: PhantomData<&'env mut &'env ()>,
}

/// How the lcores of a scope ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Lcores whose work panicked.
    pub panicked: Vec<u32>,
}

impl<'env> Scope<'env> {
    /// Runs `work` on worker `lcore`, which must be enabled, not the main lcore, and idle.
    pub fn spawn(&self, lcore: u32, work: impl FnOnce() + Send + 'env) -> Result<()> {
        let boxed: Box<Work<'env>> = Box::new(Box::new(work));
        let arg = Box::into_raw(boxed) as *mut c_void;
        // SAFETY: `trampoline` takes ownership of `arg` exactly once if the launch succeeds; `scope` waits for
        // the lcore before 'env ends, so the borrowed environment outlives the work.
        let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if ret < 0 {
            // SAFETY: the launch failed, so the trampoline never ran and we still own `arg`.
            drop(unsafe { Box::from_raw(arg as *mut Work<'env>) });
            return check("rte_eal_remote_launch", ret);
        }
        self.launched.borrow_mut().push(lcore);
        Ok(())
    }

    fn join(&self) -> Joined {
        let mut panicked = Vec::new();
        for lcore in self.launched.borrow_mut().drain(..) {
            // SAFETY: lcore was launched by this scope; waiting is always allowed from the main lcore.
            if unsafe { dpdk_sys::rte_eal_wait_lcore(lcore) } != 0 {
                panicked.push(lcore);
            }
        }
        Joined { panicked }
    }
}

/// Runs `f` with a [`Scope`] and waits for all the work it launched. Returns `f`'s result and how the lcores
/// ended.
pub fn scope<'env, R>(_eal: &'env Eal, f: impl FnOnce(&Scope<'env>) -> R) -> (R, Joined) {
    struct WaitAll<'a, 'env>(&'a Scope<'env>);
    impl Drop for WaitAll<'_, '_> {
        fn drop(&mut self) {
            self.0.join();
        }
    }
    let scope = Scope {
        launched: RefCell::new(Vec::new()),
        _env: PhantomData,
    };
    let guard = WaitAll(&scope);
    let r = f(&scope);
    let joined = scope.join();
    drop(guard);
    (r, joined)
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` came from Box::into_raw in `spawn` and is consumed only here.
    let work = unsafe { Box::from_raw(arg as *mut Work<'static>) };
    // Unwinding across the C frame would abort the process with no message; report through the return
    // value instead.
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}
