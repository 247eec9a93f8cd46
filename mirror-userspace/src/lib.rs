//! `mirror`: a packet-level HTTP/1.x traffic mirror.
//!
//! A TC eBPF classifier copies the TCP segments of target ports into a ring buffer ([`capture`]);
//! the I/O-free core ([`reassembly`], [`http`], [`http2`], [`policy`], [`rewrite`], [`compare`])
//! turns them into requests and responses, decides what to mirror and produces the exact bytes
//! to replay, without touching a clock or a socket, so it is tested deterministically. Thin
//! adapters do the I/O: [`replay`] (shadow connection pool), [`metrics`] (Prometheus endpoint),
//! [`sink`] (compared exchanges as JSON lines on disk), [`pipeline`] (the glue `mirror run`
//! drives), [`kubernetes`] (the pod watch of `pods` targets), [`config`],
//! [`cli`] and [`commands`].

pub mod capture;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod config;
pub mod demo;
pub mod hash;
pub mod held;
pub mod http;
pub mod http2;
pub mod kubernetes;
pub mod metrics;
pub mod netns;
pub mod pipeline;
pub mod policy;
pub mod random;
pub mod reassembly;
pub mod replay;
pub mod rewrite;
pub mod scopes;
pub mod segment;
pub mod shed;
pub mod sink;
pub mod stats;
pub mod verdict;
pub mod wake_ups;
#[cfg(test)]
pub(crate) mod wiregen;
