//! Handing memory back after a burst of allocations that will not come again (the initial load).
//!
//! The library does not know the binary's allocator: `main` registers what releasing means for
//! it ([`set_release`]; with jemalloc, flushing the calling thread's cache of freed blocks and
//! purging unused pages), and the threads that did the initial load call [`release`] once they
//! are done. A thread's allocator cache is emptied only by that thread's own later allocations,
//! and the threads that parse the manifests and build the index allocate little afterwards: the
//! cache held 1.3 MB of the freed YAML values and scratch at 1,000 Services × 10 Pods.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers what [`release`] does (once; later calls are ignored).
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Hands the calling thread's cached free memory back, if the binary said how.
pub fn release() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}
