//! The daemon's settings for glibc's allocator.
//!
//! Request buffers reserve a body's announced length up front (up to 1 MiB), so a stream of
//! large requests allocates and frees tens of kilobytes per request. With glibc's defaults the
//! heap's free top is handed back to the kernel as soon as it exceeds 128 KiB, and buffers over
//! 128 KiB are separate mappings: every large request then paid for fresh zeroed pages, which
//! was most of the framing cost of 64 KiB bodies (`cargo bench --bench core`, `body_64k`:
//! 1.4 -> 3.6 GiB/s on the bench machine).

/// Free memory the heap keeps at its top before trimming: the working set of a burst of large
/// requests, not the peak (the reassembly budget bounds that).
pub const TRIM_THRESHOLD_BYTES: i32 = 32 << 20;
/// Allocations from this size on get their own mapping: above the largest up-front reserve, so
/// request buffers come from the heap and reuse its pages.
pub const MMAP_THRESHOLD_BYTES: i32 = 4 << 20;

/// Applies the settings (idempotent; call before the work starts). A no-op off glibc.
pub fn configure() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning parameters; both values are within
    // the ranges glibc accepts (a refused value leaves the default, which is still correct).
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}
