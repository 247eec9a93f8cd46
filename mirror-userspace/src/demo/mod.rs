//! The parts of `mirror demo` (the command itself is `commands::demo`): the demo's search
//! service in two versions ([`servers`]), the client load ([`traffic`]) and the verdict drawn
//! from the daemon's metrics ([`verdict`]).
//!
//! The service has one route per port so that each is its own mirror target: the daemon's
//! per-target metrics then say *where* a regression is without any per-path metric. Its JSON
//! answers carry a fresh `request_id` (and `/price` a `served_at` time): noise that differs in
//! every response of every version, which the baseline (a second v1) lets the verdict cancel.

pub mod servers;
pub mod traffic;
pub mod verdict;

/// Reproducible traffic without a `rand` dependency, and the same "random" results for the
/// same query in both service versions.
pub use crate::random::SplitMix64;

/// One mirror target of the demo: a port of the search service and what it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The mirror target's name (the `target` label of its metrics).
    pub target: &'static str,
    pub port: u16,
    /// What the port serves, for people: "GET /search".
    pub serves: &'static str,
}

pub const SEARCH: Route = Route {
    target: "search",
    port: 8080,
    serves: "GET /search",
};
pub const SUGGEST: Route = Route {
    target: "suggest",
    port: 8081,
    serves: "GET /suggest",
};
pub const STATIC: Route = Route {
    target: "static",
    port: 8082,
    serves: "GET /static/*",
};
pub const PRICE: Route = Route {
    target: "price",
    port: 8083,
    serves: "GET /price",
};

/// Every target, in the order the demo prints them.
pub const ROUTES: [Route; 4] = [SEARCH, SUGGEST, STATIC, PRICE];

/// The baseline (a second search v1 beside the shadow) serves each route on its port plus this:
/// the shadow already has the route's own port on that address.
pub const BASELINE_PORT_OFFSET: u16 = 100;

/// The popular queries, most popular first. Both versions keep their results cached (a warm
/// cache); any other query is a cache miss that goes to the database.
pub const POPULAR_QUERIES: [&str; 24] = [
    "rust",
    "linux",
    "kubernetes",
    "ebpf",
    "tokio",
    "prometheus",
    "grafana",
    "http",
    "tcp",
    "docker",
    "nginx",
    "postgres",
    "redis",
    "kafka",
    "envoy",
    "istio",
    "systemd",
    "iptables",
    "wireshark",
    "tcpdump",
    "latency",
    "tracing",
    "mirror",
    "canary",
];

/// True when `query`'s results are in the services' cache.
pub fn is_cached(query: &str) -> bool {
    POPULAR_QUERIES.contains(&query)
}

/// FNV-1a: a stable hash of a query, so results do not depend on the process or version.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Runs `f` on a thread inside `ns` (sockets it creates belong to that namespace, wherever
/// they are used afterwards) without blocking the async runtime while it runs.
pub async fn in_netns<F, R>(ns: &crate::netns::NetNs, f: F) -> anyhow::Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let thread = ns.spawn(f);
    let joined = tokio::task::spawn_blocking(move || thread.join()).await?;
    match joined {
        Ok(entered) => Ok(entered?),
        Err(_) => anyhow::bail!("a thread inside network namespace {} panicked", ns.name),
    }
}
