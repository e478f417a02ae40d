//! Software prefetch, for the poll loop's batched lookups: start the memory accesses of a whole burst before
//! any of them is needed, so their latencies overlap instead of adding up.

/// Cache-line size assumed for prefetching (every x86-64 and most Arm server cores).
pub const CACHE_LINE: usize = 64;

/// Asks the CPU to bring every cache line holding `*value` into its L1 data cache, and returns at once. A hint:
/// it never faults, never changes memory and has no effect on correctness; a no-op on targets without a
/// prefetch instruction wired up here.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    let p = (value as *const T).cast::<u8>();
    let len = size_of::<T>();
    if len == 0 {
        return;
    }
    // One prefetch per line-sized step, plus the last byte: covers every line the value spans whatever its
    // alignment. The count is a constant, so this unrolls.
    let mut off = 0;
    while off < len {
        prefetch_line(p.wrapping_add(off));
        off += CACHE_LINE;
    }
    if !len.is_multiple_of(CACHE_LINE) || !(p as usize).is_multiple_of(CACHE_LINE) {
        prefetch_line(p.wrapping_add(len - 1));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_line(p: *const u8) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is only a hint: it does not dereference `p` in the language sense, cannot fault, and
    // `p` points into (or one byte before the end of) a live reference. SSE is part of the x86-64 baseline.
    #[allow(unused_unsafe)]
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>())
    };
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch_line(_p: *const u8) {}

#[cfg(test)]
mod tests {
    use super::prefetch;

    #[test]
    fn prefetch_is_a_harmless_hint() {
        let v = vec![[7u8; 116]; 8];
        for e in &v {
            prefetch(e);
        }
        prefetch(&());
        prefetch(&0u8);
        assert!(v.iter().all(|e| e.iter().all(|&b| b == 7)));
    }
}
