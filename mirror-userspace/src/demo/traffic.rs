//! The demo's users: HTTP/1.1 clients in the client namespace sending a realistic mix to the
//! primary. Some clients keep connections alive (and recycle them now and then, as browsers and
//! connection pools do), others open a new connection per request (`Connection: close`).
//! Query popularity is Zipf-like: most searches hit the cache, a long tail misses it.
//!
//! The clients run on their own thread, which joined the client namespace, with a
//! single-threaded tokio runtime: every socket it opens belongs to that namespace.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};
use bytes::BytesMut;
use tokio::{
    io::AsyncWriteExt as _,
    net::TcpStream,
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};

use super::{
    POPULAR_QUERIES, PRICE, ROUTES, Route, SEARCH, STATIC, SUGGEST, SplitMix64,
    servers::ASSET_NAMES,
};
use crate::{
    netns::{NetNs, NetnsError},
    replay::response::read_response,
};

/// How much traffic, for how long.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub duration: Duration,
    pub requests_per_second: u32,
    /// Clients that keep their connections open between requests.
    pub keep_alive_clients: u32,
    /// Clients that open a new connection for every request.
    pub short_clients: u32,
}

/// The mix, in percent of all requests (the rest are POST /click).
pub const SEARCH_PERCENT: f64 = 48.0;
pub const SUGGEST_PERCENT: f64 = 18.0;
pub const STATIC_PERCENT: f64 = 12.0;
pub const PRICE_PERCENT: f64 = 14.0;
pub const CLICK_PERCENT: f64 =
    100.0 - SEARCH_PERCENT - SUGGEST_PERCENT - STATIC_PERCENT - PRICE_PERCENT;
/// Items priced by `GET /price?item=N`, N uniform below this.
pub const ITEMS: u64 = 1000;
/// Share of searches for a popular query (a cache hit); the rest are long-tail misses.
pub const POPULAR_SEARCH_PERCENT: f64 = 85.0;
/// A keep-alive connection is replaced after a random number of requests up to this.
const MAX_REQUESTS_PER_CONNECTION: u64 = 200;
/// A request without a response by then counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The Host header the clients send (the mirror rewrites it to `search.demo-shadow`).
const HOST: &str = "search.demo";

/// What the clients did so far; read by the progress display while they run.
#[derive(Debug, Default)]
pub struct TrafficCounters {
    pub gets: AtomicU64,
    pub posts: AtomicU64,
    /// Requests without a complete response (connection refused or reset, timeout, garbage).
    pub failures: AtomicU64,
    pub connections: AtomicU64,
}

impl TrafficCounters {
    pub fn sent(&self) -> u64 {
        self.gets.load(Ordering::Relaxed) + self.posts.load(Ordering::Relaxed)
    }
}

/// The running clients. Dropping it asks them to stop.
#[derive(Debug)]
pub struct Traffic {
    thread: Option<JoinHandle<Result<anyhow::Result<()>, NetnsError>>>,
    stop: Arc<AtomicBool>,
}

impl Traffic {
    /// Starts `plan` from `ns` against `server` (the primary's address).
    pub fn start(
        ns: &NetNs,
        server: std::net::Ipv4Addr,
        plan: Plan,
        counters: Arc<TrafficCounters>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = ns.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the clients' runtime")?;
            runtime.block_on(drive(server, plan, counters, stop_flag));
            Ok(())
        });
        Self {
            thread: Some(thread),
            stop,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the clients to end (they stop at the plan's deadline).
    pub async fn finish(mut self) -> anyhow::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || thread.join()).await? {
            Ok(result) => result?,
            Err(_) => bail!("the client thread panicked"),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn drive(
    server: std::net::Ipv4Addr,
    plan: Plan,
    counters: Arc<TrafficCounters>,
    stop: Arc<AtomicBool>,
) {
    let clients = plan.keep_alive_clients + plan.short_clients;
    let period =
        Duration::from_secs_f64(f64::from(clients) / f64::from(plan.requests_per_second.max(1)));
    let deadline = Instant::now() + plan.duration;
    let mut tasks = JoinSet::new();
    for id in 0..clients {
        let client = Client {
            server,
            keep_alive: id < plan.keep_alive_clients,
            random: SplitMix64::new(0x5eed ^ (u64::from(id) << 32)),
            counters: Arc::clone(&counters),
            connections: Default::default(),
        };
        // Spread the clients' ticks over one period so requests do not arrive in bursts.
        let start = Instant::now() + period.mul_f64(f64::from(id) / f64::from(clients));
        let stop = Arc::clone(&stop);
        tasks.spawn(client.run(start, period, deadline, stop));
    }
    while tasks.join_next().await.is_some() {}
}

/// A keep-alive connection to one port, with the requests left before it is replaced.
struct PooledConnection {
    connection: Connection,
    requests_left: u64,
}

struct Client {
    server: std::net::Ipv4Addr,
    keep_alive: bool,
    random: SplitMix64,
    counters: Arc<TrafficCounters>,
    /// Keep-alive connections, by index into [`ROUTES`].
    connections: [Option<PooledConnection>; ROUTES.len()],
}

impl Client {
    async fn run(
        mut self,
        start: Instant,
        period: Duration,
        deadline: Instant,
        stop: Arc<AtomicBool>,
    ) {
        let mut ticks = tokio::time::interval_at(start, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                return;
            }
            let request = Request::pick(&mut self.random);
            let counter = if request.method == "POST" {
                &self.counters.posts
            } else {
                &self.counters.gets
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let sent = tokio::time::timeout(REQUEST_TIMEOUT, self.send(&request)).await;
            if !matches!(sent, Ok(Ok(()))) {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                // Half an exchange may be left on the connection: never reuse it.
                self.connections[request.route_index] = None;
            }
        }
    }

    async fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        let port = ROUTES[request.route_index].port;
        if !self.keep_alive {
            let mut connection = Connection::open(self.server, port, &self.counters).await?;
            connection.exchange(&request.bytes(true)).await?;
            return Ok(());
        }
        let pooled = match &mut self.connections[request.route_index] {
            Some(pooled) => pooled,
            empty => empty.insert(PooledConnection {
                connection: Connection::open(self.server, port, &self.counters).await?,
                requests_left: 1 + self.random.below(MAX_REQUESTS_PER_CONNECTION),
            }),
        };
        let response = pooled.connection.exchange(&request.bytes(false)).await?;
        pooled.requests_left -= 1;
        if pooled.requests_left == 0 || response.close {
            self.connections[request.route_index] = None;
        }
        Ok(())
    }
}

/// One request of the mix.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Request {
    /// Index into [`ROUTES`]: which port (and mirror target) it goes to.
    route_index: usize,
    method: &'static str,
    target: String,
    body: Option<String>,
}

impl Request {
    fn pick(random: &mut SplitMix64) -> Self {
        let dice = random.unit() * 100.0;
        let popular =
            |random: &mut SplitMix64| POPULAR_QUERIES[zipf_rank(random, POPULAR_QUERIES.len())];
        let get = |route: Route, target: String| Self {
            route_index: ROUTES.iter().position(|known| *known == route).unwrap_or(0),
            method: "GET",
            target,
            body: None,
        };
        if dice < SEARCH_PERCENT {
            let query = if random.unit() * 100.0 < POPULAR_SEARCH_PERCENT {
                popular(random).to_owned()
            } else {
                // Two words: never one of the cached single-word queries.
                let first = POPULAR_QUERIES[random.below(POPULAR_QUERIES.len() as u64) as usize];
                let second = POPULAR_QUERIES[random.below(POPULAR_QUERIES.len() as u64) as usize];
                format!("{first} {second}")
            };
            get(SEARCH, format!("/search?q={}", encode(&query)))
        } else if dice < SEARCH_PERCENT + SUGGEST_PERCENT {
            let word = popular(random);
            let length = (1 + random.below(3) as usize).min(word.len());
            get(SUGGEST, format!("/suggest?q={}", encode(&word[..length])))
        } else if dice < SEARCH_PERCENT + SUGGEST_PERCENT + STATIC_PERCENT {
            let asset = ASSET_NAMES[random.below(ASSET_NAMES.len() as u64) as usize];
            get(STATIC, format!("/static/{asset}"))
        } else if dice < SEARCH_PERCENT + SUGGEST_PERCENT + STATIC_PERCENT + PRICE_PERCENT {
            get(PRICE, format!("/price?item={}", random.below(ITEMS)))
        } else {
            let query = popular(random);
            let position = random.below(10);
            Self {
                route_index: 0,
                method: "POST",
                target: "/click".to_owned(),
                body: Some(format!("{{\"query\":\"{query}\",\"position\":{position}}}")),
            }
        }
    }

    /// The request on the wire; `close` asks the server to close the connection after it.
    fn bytes(&self, close: bool) -> Vec<u8> {
        let port = ROUTES[self.route_index].port;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: mirror-demo\r\nAccept: application/json\r\n",
            self.method, self.target
        );
        if close {
            head.push_str("Connection: close\r\n");
        }
        match &self.body {
            Some(body) => {
                head.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ));
            }
            None => head.push_str("\r\n"),
        }
        head.into_bytes()
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A rank in `0..count` with probability proportional to 1/(rank+1) (Zipf, exponent 1).
fn zipf_rank(random: &mut SplitMix64, count: usize) -> usize {
    let harmonic: f64 = (1..=count).map(|rank| 1.0 / rank as f64).sum();
    let mut remaining = random.unit() * harmonic;
    for rank in 0..count {
        remaining -= 1.0 / (rank + 1) as f64;
        if remaining < 0.0 {
            return rank;
        }
    }
    count - 1
}

/// What the clients need of a response.
struct ResponseSummary {
    /// The server will close the connection after this response.
    close: bool,
}

/// A client connection with the bytes read past the last response.
struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Connection {
    async fn open(
        server: std::net::Ipv4Addr,
        port: u16,
        counters: &TrafficCounters,
    ) -> anyhow::Result<Self> {
        let stream = TcpStream::connect((server, port))
            .await
            .with_context(|| format!("connecting to {server}:{port}"))?;
        stream.set_nodelay(true)?;
        counters.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            stream,
            buffer: BytesMut::with_capacity(32 << 10),
        })
    }

    /// Writes `request` and reads its response with the replay side's reader (the same
    /// framing rules as capture). Fails on any status other than 2xx.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<ResponseSummary> {
        self.stream.write_all(request).await?;
        let response = read_response(&mut self.stream, &mut self.buffer, false, None).await?;
        if !(200..300).contains(&response.status) {
            bail!("HTTP {}", response.status);
        }
        Ok(ResponseSummary {
            close: response.closes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_of_request_in_its_share() {
        let mut random = SplitMix64::new(7);
        let requests: Vec<Request> = (0..20_000).map(|_| Request::pick(&mut random)).collect();
        let share = |f: &dyn Fn(&Request) -> bool| {
            100.0 * requests.iter().filter(|r| f(r)).count() as f64 / requests.len() as f64
        };
        let searches = share(&|r| r.target.starts_with("/search"));
        assert!((searches - SEARCH_PERCENT).abs() < 2.0, "{searches}");
        let prices = share(&|r| r.target.starts_with("/price?item="));
        assert!((prices - PRICE_PERCENT).abs() < 1.5, "{prices}");
        let clicks = share(&|r| r.method == "POST");
        assert!((clicks - CLICK_PERCENT).abs() < 1.0, "{clicks}");
        let misses = share(&|r| r.target.starts_with("/search?q=") && r.target.contains('+'));
        let expected = SEARCH_PERCENT * (100.0 - POPULAR_SEARCH_PERCENT) / 100.0;
        assert!((misses - expected).abs() < 1.5, "{misses}");
    }

    #[test]
    fn requests_are_well_formed() {
        let click = Request {
            route_index: 0,
            method: "POST",
            target: "/click".to_owned(),
            body: Some("{}".to_owned()),
        };
        let bytes = String::from_utf8(click.bytes(true)).unwrap();
        assert!(bytes.starts_with("POST /click HTTP/1.1\r\nHost: search.demo:8080\r\n"));
        assert!(bytes.ends_with(
            "Connection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        ));
    }

    #[test]
    fn zipf_favours_the_first_ranks() {
        let mut random = SplitMix64::new(1);
        let mut counts = [0u32; 24];
        for _ in 0..10_000 {
            counts[zipf_rank(&mut random, 24)] += 1;
        }
        assert!(
            counts[0] > 2 * counts[3] && counts[3] > counts[23],
            "{counts:?}"
        );
    }
}
