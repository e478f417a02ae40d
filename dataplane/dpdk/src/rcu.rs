//! Publishing a value to the workers with DPDK's quiescent-state-based reclamation (`rte_rcu_qsbr`): the
//! mechanism behind a policy hot-swap.
//!
//! The management thread [`RcuCell::publish`]es a new value. Each worker reads the current one through its own
//! [`Reader`] — one atomic load, no lock — and reports a *quiescent state* (a point where it holds no reference)
//! once per poll-loop iteration with [`Reader::quiescent`], a couple of plain loads and stores. After swapping
//! the pointer, `publish` waits for the *grace period*: until every online reader has passed a quiescent state
//! (`rte_rcu_qsbr_synchronize`). Then no reader can still see the old value, and `publish` drops it on the
//! publishing thread: workers never run a destructor nor free memory.
//!
//! # Why this is sound
//! * [`Reader::read`] and [`Reader::quiescent`] both take `&mut self`, and the reference `read` returns lives only
//!   as long as that borrow. So the borrow checker proves that no reference obtained before a quiescent state is
//!   used after it: a reader's report "I hold nothing" is always true.
//! * Going offline ([`Reader::offline`], or dropping the reader) also takes `&mut self` (or `self`), so an offline
//!   reader — one writers do not wait for — holds no reference either.
//! * A reader goes online (`rte_rcu_qsbr_thread_online`, which ends with a full fence) before it loads the
//!   pointer; the writer swaps the pointer and issues a full fence before it reads the readers' counters. So
//!   either the reader loads the new value, or the writer sees it online and waits for its next quiescent state.
//! * Each live reader has its own thread id (enforced here: DPDK keeps one counter per id, so two readers sharing
//!   one would let one vouch for the other).
//! * Readers borrow the cell, so the cell — and the value it frees on drop — outlives all of them.
//!
//! A thread that is itself an online reader must not publish on the same cell: the grace period would wait for
//! it forever. Publishing is for management threads.
//!
//! What the borrow checker refuses, concretely — a reference kept across a quiescent state:
//!
//! ```compile_fail,E0499
//! fn worker(reader: &mut dpdk::rcu::Reader<'_, u64>) {
//!     let v = reader.read();
//!     reader.quiescent();
//!     println!("{v:?}"); // could be freed by now
//! }
//! ```
//!
//! a reader outliving its cell (which frees the value when dropped):
//!
//! ```compile_fail,E0505
//! let cell = dpdk::rcu::RcuCell::<u64>::new(1).unwrap();
//! let mut reader = cell.reader().unwrap();
//! drop(cell);
//! reader.quiescent();
//! ```
//!
//! and a second handle on one reader's thread id:
//!
//! ```compile_fail,E0599
//! fn twin<'c>(reader: &dpdk::rcu::Reader<'c, u64>) -> dpdk::rcu::Reader<'c, u64> {
//!     reader.clone()
//! }
//! ```
//!
//! and sharing a value that is not `Sync` with readers on other threads:
//!
//! ```compile_fail,E0277
//! fn needs_sync<T: Sync>() {}
//! needs_sync::<dpdk::rcu::RcuCell<std::cell::Cell<u64>>>();
//! ```
//!
//! The intended loop:
//!
//! ```
//! fn worker(reader: &mut dpdk::rcu::Reader<'_, u64>, stop: &std::sync::atomic::AtomicBool) {
//!     while !stop.load(std::sync::atomic::Ordering::Relaxed) {
//!         if let Some(policy) = reader.read() {
//!             let _ = policy; // classify a burst with it
//!         }
//!         reader.quiescent();
//!     }
//! }
//! ```

use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use dpdk_sys::rte_rcu_qsbr;

use crate::error::{Error, Result};

/// Linux errno for an allocation failure (errno.h is not part of the bindings).
const ENOMEM: i32 = 12;
/// Most reader threads a [`Qsbr`] takes. DPDK sets no limit, but the variable is 64 bytes per thread and zeroed
/// up front: this bounds it to 4 MiB rather than letting a bad count ask for gigabytes.
pub const MAX_THREADS: u32 = 1 << 16;
/// Readers' thread ids per bitmap word.
const WORD: u32 = u64::BITS;

/// A QSBR variable (`struct rte_rcu_qsbr`) for up to `max_threads` readers.
///
/// Plain memory: allocated here (cache-line aligned, as DPDK requires) and driven by lock-free DPDK functions
/// that need no EAL, which is why it does not borrow [`crate::Eal`].
pub struct Qsbr {
    raw: NonNull<rte_rcu_qsbr>,
    layout: Layout,
    max_threads: u32,
    /// Thread ids held by live readers, one bit each.
    claimed: Box<[AtomicU64]>,
}

// SAFETY: the QSBR variable is plain memory owned by self; every DPDK function used on it is documented as
// multi-thread safe (atomics), and thread-id exclusivity is enforced by `claimed`.
unsafe impl Send for Qsbr {}
// SAFETY: as above; through `&Qsbr` only those thread-safe functions run.
unsafe impl Sync for Qsbr {}

impl fmt::Debug for Qsbr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qsbr")
            .field("max_threads", &self.max_threads)
            .finish_non_exhaustive()
    }
}

impl Qsbr {
    /// Allocates and initializes (`rte_rcu_qsbr_init`) a variable for reader thread ids `0..max_threads`
    /// (1..=[`MAX_THREADS`]).
    pub fn new(max_threads: u32) -> Result<Self> {
        if !(1..=MAX_THREADS).contains(&max_threads) {
            return Err(Error::RcuMaxThreads(max_threads));
        }
        // SAFETY: a pure size computation; it fails (returning 1) only for max_threads == 0, excluded above.
        let size = unsafe { dpdk_sys::rte_rcu_qsbr_get_memsize(max_threads) };
        let align = std::mem::align_of::<rte_rcu_qsbr>().max(64);
        let layout = Layout::from_size_align(size, align)
            .map_err(|_| Error::call("rte_rcu_qsbr_get_memsize", ENOMEM))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<rte_rcu_qsbr>();
        let raw = NonNull::new(raw).ok_or_else(|| Error::call("rte_rcu_qsbr_init", ENOMEM))?;
        // SAFETY: raw points to `size` writable bytes, aligned for the struct, as rte_rcu_qsbr_get_memsize asked.
        let ret = unsafe { dpdk_sys::rte_rcu_qsbr_init(raw.as_ptr(), max_threads) };
        let qsbr = Qsbr {
            raw,
            layout,
            max_threads,
            claimed: (0..max_threads.div_ceil(WORD))
                .map(|_| AtomicU64::new(0))
                .collect(),
        };
        if ret != 0 {
            return Err(Error::from_rte_errno("rte_rcu_qsbr_init"));
        }
        Ok(qsbr)
    }

    /// How many reader thread ids the variable has.
    pub fn max_threads(&self) -> u32 {
        self.max_threads
    }

    /// Takes thread id `id` for a reader and registers it with DPDK.
    fn claim(&self, id: u32) -> Result<()> {
        if id >= self.max_threads {
            return Err(Error::RcuThreadIdRange {
                id,
                max_threads: self.max_threads,
            });
        }
        let (word, bit) = (&self.claimed[(id / WORD) as usize], 1u64 << (id % WORD));
        if word.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return Err(Error::RcuThreadIdTaken(id));
        }
        // SAFETY: the variable is initialized and id < max_threads; registering is thread-safe.
        if unsafe { dpdk_sys::rte_rcu_qsbr_thread_register(self.raw.as_ptr(), id) } != 0 {
            word.fetch_and(!bit, Ordering::AcqRel);
            return Err(Error::from_rte_errno("rte_rcu_qsbr_thread_register"));
        }
        Ok(())
    }

    /// Unregisters thread id `id` (offline already) and gives it back.
    fn release(&self, id: u32) {
        // SAFETY: id was claimed and registered by `claim`, and its reader is offline. It cannot fail for a valid
        // id, and there is nothing to do if it did.
        unsafe { dpdk_sys::rte_rcu_qsbr_thread_unregister(self.raw.as_ptr(), id) };
        let bit = 1u64 << (id % WORD);
        self.claimed[(id / WORD) as usize].fetch_and(!bit, Ordering::AcqRel);
    }

    fn as_ptr(&self) -> *mut rte_rcu_qsbr {
        self.raw.as_ptr()
    }
}

impl Drop for Qsbr {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once; no reader is left (they borrow the cell that
        // owns self).
        unsafe { std::alloc::dealloc(self.raw.as_ptr().cast(), self.layout) };
    }
}

/// A value published to readers on other threads, replaced as a whole and reclaimed after a grace period.
///
/// Empty until the first [`RcuCell::publish`]: readers then see `None`, so a dataplane that has no policy yet
/// can fail closed.
///
/// Writers take `&self` and are serialized by a mutex that readers never touch. Concurrent publishers would be
/// safe with QSBR alone (each reclaims what it swapped out after its own grace period), but serializing them
/// gives one total order of versions, makes "`publish` returned" mean "this value is current and its
/// predecessor is gone", and keeps the measured grace period about one swap. Publishing is rare and happens on
/// management threads, so the lock costs nothing that matters, and `&self` lets the control plane share the cell.
pub struct RcuCell<T> {
    current: AtomicPtr<T>,
    qsbr: Qsbr,
    writer: Mutex<()>,
    /// The cell owns a `T`, dropped on whichever thread publishes next (so `Send` needs `T: Send`, and sharing
    /// the cell does too), and it lends `&T` to readers on other threads (so `Sync` needs `T: Sync`).
    _owns: PhantomData<(Box<T>, Mutex<Box<T>>)>,
}

impl<T> fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcuCell")
            .field("max_threads", &self.qsbr.max_threads)
            .field(
                "published",
                &!self.current.load(Ordering::Relaxed).is_null(),
            )
            .finish()
    }
}

impl<T> RcuCell<T> {
    /// An empty cell for up to `max_threads` readers.
    pub fn new(max_threads: u32) -> Result<Self> {
        Ok(Self::with_qsbr(Qsbr::new(max_threads)?))
    }

    /// An empty cell using `qsbr`, which it owns from now on.
    pub fn with_qsbr(qsbr: Qsbr) -> Self {
        RcuCell {
            current: AtomicPtr::new(std::ptr::null_mut()),
            qsbr,
            writer: Mutex::new(()),
            _owns: PhantomData,
        }
    }

    pub fn max_threads(&self) -> u32 {
        self.qsbr.max_threads
    }

    /// A reader with thread id `thread_id` (below [`RcuCell::max_threads`], not held by another live reader).
    pub fn register(&self, thread_id: u32) -> Result<Reader<'_, T>> {
        self.qsbr.claim(thread_id)?;
        Ok(Reader {
            cell: self,
            id: thread_id,
            online: false,
        })
    }

    /// A reader with the lowest free thread id.
    pub fn reader(&self) -> Result<Reader<'_, T>> {
        for id in 0..self.qsbr.max_threads {
            match self.register(id) {
                Err(Error::RcuThreadIdTaken(_)) => continue,
                other => return other,
            }
        }
        Err(Error::RcuNoFreeThreadId(self.qsbr.max_threads))
    }

    /// Makes `value` the current value, waits for the grace period, then drops the previous value on this thread.
    /// Returns how long the grace period took (exactly zero when nothing was published before: nothing to wait
    /// for).
    ///
    /// Blocks while an online reader does not reach a quiescent state; offline and not-yet-online readers do not
    /// delay it.
    pub fn publish(&self, value: Box<T>) -> Duration {
        self.replace(Box::into_raw(value))
    }

    /// Withdraws the current value (readers see `None` again), like [`RcuCell::publish`].
    pub fn clear(&self) -> Duration {
        self.replace(std::ptr::null_mut())
    }

    /// Runs `f` on the current value from the writer side (no reader needed), holding off other writers (so `f`
    /// must not publish).
    pub fn with_current<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: values are freed only by a writer, which needs the lock held here, or by Drop, which needs
        // `&mut self`; p is null or points to a live value published with a Release swap.
        f(unsafe { p.as_ref() })
    }

    fn replace(&self, new: *mut T) -> Duration {
        let (old, grace) = {
            let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let old = self.current.swap(new, Ordering::AcqRel);
            if old.is_null() {
                // Nothing was published: no reader can hold anything, no grace period.
                return Duration::ZERO;
            }
            let start = Instant::now();
            // Pairs with the fence that ends rte_rcu_qsbr_thread_online: a reader either loads the new pointer or
            // is seen online by the counter reads of the grace period.
            fence(Ordering::SeqCst);
            // SAFETY: the variable is alive; RTE_QSBR_THRID_INVALID says this thread is no reader (publishing from a
            // reader thread is documented as forbidden). Returns once every online reader has passed a quiescent
            // state.
            unsafe {
                dpdk_sys::rte_rcu_qsbr_synchronize(
                    self.qsbr.as_ptr(),
                    dpdk_sys::RTE_QSBR_THRID_INVALID,
                )
            };
            (old, start.elapsed())
        };
        // SAFETY: `old` came from Box::into_raw and is unreachable: it was swapped out and the grace period has
        // ended, so no reader still holds a reference obtained before the swap. Freed once, here.
        drop(unsafe { Box::from_raw(old) });
        grace
    }
}

impl<T> Drop for RcuCell<T> {
    fn drop(&mut self) {
        let p = *self.current.get_mut();
        if !p.is_null() {
            // SAFETY: no reader is alive (readers borrow the cell); p came from Box::into_raw and is freed once.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// One worker's read access to an [`RcuCell`]. `Send` (create it anywhere, move it to its lcore), not `Clone`:
/// its thread id is its own.
///
/// Starts offline, goes online on the first [`Reader::read`], and stays online — writers then wait for its
/// quiescent states — until [`Reader::offline`] or drop. (Going online lazily means a reader created on the main
/// thread before its worker starts does not stall, or deadlock, a publish in the meantime.)
pub struct Reader<'c, T> {
    cell: &'c RcuCell<T>,
    id: u32,
    online: bool,
}

impl<T> fmt::Debug for Reader<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("id", &self.id)
            .field("online", &self.online)
            .finish()
    }
}

impl<T> Reader<'_, T> {
    /// The QSBR thread id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether writers currently wait for this reader's quiescent states.
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// The current value, or `None` before the first publish. The reference lives until the next call on this
    /// reader — in particular, it cannot outlive the next [`Reader::quiescent`].
    #[inline]
    pub fn read(&mut self) -> Option<&T> {
        if !self.online {
            // SAFETY: the variable is alive (the cell outlives self) and id is registered and exclusively ours;
            // the function ends with a full fence, so the load below happens after the writer can see us online.
            unsafe { dpdk_sys::rte_rcu_qsbr_thread_online(self.cell.qsbr.as_ptr(), self.id) };
            self.online = true;
        }
        let p = self.cell.current.load(Ordering::Acquire);
        // SAFETY: we are online, so a value swapped out after this load is freed only once we pass a quiescent
        // state or go offline, which needs `&mut self`, i.e. the end of the returned borrow. p is null or came from
        // Box::into_raw, published with a Release swap that this Acquire load pairs with.
        unsafe { p.as_ref() }
    }

    /// Reports a quiescent state: this reader holds no reference into the cell (the borrow checker guarantees
    /// it). Cheap — a couple of loads and a store, no lock, no syscall — so call it once per poll-loop iteration.
    #[inline]
    pub fn quiescent(&mut self) {
        if self.online {
            // SAFETY: the variable is alive and id is registered and exclusively ours.
            unsafe { dpdk_sys::rte_rcu_qsbr_quiescent(self.cell.qsbr.as_ptr(), self.id) };
        }
    }

    /// Stops taking part in grace periods, e.g. before the worker blocks or idles: writers no longer wait for
    /// this reader. The next [`Reader::read`] goes online again.
    pub fn offline(&mut self) {
        if self.online {
            // SAFETY: the variable is alive and id is registered and exclusively ours; `&mut self` means no
            // reference from `read` is alive.
            unsafe { dpdk_sys::rte_rcu_qsbr_thread_offline(self.cell.qsbr.as_ptr(), self.id) };
            self.online = false;
        }
    }
}

impl<T> Drop for Reader<'_, T> {
    fn drop(&mut self) {
        self.offline();
        self.cell.qsbr.release(self.id);
    }
}
