//! Test-side conveniences over [`mirror::netns`]: set-up failures panic with their cause.

pub use mirror::netns::{CLIENT_ADDR, NetNs, SERVER_ADDR, Topology, ip};

/// A fresh client/server topology, deleted on drop.
pub fn topology() -> Topology {
    Topology::create().expect("creating network namespaces (needs root and iproute2)")
}

/// Runs `f` inside `ns` on its own thread and returns its result.
pub fn in_netns<F, R>(ns: &NetNs, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    ns.spawn(f)
        .join()
        .expect("thread inside the namespace panicked")
        .expect("entering the namespace")
}
