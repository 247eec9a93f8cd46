//! Capture adapter: loads the TC classifier, attaches it to interfaces, fills the target-port map,
//! reads the per-CPU counters and hands out the ring-buffer reader ([`reader`]).
//!
//! Minimum kernel: 5.8 (ring buffer). On kernels >= 6.6 programs attach through TCX links, which
//! the kernel detaches when the last file descriptor closes (also on SIGKILL). Older kernels use
//! netlink cls_bpf filters that outlive a killed process, so start-up removes stale filters that
//! carry our program name (never the whole clsact qdisc, which the CNI may use).

mod attach;
pub mod interfaces;
pub mod reader;
mod scope;

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    sync::{Arc, Mutex, PoisonError},
};

pub use attach::{Capture, LinkChanges};
use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, SchedClassifier},
};
pub use interfaces::Interface;
pub use mirror_common::SAMPLE_SCALE;
use mirror_common::{
    CLASSIFIER_PROGRAM, COUNTER_COUNT, COUNTERS_MAP, Counter, EVENTS_MAP, REPLAY_SOCKETS_MAP,
    TARGET_PORTS_MAP, TargetPort, WAKEUP_BYTES_GLOBAL,
};
pub use reader::{
    DEFAULT_QUEUE_BYTES, MAX_QUEUE_BYTES, MIN_QUEUE_BYTES, QueueBudget, QueuedBatch, ReaderStats,
    RingReader, SegmentBatch, spawn_reader,
};
use tracing::debug;

/// The classifier object, built by `build.rs` from the `mirror-ebpf` crate.
static CLASSIFIER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mirror-ebpf"));

/// Errors of the capture domain, each with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no interface given; pass --interface NAME (or a pattern such as 'veth*')")]
    NoInterfaces,
    #[error("no target port given; pass --port PORT")]
    NoPorts,
    #[error("interface '{name}' does not exist in this network namespace (available: {available})")]
    UnknownInterface { name: String, available: String },
    #[error("invalid interface pattern '{pattern}': {reason}")]
    Pattern {
        pattern: String,
        reason: &'static str,
    },
    #[error("listing network interfaces (if_nameindex): {0}")]
    ListInterfaces(#[source] io::Error),
    #[error(
        "ring buffer size {0} is invalid: it must be a power of two and a multiple of the page size"
    )]
    RingSize(u32),
    #[error(
        "loading the eBPF object (bpf syscall): {0}; mirror needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    Load(#[source] EbpfError),
    #[error("the eBPF object has no {0}; it was built from a different mirror-ebpf version")]
    MissingObject(&'static str),
    #[error("loading the classifier into the kernel (BPF_PROG_LOAD): {0}")]
    ProgramLoad(#[source] ProgramError),
    #[error("{operation} map {map}: {source}")]
    Map {
        map: &'static str,
        operation: &'static str,
        #[source]
        source: MapError,
    },
    #[error("attaching the classifier to {interface} {direction} (TCX/netlink): {source}")]
    Attach {
        interface: String,
        direction: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("registering the ring buffer with the async reactor (epoll_ctl): {0}")]
    Reactor(#[source] io::Error),
    #[error("reading the socket cookie of a replay socket (getsockopt SO_COOKIE): {0}")]
    SocketCookie(#[source] io::Error),
}

/// What to capture.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Interface names or glob patterns.
    pub interfaces: Vec<String>,
    /// Target TCP ports: segments to them are requests, from them responses.
    pub ports: Vec<u16>,
    /// Ring buffer size in bytes: a power of two, multiple of the page size.
    pub ring_buffer_bytes: u32,
}

/// Default ring buffer size (`[capture] ring_buffer_bytes`).
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 16 * 1024 * 1024;

/// Sums of the classifier's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    values: [u64; COUNTER_COUNT as usize],
}

impl KernelCounters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }

    /// Records lost in the kernel (ring buffer full or copy failures).
    pub fn lost_records(&self) -> u64 {
        self.get(Counter::RingbufFull) + self.get(Counter::CopyErrors)
    }

    /// Payload bytes the kernel saw but could not deliver.
    pub fn lost_bytes(&self) -> u64 {
        self.get(Counter::LostBytes) + self.get(Counter::TruncatedBytes)
    }

    /// All counters with their names, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL
            .iter()
            .map(|counter| (*counter, self.get(*counter)))
    }
}

/// The classifier loaded into the kernel with its maps, not attached anywhere yet. Tests drive it
/// with `BPF_PROG_TEST_RUN` through [`Classifier::program`].
pub struct Classifier {
    ebpf: Ebpf,
    target_ports: Array<MapData, TargetPort>,
    scope: scope::ScopeMaps,
    counters: KernelCounterReader,
    ring: Option<RingBuf<MapData>>,
    self_traffic: SelfTraffic,
}

// aya's Array, RingBuf and the scope tries have no Debug.
impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("ebpf", &self.ebpf)
            .field("counters", &self.counters)
            .field("self_traffic", &self.self_traffic)
            .finish_non_exhaustive()
    }
}

/// Registry of the daemon's own replay sockets: the classifier never records their traffic, in
/// either direction, whatever the shadow's address or port (see `is_self_traffic` in the
/// classifier). Cheap to clone; share it with the replay connection pool.
#[derive(Clone, Debug)]
pub struct SelfTraffic {
    sockets: Arc<Mutex<HashMap<MapData, u64, u8>>>,
}

impl SelfTraffic {
    /// Registers `socket` (before it connects, so its SYN is already ignored). Returns the
    /// socket cookie to pass to [`SelfTraffic::unregister`] when the socket closes.
    pub fn register(&self, socket: BorrowedFd<'_>) -> Result<u64, CaptureError> {
        let cookie = socket_cookie(socket)?;
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        sockets
            .insert(cookie, 1, 0)
            .map_err(map_error(REPLAY_SOCKETS_MAP, "updating"))?;
        Ok(cookie)
    }

    /// Forgets a closed socket. The classifier's remembered 4-tuples age out by themselves.
    pub fn unregister(&self, cookie: u64) {
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = sockets.remove(&cookie) {
            debug!(cookie, %error, "unregistering a replay socket");
        }
    }
}

/// `getsockopt(SOL_SOCKET, SO_COOKIE)`: the kernel's 64-bit identity of a socket, the same value
/// `bpf_get_socket_cookie` returns for its packets.
fn socket_cookie(socket: BorrowedFd<'_>) -> Result<u64, CaptureError> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, output buffer and length of the right size.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(CaptureError::SocketCookie(io::Error::last_os_error()));
    }
    Ok(cookie)
}

fn map_error(map: &'static str, operation: &'static str) -> impl FnOnce(MapError) -> CaptureError {
    move |source| CaptureError::Map {
        map,
        operation,
        source,
    }
}

impl Classifier {
    /// Loads the classifier (BPF_PROG_LOAD) with a ring buffer of `ring_buffer_bytes` and marks
    /// `ports` as targets.
    pub fn load(ports: &[u16], ring_buffer_bytes: u32) -> Result<Self, CaptureError> {
        if ports.is_empty() {
            return Err(CaptureError::NoPorts);
        }
        let page = page_size();
        let ring = ring_buffer_bytes;
        if !ring.is_power_of_two()
            || (ring as usize) < page
            || !(ring as usize).is_multiple_of(page)
        {
            return Err(CaptureError::RingSize(ring));
        }
        // Wake the reader once an eighth of the ring is pending (at most 256 KiB): batches of
        // hundreds of records per wake-up under load; the reader's poll interval
        // (`reader::POLL_INTERVAL`) collects what stays below the threshold.
        let wakeup_bytes = u64::from(ring / 8).min(256 * 1024);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(EVENTS_MAP, ring)
            .override_global(WAKEUP_BYTES_GLOBAL, &wakeup_bytes, true)
            .load(CLASSIFIER_OBJECT)
            .map_err(CaptureError::Load)?;

        let mut target_ports: Array<MapData, TargetPort> = Array::try_from(
            ebpf.take_map(TARGET_PORTS_MAP)
                .ok_or(CaptureError::MissingObject(TARGET_PORTS_MAP))?,
        )
        .map_err(map_error(TARGET_PORTS_MAP, "opening"))?;
        for port in ports {
            target_ports
                .set(u32::from(*port), TargetPort::ALL, 0)
                .map_err(map_error(TARGET_PORTS_MAP, "updating"))?;
        }
        let counters = KernelCounterReader {
            map: Arc::new(
                PerCpuArray::try_from(
                    ebpf.take_map(COUNTERS_MAP)
                        .ok_or(CaptureError::MissingObject(COUNTERS_MAP))?,
                )
                .map_err(map_error(COUNTERS_MAP, "opening"))?,
            ),
        };
        let ring = RingBuf::try_from(
            ebpf.take_map(EVENTS_MAP)
                .ok_or(CaptureError::MissingObject(EVENTS_MAP))?,
        )
        .map_err(map_error(EVENTS_MAP, "opening"))?;
        let sockets = HashMap::try_from(
            ebpf.take_map(REPLAY_SOCKETS_MAP)
                .ok_or(CaptureError::MissingObject(REPLAY_SOCKETS_MAP))?,
        )
        .map_err(map_error(REPLAY_SOCKETS_MAP, "opening"))?;

        let scope = scope::ScopeMaps::new(&mut ebpf)?;
        let mut classifier = Self {
            ebpf,
            target_ports,
            scope,
            counters,
            ring: Some(ring),
            self_traffic: SelfTraffic {
                sockets: Arc::new(Mutex::new(sockets)),
            },
        };
        classifier
            .program_mut()?
            .load()
            .map_err(CaptureError::ProgramLoad)?;
        Ok(classifier)
    }

    /// The loaded program (for `test_run`, program info and statistics).
    pub fn program(&self) -> Result<&SchedClassifier, CaptureError> {
        self.ebpf
            .program(CLASSIFIER_PROGRAM)
            .ok_or(CaptureError::MissingObject(CLASSIFIER_PROGRAM))?
            .try_into()
            .map_err(CaptureError::ProgramLoad)
    }

    /// The loaded program, mutably (attach it by hand, e.g. one direction only in benchmarks).
    pub fn program_mut(&mut self) -> Result<&mut SchedClassifier, CaptureError> {
        self.ebpf
            .program_mut(CLASSIFIER_PROGRAM)
            .ok_or(CaptureError::MissingObject(CLASSIFIER_PROGRAM))?
            .try_into()
            .map_err(CaptureError::ProgramLoad)
    }

    /// Makes exactly `ports` the target ports, each with the share of its connections the
    /// classifier keeps, in parts per million ([`SAMPLE_SCALE`] keeps all; less samples
    /// connections in the kernel). Capture continues without a gap for ports in both sets, and
    /// a lowered rate keeps the connections the classifier already mirrors
    /// ([`TargetPort::resampled`]).
    pub fn set_ports(&mut self, old: &[u16], ports: &[(u16, u32)]) -> Result<(), CaptureError> {
        for (port, ppm) in ports {
            let current = self
                .target_ports
                .get(&u32::from(*port), 0)
                .map_err(map_error(TARGET_PORTS_MAP, "reading"))?;
            self.target_ports
                .set(u32::from(*port), current.resampled(*ppm), 0)
                .map_err(map_error(TARGET_PORTS_MAP, "updating"))?;
        }
        for port in old
            .iter()
            .filter(|port| !ports.iter().any(|(kept, _)| kept == *port))
        {
            self.target_ports
                .set(u32::from(*port), TargetPort::NONE, 0)
                .map_err(map_error(TARGET_PORTS_MAP, "updating"))?;
        }
        Ok(())
    }

    /// Scopes `port` to the destinations `nets` (its packets to or from other server addresses
    /// are counted, not recorded; an empty list records nothing), or, with `None`, records
    /// every destination on it. The prefixes go in before the port is scoped and out after it
    /// is unscoped, so no packet of a kept address is missed on the way.
    pub fn set_scope(
        &mut self,
        port: u16,
        nets: Option<&[ipnet::IpNet]>,
    ) -> Result<(), CaptureError> {
        let key = u32::from(port);
        let target_ports = &mut self.target_ports;
        let Some(nets) = nets else {
            let current = target_ports
                .get(&key, 0)
                .map_err(map_error(TARGET_PORTS_MAP, "reading"))?;
            if current.scoped != 0 {
                target_ports
                    .set(key, current.with_scope(false), 0)
                    .map_err(map_error(TARGET_PORTS_MAP, "updating"))?;
            }
            return self.scope.clear(port);
        };
        self.scope.set(port, nets, |list| {
            let current = target_ports
                .get(&key, 0)
                .map_err(map_error(TARGET_PORTS_MAP, "reading"))?;
            // The list first, then the flag: a packet never pairs the flag with a stale index.
            // (On a scoped port the index only flips its lowest bit or leaves `SCOPE_NO_LIST`,
            // see `scope`.) Also on a port that is no target yet: `set_ports` keeps both when it
            // makes it one.
            let mut write = |entry: TargetPort| {
                target_ports
                    .set(key, entry, 0)
                    .map_err(map_error(TARGET_PORTS_MAP, "updating"))
            };
            let listed = current.with_scope_list(list);
            if listed != current {
                write(listed)?;
            }
            if listed.scoped == 0 {
                write(listed.with_scope(true))?;
            }
            Ok(())
        })
    }

    /// Sheds `port` (its packets are counted, not recorded) or records it again, keeping its
    /// sampling state ([`TargetPort::with_shed`]). A port that is not a target stays one.
    pub fn set_shed(&mut self, port: u16, shed: bool) -> Result<(), CaptureError> {
        let current = self
            .target_ports
            .get(&u32::from(port), 0)
            .map_err(map_error(TARGET_PORTS_MAP, "reading"))?;
        if current.is_target == 0 || (current.shed != 0) == shed {
            return Ok(());
        }
        self.target_ports
            .set(u32::from(port), current.with_shed(shed), 0)
            .map_err(map_error(TARGET_PORTS_MAP, "updating"))
    }

    /// The registry of replay sockets whose traffic the classifier ignores.
    pub fn self_traffic(&self) -> SelfTraffic {
        self.self_traffic.clone()
    }

    /// Takes the ring buffer for synchronous reading (once; tests and benchmarks).
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// Takes the ring-buffer reader (once). It must be used inside a tokio runtime with I/O
    /// enabled.
    pub fn take_reader(&mut self) -> Result<Option<RingReader>, CaptureError> {
        self.ring.take().map(RingReader::new).transpose()
    }

    /// Reads the classifier's per-CPU counters and sums them.
    pub fn counters(&self) -> Result<KernelCounters, CaptureError> {
        self.counters.read()
    }

    /// A reader of the counters that can live elsewhere (the metrics endpoint reads them at
    /// scrape time).
    pub fn counter_reader(&self) -> KernelCounterReader {
        self.counters.clone()
    }
}

/// Shared handle on the classifier's per-CPU counters.
#[derive(Clone)]
pub struct KernelCounterReader {
    map: Arc<PerCpuArray<MapData, u64>>,
}

// aya's PerCpuArray has no Debug.
impl std::fmt::Debug for KernelCounterReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCounterReader")
            .finish_non_exhaustive()
    }
}

impl KernelCounterReader {
    /// Reads every counter and sums it over CPUs.
    pub fn read(&self) -> Result<KernelCounters, CaptureError> {
        let mut totals = KernelCounters::default();
        for counter in Counter::ALL {
            let values = self
                .map
                .get(&(counter as u32), 0)
                .map_err(map_error(COUNTERS_MAP, "reading"))?;
            totals.values[counter as usize] = values.iter().copied().sum();
        }
        Ok(totals)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}
