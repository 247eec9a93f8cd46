//! `mirror`: a packet-level HTTP/1.x traffic mirror.
//!
//! A TC eBPF classifier copies the TCP segments of target ports into a ring buffer ([`capture`]);
//! the I/O-free core ([`reassembly`], [`http`]) turns them into requests and responses without
//! touching a clock or a socket, so it is tested deterministically.

pub mod capture;
pub mod compare;
pub mod cli;
pub mod commands;
pub mod config;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod pipeline;
pub mod policy;
pub mod reassembly;
pub mod replay;
pub mod rewrite;
pub mod segment;
