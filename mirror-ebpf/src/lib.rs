//! The classifier lives in `main.rs` (a `bpfel-unknown-none` binary built by aya-build). This empty
//! library exists so `mirror-userspace` can list the crate as a build-dependency and cargo rebuilds
//! the object when it changes.
#![no_std]
