//! Handing memory back after a burst of allocations that will not come again (the initial load),
//! and keeping the footprint steady after it.
//!
//! The library does not know the binary's allocator: `main` registers what these mean for it
//! ([`set_hooks`]).
//!
//! - [`release`]: with jemalloc, flushing the calling thread's cache of freed blocks and purging
//!   unused pages. The threads that did the initial load call it once they are done. A thread's
//!   allocator cache is emptied only by that thread's own later allocations, and the threads
//!   that parse the manifests and build the index allocate little afterwards: the cache held
//!   1.3 MB of the freed YAML values and scratch at 1,000 Services × 10 Pods.
//! - [`steady`]: called once the initial state is published; with jemalloc, freed pages go back
//!   to the kernel at once from then on rather than after the start-up's decay time, so that
//!   the resident size follows what the server holds instead of what it freed in the last second.

use std::sync::OnceLock;

/// What the binary's allocator does for [`release`] and [`steady`].
#[derive(Clone, Copy, Debug)]
pub struct Hooks {
    /// See [`release`].
    pub release: fn(),
    /// See [`steady`].
    pub steady: fn(),
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Registers the allocator's hooks (once; later calls are ignored).
pub fn set_hooks(hooks: Hooks) {
    let _ = HOOKS.set(hooks);
}

/// Hands the calling thread's cached free memory back, if the binary said how.
pub fn release() {
    if let Some(hooks) = HOOKS.get() {
        (hooks.release)();
    }
}

/// Switches the allocator to its steady-state settings, if the binary said how.
pub fn steady() {
    if let Some(hooks) = HOOKS.get() {
        (hooks.steady)();
    }
}
