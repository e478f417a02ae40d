use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::Eal;

/// `SOCKET_ID_ANY` is a macro in rte_memory.h.
pub(crate) const SOCKET_ID_ANY: i32 = -1;

/// A pool of packet buffers (`rte_pktmbuf_pool_create`). Freed when dropped; the borrow of [`Eal`] keeps it
/// from outliving the EAL, and every [`crate::Mbuf`] or [`crate::Burst`] drawn from it borrows it in turn.
#[derive(Debug)]
pub struct Mempool<'eal> {
    raw: NonNull<dpdk_sys::rte_mempool>,
    _eal: PhantomData<&'eal Eal>,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe; per-lcore caches are selected by the calling
// lcore, not by the handle.
unsafe impl Send for Mempool<'_> {}
// SAFETY: as above; all operations through `&Mempool` are thread-safe DPDK calls.
unsafe impl Sync for Mempool<'_> {}

impl<'eal> Mempool<'eal> {
    /// Creates a pool of `size` mbufs with `cache` per-lcore cached buffers and `data_room` bytes each
    /// (headroom included), on NUMA `socket` (`None`: any).
    pub fn new(
        _eal: &'eal Eal,
        name: &str,
        size: u32,
        cache: u32,
        data_room: u16,
        socket: Option<u32>,
    ) -> Result<Self> {
        let cname = CString::new(name).map_err(|_| Error::BadArgument(name.into()))?;
        let socket = socket.map_or(SOCKET_ID_ANY, |s| s as i32);
        // SAFETY: the EAL is initialized; the name is a valid C string copied by DPDK.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket)
        };
        let raw =
            NonNull::new(raw).ok_or_else(|| Error::from_rte_errno("rte_pktmbuf_pool_create"))?;
        Ok(Mempool {
            raw,
            _eal: PhantomData,
        })
    }

    /// Buffers currently in the pool (free), including per-lcore caches.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive for the lifetime of self.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Buffers currently taken from the pool (in rings, queues, or held by the application).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is alive for the lifetime of self.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: no mbuf from this pool is alive (they borrow it) and no started port uses it (ports borrow
        // it too and are stopped on drop).
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) };
    }
}
