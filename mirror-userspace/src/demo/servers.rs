//! The demo's search service, in-process on axum, in two versions that answer every request
//! with the same status and the same bytes:
//!
//! - **search v1** (the primary) serves a cache miss with one batched database query
//!   (`SELECT ... WHERE id IN (...)`);
//! - **search v2** (the shadow, the candidate release) fetches each result with its own query:
//!   the N+1 bug. Cache hits are as fast as v1's, so the median barely moves; the tail does.
//!   It also discounts two items in five twice on `/price`: a changed field in a JSON answer;
//! - **the baseline**, a second search v1 beside the shadow (its ports [`BASELINE_PORT_OFFSET`]
//!   up): whatever differs between it and the primary is noise.
//!
//! A "database call" is a `tokio::time::sleep` of [`DATABASE_CALL`], and every request also
//! spends [`SERVICE_TIME`]. Each route has its own port (see [`super::ROUTES`]).

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::task::JoinHandle;

use super::{
    BASELINE_PORT_OFFSET, POPULAR_QUERIES, ROUTES, SplitMix64, in_netns, is_cached, stable_hash,
};
use crate::netns::NetNs;

/// One simulated database round trip. tokio's timer has millisecond resolution and rounds up,
/// so a call takes about 4 ms: a v2 cache miss (10 to 20 calls) then costs 40 to 80 ms, a tail
/// that stands out of a shared machine's scheduling noise.
pub const DATABASE_CALL: Duration = Duration::from_millis(3);
/// What every request costs in both versions besides the database (parsing, ranking,
/// rendering; about 2 ms, the timer rounding up). Against a realistic service time, the replay path's own
/// overhead in the shadow's latency (a fraction of a millisecond) does not look like a
/// regression of the fast paths.
pub const SERVICE_TIME: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// search v1: one database query per cache miss.
    V1,
    /// search v2: one database query per result on a cache miss (N+1), and a double discount.
    V2,
    /// search v1 again, as the baseline.
    Baseline,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 | Self::Baseline => "search v1",
            Self::V2 => "search v2",
        }
    }

    /// Its part in the demo.
    pub fn role(self) -> &'static str {
        match self {
            Self::V1 => "primary",
            Self::V2 => "shadow",
            Self::Baseline => "baseline",
        }
    }

    /// The port it serves `port`'s route on.
    pub fn port(self, port: u16) -> u16 {
        match self {
            Self::Baseline => port + BASELINE_PORT_OFFSET,
            Self::V1 | Self::V2 => port,
        }
    }
}

/// What one version received, counted by the service itself (not by the mirror): the demo
/// shows from these that no POST ever reached the shadow.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    pub searches: AtomicU64,
    pub suggests: AtomicU64,
    pub static_files: AtomicU64,
    pub prices: AtomicU64,
    pub clicks: AtomicU64,
    pub database_calls: AtomicU64,
}

impl ServiceCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A version serving on its ports (one per route); the servers stop on drop.
#[derive(Debug)]
pub struct RunningService {
    pub version: Version,
    pub address: Ipv4Addr,
    pub counters: Arc<ServiceCounters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RunningService {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds `version`'s ports on `address` inside `ns` and serves them on the current runtime.
pub async fn start(
    ns: &NetNs,
    address: Ipv4Addr,
    version: Version,
) -> anyhow::Result<RunningService> {
    let ports = ROUTES.map(|route| version.port(route.port));
    let listeners = in_netns(ns, move || {
        ports
            .iter()
            .map(|&port| {
                let listener = TcpListener::bind(SocketAddr::from((address, port)))?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await?
    .with_context(|| format!("binding {} on {address} in {}", version.name(), ns.name))?;

    let service = Service {
        version,
        counters: Arc::default(),
    };
    let routers = [
        Router::new()
            .route("/search", get(search))
            .route("/click", post(click)),
        Router::new().route("/suggest", get(suggest)),
        Router::new().route("/static/{*file}", get(static_file)),
        Router::new().route("/price", get(price)),
    ];
    let mut tasks = Vec::new();
    for (listener, router) in listeners.into_iter().zip(routers) {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = router.with_state(service.clone());
        tasks.push(tokio::spawn(async move {
            // Ends only with an accept error on the listener; the demo notices through the
            // client's failed requests.
            let _ = axum::serve(listener, app).await;
        }));
    }
    Ok(RunningService {
        version,
        address,
        counters: service.counters,
        tasks,
    })
}

#[derive(Clone)]
struct Service {
    version: Version,
    counters: Arc<ServiceCounters>,
}

impl Service {
    async fn work(&self) {
        tokio::time::sleep(SERVICE_TIME).await;
    }

    async fn database_call(&self) {
        self.counters.database_calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(DATABASE_CALL).await;
    }
}

/// `GET /search?q=...`: 10 to 20 results, the same for the same query in both versions.
async fn search(State(service): State<Service>, RawQuery(query): RawQuery) -> Response {
    service.counters.searches.fetch_add(1, Ordering::Relaxed);
    service.work().await;
    let Some(q) = query_param(query.as_deref(), "q") else {
        return (StatusCode::BAD_REQUEST, "missing q\n").into_response();
    };
    let ids = result_ids(&q);
    if !is_cached(&q) {
        match service.version {
            Version::V1 | Version::Baseline => service.database_call().await,
            Version::V2 => {
                for _ in &ids {
                    service.database_call().await;
                }
            }
        }
    }
    let results: Vec<String> = ids
        .iter()
        .map(|id| format!("{{\"id\":{id},\"title\":\"document {id}\"}}"))
        .collect();
    json(format!(
        "{{\"request_id\":\"{}\",\"query\":{},\"results\":[{}]}}\n",
        request_id(),
        json_string(&q),
        results.join(",")
    ))
}

/// `GET /suggest?q=prefix`: popular queries starting with the prefix.
async fn suggest(State(service): State<Service>, RawQuery(query): RawQuery) -> Response {
    service.counters.suggests.fetch_add(1, Ordering::Relaxed);
    service.work().await;
    let prefix = query_param(query.as_deref(), "q").unwrap_or_default();
    let suggestions: Vec<String> = POPULAR_QUERIES
        .iter()
        .filter(|candidate| candidate.starts_with(&prefix))
        .take(8)
        .map(|candidate| json_string(candidate))
        .collect();
    json(format!(
        "{{\"request_id\":\"{}\",\"suggestions\":[{}]}}\n",
        request_id(),
        suggestions.join(",")
    ))
}

/// `GET /price?item=N`: an item's price in cents, derived from the item alone, with the time
/// it was served. v2 applies its 10% discount twice to items whose number ends in 0, 1, 5 or 6
/// (two in five).
async fn price(State(service): State<Service>, RawQuery(query): RawQuery) -> Response {
    service.counters.prices.fetch_add(1, Ordering::Relaxed);
    service.work().await;
    let Some(item) = query_param(query.as_deref(), "item").and_then(|item| item.parse().ok())
    else {
        return (StatusCode::BAD_REQUEST, "missing item\n").into_response();
    };
    let served_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    json(format!(
        "{{\"request_id\":\"{}\",\"served_at\":{served_at},\"item\":{item},\"price_cents\":{},\"currency\":\"EUR\"}}\n",
        request_id(),
        price_cents(item, service.version)
    ))
}

/// What `version` charges for `item`, in cents.
pub fn price_cents(item: u64, version: Version) -> u64 {
    let list = 500 + stable_hash(&item.to_string()) % 9_500;
    let discounted = list * 9 / 10;
    match version {
        Version::V2 if item % 5 < 2 => discounted * 9 / 10,
        _ => discounted,
    }
}

/// A fresh id per response, as most APIs send: different in every answer of every version.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut random = SplitMix64::new(nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(32));
    format!("{:016x}", random.next_u64())
}

/// `GET /static/<file>`: fixed assets of 2 to 24 KB (the larger ones span several segments).
async fn static_file(State(service): State<Service>, Path(file): Path<String>) -> Response {
    service
        .counters
        .static_files
        .fetch_add(1, Ordering::Relaxed);
    service.work().await;
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => (
            [(header::CONTENT_TYPE, asset.content_type)],
            asset.body.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// `POST /click`: records which result a user clicked. A write: the mirror must never replay it.
async fn click(State(service): State<Service>, _body: Bytes) -> StatusCode {
    service.counters.clicks.fetch_add(1, Ordering::Relaxed);
    service.work().await;
    StatusCode::NO_CONTENT
}

/// The file names the traffic requests under `/static/`.
pub const ASSET_NAMES: [&str; 3] = ["app.js", "style.css", "logo.svg"];

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: Bytes,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    let sizes = [24 << 10, 6 << 10, 2 << 10];
    let types = ["text/javascript", "text/css", "image/svg+xml"];
    ASSET_NAMES
        .iter()
        .zip(sizes)
        .zip(types)
        .map(|((&name, size), content_type)| {
            let line = format!("/* {name}: the same bytes in every version */\n");
            let body: String = line.chars().cycle().take(size).collect();
            Asset {
                name,
                content_type,
                body: Bytes::from(body),
            }
        })
        .collect()
});

/// The ids of `query`'s results: 10 to 20, derived from the query alone.
fn result_ids(query: &str) -> Vec<u64> {
    let mut random = SplitMix64::new(stable_hash(query));
    let count = 10 + random.below(11);
    (0..count).map(|_| random.below(1_000_000)).collect()
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_depend_on_the_query_only() {
        assert_eq!(result_ids("rust async"), result_ids("rust async"));
        assert_ne!(result_ids("rust async"), result_ids("rust"));
        for query in ["a", "tokio", "linux tcp", ""] {
            assert!((10..=20).contains(&result_ids(query).len()));
        }
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("q=caf%C3%A9+au+lait&x=1"), "q").as_deref(),
            Some("café au lait")
        );
        assert_eq!(query_param(Some("x=1"), "q"), None);
        assert_eq!(query_param(None, "q"), None);
    }

    #[test]
    fn v2_changes_two_prices_in_five() {
        let changed = (0..1000)
            .filter(|&item| price_cents(item, Version::V2) != price_cents(item, Version::V1))
            .count();
        assert_eq!(changed, 400);
        assert!((0..1000).all(|item| {
            price_cents(item, Version::Baseline) == price_cents(item, Version::V1)
        }));
        assert_ne!(request_id(), request_id());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
