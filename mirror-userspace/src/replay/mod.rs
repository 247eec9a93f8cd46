//! Asynchronous replay to the shadow (tokio adapter). Per target: a bounded queue (full => the
//! newest request is dropped and counted, never waited for), a fixed number of workers each with
//! a keep-alive connection, a per-request timeout, and a shared back-off while the shadow is
//! unreachable. Nothing here can block the capture path: the pipeline only ever `try_send`s.

mod connection;
pub mod response;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
pub use connection::{ConnectionError, ShadowConnection};
pub use response::ShadowResponse;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{capture::SelfTraffic, compare::ExchangeKey};

/// How often the shadow's name is resolved again (pods behind a headless service move).
const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where and how to replay one target's requests.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    pub target: String,
    /// Shadow host (name or address literal) and port.
    pub shadow_host: String,
    pub shadow_port: u16,
    pub queue: usize,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// One request to replay.
#[derive(Clone, Debug)]
pub struct ReplayJob {
    /// Returned in the result: pairs it with the primary's response.
    pub key: ExchangeKey,
    /// The rewritten head and the untouched body, written back to back.
    pub head: Bytes,
    pub body: Bytes,
    pub is_head: bool,
}

/// How a replay ended (`mirror_replays_total{outcome}`; `dropped` is counted by the caller when
/// [`Replayer::try_send`] refuses a job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    Ok,
    Error,
    Timeout,
}

impl ReplayOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// The end of one replay.
#[derive(Clone, Debug)]
pub struct ReplayResult {
    pub key: ExchangeKey,
    pub outcome: ReplayOutcome,
    /// The shadow's response and latency when `outcome` is `Ok`.
    pub response: Option<(ShadowResponse, Duration)>,
}

/// Shared state of a target's workers: resolved addresses and back-off.
struct ShadowState {
    config: ReplayConfig,
    addrs: Mutex<(Vec<SocketAddr>, Option<Instant>)>,
    next_addr: AtomicU64,
    /// While set and in the future, workers fail jobs fast instead of reconnecting.
    backoff: Mutex<(Option<Instant>, Duration)>,
}

impl ShadowState {
    async fn addr(&self) -> Option<SocketAddr> {
        let stale = {
            let addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
            addrs.0.is_empty() || addrs.1.is_none_or(|at| at.elapsed() > RESOLVE_INTERVAL)
        };
        if stale {
            let host = (self.config.shadow_host.as_str(), self.config.shadow_port);
            match tokio::net::lookup_host(host).await {
                Ok(resolved) => {
                    let resolved: Vec<_> = resolved.collect();
                    let mut addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
                    *addrs = (resolved, Some(Instant::now()));
                }
                Err(error) => warn!(
                    target = %self.config.target,
                    shadow = %self.config.shadow_host,
                    %error,
                    "resolving the shadow"
                ),
            }
        }
        let addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        if addrs.0.is_empty() {
            return None;
        }
        let index = self.next_addr.fetch_add(1, Ordering::Relaxed) as usize % addrs.0.len();
        Some(addrs.0[index])
    }

    fn backing_off(&self) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff.0.is_some_and(|until| Instant::now() < until)
    }

    fn connect_failed(&self) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let delay = backoff.1.max(BACKOFF_MIN);
        *backoff = (Some(Instant::now() + delay), (delay * 2).min(BACKOFF_MAX));
        // Force a fresh resolution on the next attempt.
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).1 = None;
    }

    fn connected(&self) {
        *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) = (None, BACKOFF_MIN);
    }
}

/// Handle on one target's replay queue and workers. Dropping it stops the workers once the
/// queue is empty.
pub struct Replayer {
    sender: mpsc::Sender<ReplayJob>,
}

impl Replayer {
    /// Starts `config.concurrency` workers. Results go to `results` (one per accepted job).
    pub fn spawn(
        config: ReplayConfig,
        self_traffic: Option<SelfTraffic>,
        results: mpsc::UnboundedSender<ReplayResult>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let state = Arc::new(ShadowState {
            addrs: Mutex::new((Vec::new(), None)),
            next_addr: AtomicU64::new(0),
            backoff: Mutex::new((None, BACKOFF_MIN)),
            config: config.clone(),
        });
        for _ in 0..config.concurrency.max(1) {
            tokio::spawn(worker(
                Arc::clone(&state),
                Arc::clone(&receiver),
                self_traffic.clone(),
                results.clone(),
            ));
        }
        Self { sender }
    }

    /// Queues a job; `false` when the queue is full (the caller counts it as dropped).
    pub fn try_send(&self, job: ReplayJob) -> bool {
        self.sender.try_send(job).is_ok()
    }

    /// Jobs waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

async fn worker(
    state: Arc<ShadowState>,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<ReplayJob>>>,
    self_traffic: Option<SelfTraffic>,
    results: mpsc::UnboundedSender<ReplayResult>,
) {
    let mut connection: Option<ShadowConnection> = None;
    loop {
        let Some(job) = jobs.lock().await.recv().await else {
            return;
        };
        let key = job.key;
        let result = tokio::time::timeout(
            state.config.timeout,
            replay_one(&state, &mut connection, self_traffic.as_ref(), &job),
        )
        .await;
        let result = match result {
            Ok(Ok(response)) => ReplayResult {
                key,
                outcome: ReplayOutcome::Ok,
                response: Some(response),
            },
            Ok(Err(error)) => {
                debug!(target = %state.config.target, %error, "replay failed");
                connection = None;
                ReplayResult {
                    key,
                    outcome: ReplayOutcome::Error,
                    response: None,
                }
            }
            Err(_) => {
                // The connection may be mid-response: never reuse it.
                connection = None;
                ReplayResult {
                    key,
                    outcome: ReplayOutcome::Timeout,
                    response: None,
                }
            }
        };
        if results.send(result).is_err() {
            return;
        }
    }
}

/// Why a single replay failed before or while talking to the shadow.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("backing off: the shadow was unreachable moments ago")]
    BackingOff,
    #[error("the shadow's name did not resolve to any address")]
    Unresolved,
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

async fn replay_one(
    state: &ShadowState,
    connection: &mut Option<ShadowConnection>,
    self_traffic: Option<&SelfTraffic>,
    job: &ReplayJob,
) -> Result<(ShadowResponse, Duration), ReplayError> {
    // A kept-alive connection the shadow closed while idle fails before any response byte; that
    // request never reached the application, so it is sent once more on a fresh connection.
    let reused = connection
        .as_ref()
        .is_some_and(ShadowConnection::is_reusable);
    match exchange(state, connection, self_traffic, job).await {
        Err(ReplayError::Connection(
            ConnectionError::Write(_)
            | ConnectionError::Response(response::ResponseError::NoResponse),
        )) if reused => exchange(state, connection, self_traffic, job).await,
        result => result,
    }
}

async fn exchange(
    state: &ShadowState,
    connection: &mut Option<ShadowConnection>,
    self_traffic: Option<&SelfTraffic>,
    job: &ReplayJob,
) -> Result<(ShadowResponse, Duration), ReplayError> {
    if connection.as_ref().is_none_or(|open| !open.is_reusable()) {
        *connection = None;
        if state.backing_off() {
            return Err(ReplayError::BackingOff);
        }
        let addr = state.addr().await.ok_or(ReplayError::Unresolved)?;
        match ShadowConnection::connect(addr, self_traffic).await {
            Ok(connected) => {
                state.connected();
                *connection = Some(connected);
            }
            Err(error) => {
                state.connect_failed();
                return Err(error.into());
            }
        }
    }
    let Some(open) = connection.as_mut() else {
        return Err(ReplayError::Unresolved);
    };
    match open.exchange(&job.head, &job.body, job.is_head).await {
        Ok(done) => {
            if !open.is_reusable() {
                *connection = None;
            }
            Ok(done)
        }
        Err(error) => {
            *connection = None;
            Err(error.into())
        }
    }
}
