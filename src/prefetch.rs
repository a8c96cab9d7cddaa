//! Cache prefetch hints, for the store path's pointer chains (the
//! mailbox, its devices and chunks; the schedule's slots).

/// Asks the CPU to start fetching the cache line at `p` (a hint only).
#[inline]
pub fn prefetch<T>(p: Option<&T>) {
    if let Some(p) = p {
        prefetch_address((p as *const T).cast::<u8>());
    }
}

/// Asks the CPU to start fetching the cache line holding address `p`, which
/// may be any address (a hint only: nothing is read, nothing can fault).
#[inline]
pub fn prefetch_address(p: *const u8) {
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
