//! Asynchronous replay to the shadow (tokio adapter). Per target: a bounded queue (full => the
//! newest request is dropped and counted, never waited for), a fixed number of workers each with
//! a keep-alive connection, a per-request timeout, and a shared back-off while the shadow is
//! unreachable. Nothing here can block the capture path: the pipeline only ever `try_send`s.
//!
//! A worker that finds more safe requests (GET, HEAD, OPTIONS) already queued writes them back
//! to back on its connection (HTTP/1.1 pipelining, RFC 9112 §9.3.2): one write and a few reads
//! for several requests instead of a write and a read each, which was most of the daemon's
//! per-request CPU. The depth adapts to the shadow: it is bounded so that the shadow's last
//! measured latency times the depth stays within a quarter of the timeout, so a slow shadow
//! (or one whose last batch timed out) gets one request at a time. Only the first response of
//! a batch is timed (the others wait behind it on the connection, which says nothing about the
//! shadow's own latency).
//!
//! A request is sent to the shadow at most once unless its method is idempotent (RFC 9110
//! §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE). Requests the shadow left unanswered when it
//! closed a keep-alive connection (one that carried earlier requests, or part-way through a
//! pipelined batch; the write failed or no response came) are sent once more on a fresh
//! connection only when each of them is idempotent. Any other request that may have reached
//! the shadow (a write error, no response, the connection closed before its response) ends as
//! `error` and is never sent again; before one is written on a reused connection, the
//! connection is checked for a close the shadow sent while it was idle, and a fresh one is
//! opened instead. A request that certainly never left (the connection could not be opened,
//! or the shadow is backing off) fails as any other.

mod arrival;
mod connection;
pub mod response;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
pub use connection::{ConnectionError, ShadowConnection};
use prometheus_client::metrics::counter::Counter;
pub use response::ShadowResponse;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::held::BodyBudget;
use crate::{capture::SelfTraffic, compare::ExchangeKey};

/// How often the shadow's name is resolved again (pods behind a headless service move).
const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most requests written back to back on one connection. Deeper batches cost the daemon and
/// the shadow fewer reads and writes per request, and 64 workers then hold 4096 requests in
/// flight before the queue starts to fill, which rides out a shadow's short stalls. Three
/// 15 s runs at 10k req/s each (`mirror-bench --tables none --completeness-seconds 15
/// --completeness-rates 10000`) measured 2.4-2.7 s of daemon CPU per 100k requests and
/// 95.5-98.8% completeness with 8, 1.5-1.9 s and 100% with 32; in three more rounds of the
/// same runs alternating with 32 (both builds with the 3 ms wake-up window and, since
/// reverted, mimalloc), 64 measured 1.14-1.55 s against 1.36-1.60 s.
const MAX_PIPELINE: usize = 64;

/// Where and how to replay one target's requests.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    pub target: String,
    /// The shadow's name, returned in every [`ReplayResult`].
    pub shadow: Arc<str>,
    /// Shadow host (name or address literal) and port.
    pub shadow_host: String,
    pub shadow_port: u16,
    pub queue: usize,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Holds the shadow's response bodies within this budget (field-level comparison).
    pub hold_bodies: Option<BodyBudget>,
    /// Counts the connections opened to the shadow (`mirror_shadow_connections_opened_total`).
    pub connections_opened: Counter,
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
    /// May share a connection write with other requests: a safe method (GET, HEAD, OPTIONS),
    /// HTTP/1.1, not asking the shadow to close the connection.
    pub pipelinable: bool,
    /// May be sent again when the shadow may have received it without answering: the method
    /// is idempotent ([`is_idempotent`]).
    pub idempotent: bool,
    /// The response body is held (within `hold_bodies`) for the field diff: only exchanges
    /// sampled for one (`[verdict.diff] max_per_second`), the others need only the digest.
    pub hold_body: bool,
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2): sending it twice has the effect of
/// sending it once, so a replay the shadow left unanswered may be sent again. Methods are
/// case-sensitive.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
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

/// Why [`Replayer::would_refuse`] expects a job to go nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Counted as `dropped`.
    QueueFull,
    /// Counted as `error`: no connection is open and the last attempt to connect failed.
    ShadowDown,
}

impl Refusal {
    /// The `mirror_replays_total{outcome}` it is counted as.
    pub const fn outcome(self) -> &'static str {
        match self {
            Self::QueueFull => "dropped",
            Self::ShadowDown => ReplayOutcome::Error.as_str(),
        }
    }
}

/// The end of one replay.
#[derive(Clone, Debug)]
pub struct ReplayResult {
    pub key: ExchangeKey,
    /// Which of the target's shadows answered ([`ReplayConfig::shadow`]).
    pub shadow: Arc<str>,
    pub outcome: ReplayOutcome,
    /// The shadow's response when `outcome` is `Ok`, with its latency when it was timed (the
    /// first response of a pipelined batch).
    pub response: Option<(ShadowResponse, Option<Duration>)>,
}

/// Shared state of a target's workers: resolved addresses and back-off.
#[derive(Debug)]
struct ShadowState {
    config: ReplayConfig,
    addrs: Mutex<(Vec<SocketAddr>, Option<Instant>)>,
    next_addr: AtomicU64,
    /// While set and in the future, workers fail jobs fast instead of reconnecting.
    backoff: Mutex<(Option<Instant>, Duration)>,
    /// Connections to the shadow alive.
    open: Arc<AtomicUsize>,
}

impl ShadowState {
    async fn addr(&self) -> Option<SocketAddr> {
        let stale = {
            let addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
            addrs.0.is_empty() || addrs.1.is_none_or(|at| at.elapsed() > RESOLVE_INTERVAL)
        };
        if stale {
            let host = (self.config.shadow_host.as_str(), self.config.shadow_port);
            match tokio::net::lookup_host(host).await {
                Ok(resolved) => {
                    let resolved: Vec<_> = resolved.collect();
                    let mut addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
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
        let addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        if addrs.0.is_empty() {
            return None;
        }
        let index = self.next_addr.fetch_add(1, Ordering::Relaxed) as usize % addrs.0.len();
        Some(addrs.0[index])
    }

    fn backing_off(&self) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        backoff.0.is_some_and(|until| Instant::now() < until)
    }

    fn connect_failed(&self) {
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        let delay = backoff.1.max(BACKOFF_MIN);
        *backoff = (Some(Instant::now() + delay), (delay * 2).min(BACKOFF_MAX));
        // Force a fresh resolution on the next attempt.
        self.addrs.lock().unwrap_or_else(PoisonError::into_inner).1 = None;
    }

    fn connected(&self) {
        *self.backoff.lock().unwrap_or_else(PoisonError::into_inner) = (None, BACKOFF_MIN);
    }
}

/// Handle on one target's replay queue and workers. Dropping it stops the workers once the
/// queue is empty.
#[derive(Debug)]
pub struct Replayer {
    sender: mpsc::Sender<ReplayJob>,
    state: Arc<ShadowState>,
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
            open: Arc::new(AtomicUsize::new(0)),
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
        Self { sender, state }
    }

    /// Whether a job offered now would be refused or failed without reaching the shadow: the
    /// queue is full (it would be dropped) or the shadow was unreachable moments ago and no
    /// connection is open (it would fail fast). Lets the caller skip preparing the request.
    pub fn would_refuse(&self) -> Option<Refusal> {
        if self.sender.capacity() == 0 {
            return Some(Refusal::QueueFull);
        }
        (self.state.open.load(Ordering::Relaxed) == 0 && self.state.backing_off())
            .then_some(Refusal::ShadowDown)
    }

    /// Queues a job; `false` when the queue is full (the caller counts it as dropped).
    pub fn try_send(&self, job: ReplayJob) -> bool {
        self.sender.try_send(job).is_ok()
    }

    /// Jobs waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Jobs the queue holds at most.
    pub fn queue_capacity(&self) -> usize {
        self.sender.max_capacity()
    }
}

/// How many requests a worker may write back to back, given the shadow's last measured latency
/// on its connection: the whole batch must be answered well within the timeout. Unknown latency
/// (a fresh worker) allows one.
fn pipeline_depth(last_latency: Option<Duration>, timeout: Duration) -> usize {
    let Some(latency) = last_latency else {
        return 1;
    };
    let budget = (timeout / 4).as_nanos();
    (budget / latency.as_nanos().max(1)).clamp(1, MAX_PIPELINE as u128) as usize
}

/// Takes the next batch: one job (waiting for it), then, when it may be pipelined, the
/// pipelinable jobs already queued up to `depth`. A queued job that may not be pipelined is
/// returned apart and goes first next time.
async fn next_batch(
    jobs: &tokio::sync::Mutex<mpsc::Receiver<ReplayJob>>,
    held: &mut Option<ReplayJob>,
    depth: usize,
) -> Option<Vec<ReplayJob>> {
    let mut receiver = jobs.lock().await;
    let first = match held.take() {
        Some(job) => job,
        None => receiver.recv().await?,
    };
    let mut batch = vec![first];
    while batch[0].pipelinable && batch.len() < depth {
        match receiver.try_recv() {
            Ok(job) if job.pipelinable => batch.push(job),
            Ok(job) => {
                *held = Some(job);
                break;
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn worker(
    state: Arc<ShadowState>,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<ReplayJob>>>,
    self_traffic: Option<SelfTraffic>,
    results: mpsc::UnboundedSender<ReplayResult>,
) {
    let mut connection: Option<ShadowConnection> = None;
    let mut held = None;
    let mut last_latency = None;
    loop {
        let depth = pipeline_depth(last_latency, state.config.timeout);
        let Some(batch) = next_batch(&jobs, &mut held, depth).await else {
            return;
        };
        let mut done = Vec::with_capacity(batch.len());
        let outcome = replay_batch(
            &state,
            &mut connection,
            self_traffic.as_ref(),
            &batch,
            &mut done,
        )
        .await;
        if let Some(latency) = done.iter().find_map(|(_, latency)| *latency) {
            last_latency = Some(latency);
        }
        if matches!(outcome, Err(BatchError::Timeout)) {
            // The shadow slowed down past what the batch allowed: one request at a time until
            // a response says otherwise.
            last_latency = Some(state.config.timeout);
        }
        let answered = done.len();
        for (job, response) in batch.iter().zip(done) {
            let result = ReplayResult {
                key: job.key,
                shadow: Arc::clone(&state.config.shadow),
                outcome: ReplayOutcome::Ok,
                response: Some(response),
            };
            if results.send(result).is_err() {
                return;
            }
        }
        let failed = match outcome {
            Ok(()) => continue,
            Err(BatchError::Timeout) => ReplayOutcome::Timeout,
            Err(BatchError::Failed(error)) => {
                debug!(target = %state.config.target, %error, "replay failed");
                ReplayOutcome::Error
            }
        };
        for job in &batch[answered..] {
            let result = ReplayResult {
                key: job.key,
                shadow: Arc::clone(&state.config.shadow),
                outcome: failed,
                response: None,
            };
            if results.send(result).is_err() {
                return;
            }
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
    #[error("the shadow closed the connection before answering every pipelined request")]
    Unanswered,
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

/// How the unanswered rest of a batch ends.
enum BatchError {
    Timeout,
    Failed(ReplayError),
}

/// Replays `batch`, pushing each response (with its latency when timed) to `done` in order; on
/// error, the jobs from `done.len()` on are unanswered and the connection is dropped. Each
/// attempt has the per-request timeout. Requests the shadow never answered are sent once more
/// on a fresh connection when the connection turned out stale (closed while idle) or was
/// closed after some answers (keep-alive limit), and only when every one of them is
/// idempotent: the shadow may have received and processed them before it closed, and a
/// second POST would be a second order. The others end as errors, sent once.
async fn replay_batch(
    state: &ShadowState,
    connection: &mut Option<ShadowConnection>,
    self_traffic: Option<&SelfTraffic>,
    batch: &[ReplayJob],
    done: &mut Vec<(ShadowResponse, Option<Duration>)>,
) -> Result<(), BatchError> {
    let mut retried = false;
    loop {
        let before = done.len();
        if !resendable(&batch[before..])
            && connection
                .as_ref()
                .is_some_and(|open| open.is_reusable() && open.closed_by_shadow())
        {
            // Closed while idle: nothing of this request has left yet, so a fresh connection
            // avoids an error that could not be told from a request the shadow hung up on.
            *connection = None;
        }
        let reused = connection
            .as_ref()
            .is_some_and(ShadowConnection::is_reusable);
        let attempt = tokio::time::timeout(
            state.config.timeout,
            exchange(state, connection, self_traffic, &batch[before..], done),
        )
        .await;
        // After any failure the connection may be mid-response: never reuse it.
        let error = match attempt {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => {
                *connection = None;
                return Err(BatchError::Timeout);
            }
        };
        *connection = None;
        let answered_some = done.len() > before;
        let unanswered = matches!(
            error,
            ReplayError::Unanswered
                | ReplayError::Connection(
                    ConnectionError::Write(_)
                        | ConnectionError::Response(response::ResponseError::NoResponse)
                )
        );
        // Never twice for a request that is not idempotent: the shadow may have processed it.
        let resend = unanswered && (reused || answered_some) && resendable(&batch[done.len()..]);
        if retried || !resend {
            return Err(BatchError::Failed(error));
        }
        retried = true;
    }
}

/// Whether `jobs` may all be sent again after the shadow left them unanswered.
fn resendable(jobs: &[ReplayJob]) -> bool {
    jobs.iter().all(|job| job.idempotent)
}

/// One attempt: connects if needed, writes `jobs` and reads their responses into `done`.
async fn exchange(
    state: &ShadowState,
    connection: &mut Option<ShadowConnection>,
    self_traffic: Option<&SelfTraffic>,
    jobs: &[ReplayJob],
    done: &mut Vec<(ShadowResponse, Option<Duration>)>,
) -> Result<(), ReplayError> {
    if connection.as_ref().is_none_or(|open| !open.is_reusable()) {
        *connection = None;
        if state.backing_off() {
            return Err(ReplayError::BackingOff);
        }
        let addr = state.addr().await.ok_or(ReplayError::Unresolved)?;
        match ShadowConnection::connect(addr, self_traffic, Arc::clone(&state.open)).await {
            Ok(connected) => {
                state.connected();
                state.config.connections_opened.inc();
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
    open.send(jobs).await?;
    for (index, job) in jobs.iter().enumerate() {
        let (response, latency) = open
            .read_response(
                job.is_head,
                state.config.hold_bodies.as_ref().filter(|_| job.hold_body),
            )
            .await?;
        let closes = response.closes;
        done.push((response, latency));
        if closes && index + 1 < jobs.len() {
            return Err(ReplayError::Unanswered);
        }
    }
    open.finish();
    if !open.is_reusable() {
        *connection = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
