use std::marker::PhantomData;
use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;

use crate::Mempool;

/// Largest burst handled at once. DPDK PMDs are tuned for 32; room for 64 lets a caller merge bursts.
pub const MAX_BURST: usize = 64;

/// Reads the first segment's data of an mbuf.
///
/// # Safety
/// `m` must point to a live mbuf owned by the caller for `'a`.
#[inline(always)]
unsafe fn data<'a>(m: *mut rte_mbuf) -> &'a [u8] {
    // SAFETY: per the contract, m is live; buf_addr + data_off is rte_pktmbuf_mtod (computed here rather than
    // through the C shim, a call per packet on the fast path), and with data_len it describes the initialized
    // first segment.
    unsafe {
        let ptr = (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off)) as *const u8;
        std::slice::from_raw_parts(ptr, usize::from((*m).data_len))
    }
}

/// One packet buffer, owned: dropping it returns it to its pool.
#[derive(Debug)]
pub struct Mbuf<'p> {
    raw: NonNull<rte_mbuf>,
    _pool: PhantomData<&'p ()>,
}

// SAFETY: an Mbuf is exclusively owned; freeing it to its (thread-safe) mempool works from any thread.
unsafe impl Send for Mbuf<'_> {}

impl<'p> Mbuf<'p> {
    /// Takes an empty buffer from `pool`, or `None` when the pool is exhausted.
    pub fn alloc(pool: &'p Mempool<'_>) -> Option<Self> {
        // SAFETY: the pool is alive for 'p.
        let raw = unsafe { dpdk_sys::rte_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(raw).map(|raw| Mbuf {
            raw,
            _pool: PhantomData,
        })
    }

    /// Builds a packet holding a copy of `bytes`; `None` when the pool is empty or `bytes` exceeds the room.
    pub fn from_bytes(pool: &'p Mempool<'_>, bytes: &[u8]) -> Option<Self> {
        let mut m = Self::alloc(pool)?;
        m.append(bytes.len())?.copy_from_slice(bytes);
        Some(m)
    }

    /// The packet's bytes (first segment).
    pub fn data(&self) -> &[u8] {
        // SAFETY: self owns the live mbuf for as long as the returned borrow.
        unsafe { data(self.raw.as_ptr()) }
    }

    /// Grows the packet by `len` bytes at its tail and returns them; `None` if the buffer has no such room.
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        // SAFETY: self owns the live mbuf; rte_pktmbuf_append checks the tailroom and returns NULL if short.
        let ptr = unsafe { dpdk_sys::rte_pktmbuf_append(self.raw.as_ptr(), len16) } as *mut u8;
        if ptr.is_null() {
            return None;
        }
        // SAFETY: DPDK reserved `len` writable bytes at ptr inside this mbuf, exclusively ours.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    fn into_raw(self) -> *mut rte_mbuf {
        let raw = self.raw.as_ptr();
        std::mem::forget(self);
        raw
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf, which is freed exactly once here.
        unsafe { dpdk_sys::rte_pktmbuf_free(self.raw.as_ptr()) };
    }
}

/// Up to [`MAX_BURST`] owned packets, as received from or handed to a queue. A fixed array on the stack, so the
/// poll loop never allocates; whatever is still in it when it is cleared or dropped goes back to its pool.
pub struct Burst<'p> {
    mbufs: [*mut rte_mbuf; MAX_BURST],
    len: usize,
    cap: usize,
    _pool: PhantomData<&'p ()>,
}

// SAFETY: the burst exclusively owns its mbufs (see Mbuf).
unsafe impl Send for Burst<'_> {}

impl Default for Burst<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Burst<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

impl<'p> Burst<'p> {
    pub const fn new() -> Self {
        Self::with_capacity(MAX_BURST)
    }

    /// A burst that receives at most `cap` packets at a time (clamped to 1..=[`MAX_BURST`]).
    pub const fn with_capacity(cap: usize) -> Self {
        let cap = if cap == 0 {
            1
        } else if cap > MAX_BURST {
            MAX_BURST
        } else {
            cap
        };
        Burst {
            mbufs: [std::ptr::null_mut(); MAX_BURST],
            len: 0,
            cap,
            _pool: PhantomData,
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.cap
    }

    /// Adds a packet; gives it back if the burst is full.
    pub fn push(&mut self, m: Mbuf<'p>) -> Result<(), Mbuf<'p>> {
        if self.is_full() {
            return Err(m);
        }
        self.mbufs[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// The bytes of packet `i`.
    #[inline]
    pub fn data(&self, i: usize) -> Option<&[u8]> {
        // SAFETY: slots below len hold live mbufs owned by self.
        self.owned().get(i).map(|&m| unsafe { data(m) })
    }

    /// The packets' bytes, in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        // SAFETY: slots below len hold live mbufs owned by self.
        self.owned().iter().map(|&m| unsafe { data(m) })
    }

    /// Total frame bytes in the burst (all segments).
    pub fn bytes(&self) -> u64 {
        // SAFETY: slots below len hold live mbufs owned by self.
        self.owned()
            .iter()
            .map(|&m| u64::from(unsafe { (*m).pkt_len }))
            .sum()
    }

    /// Keeps the packets for which `keep` says true, in order, and frees the others; returns how many it freed.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) -> usize {
        let mut kept = 0;
        let mut freed = 0;
        for i in 0..self.len {
            let m = self.mbufs[i];
            // SAFETY: slot i < len holds a live mbuf owned by self.
            if keep(unsafe { data(m) }) {
                self.mbufs[kept] = m;
                kept += 1;
            } else {
                // SAFETY: m is owned by self and leaves the burst here, freed exactly once.
                unsafe { dpdk_sys::rte_pktmbuf_free(m) };
                freed += 1;
            }
        }
        self.len = kept;
        freed
    }

    /// Frees every packet still in the burst; returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.len;
        if n > 0 {
            // SAFETY: the first n slots hold live mbufs owned by self; len is reset so none is freed twice.
            unsafe { dpdk_sys::rte_pktmbuf_free_bulk(self.mbufs.as_mut_ptr(), n as u32) };
            self.len = 0;
        }
        n
    }

    fn owned(&self) -> &[*mut rte_mbuf] {
        &self.mbufs[..self.len]
    }

    /// Free slots, for a receive call to fill.
    pub(crate) fn spare(&mut self) -> (*mut *mut rte_mbuf, u16) {
        let free = self.cap.saturating_sub(self.len) as u16;
        // SAFETY: len <= MAX_BURST, so the offset stays inside (or one past the end of) the array.
        (unsafe { self.mbufs.as_mut_ptr().add(self.len) }, free)
    }

    /// Records that a receive call filled `n` of the spare slots.
    pub(crate) fn filled(&mut self, n: u16) {
        self.len += usize::from(n);
        debug_assert!(self.len <= self.cap);
    }

    /// The packets to transmit.
    pub(crate) fn pending(&mut self) -> (*mut *mut rte_mbuf, u16) {
        (self.mbufs.as_mut_ptr(), self.len as u16)
    }

    /// Records that the first `n` packets now belong to the driver; the unsent rest moves to the front.
    pub(crate) fn consumed(&mut self, n: u16) {
        let n = usize::from(n).min(self.len);
        self.mbufs.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl Drop for Burst<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}
