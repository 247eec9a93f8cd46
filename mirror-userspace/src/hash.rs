//! The hash maps of the per-packet and per-request paths. std's SipHash showed in profiles of a
//! saturated daemon; foldhash is several times faster on small keys such as socket addresses and
//! is still seeded randomly per process, so a remote peer cannot aim its flows at one bucket.

pub type RandomState = foldhash::fast::RandomState;

/// A `HashMap` with [`RandomState`]; build it with `HashMap::default()`.
pub type HashMap<K, V> = std::collections::HashMap<K, V, RandomState>;
