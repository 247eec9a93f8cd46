//! Runs mirror's capture adapter inside a namespace on its own thread and collects every segment
//! until stopped, with the kernel and reader counters.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use mirror::{
    capture::{
        Capture, CaptureConfig, DEFAULT_RING_BUFFER_BYTES, KernelCounters, ReaderStats, SelfTraffic,
    },
    segment::Segment,
};

use crate::netns::NetNs;

/// What a capture session saw.
#[derive(Debug)]
pub struct Captured {
    pub segments: Vec<Segment>,
    pub kernel: KernelCounters,
    pub records: u64,
    pub decode_errors: u64,
}

impl Captured {
    /// Panics with every counter when anything was lost, so a lossy run never passes silently.
    pub fn assert_lossless(&self) {
        let lost = self.kernel.lost_records() + self.kernel.lost_bytes() + self.decode_errors;
        assert_eq!(
            lost,
            0,
            "capture lost data; counters: {:?}, decode errors {}",
            self.kernel.iter().collect::<Vec<_>>(),
            self.decode_errors
        );
    }
}

/// A capture attached in a namespace; [`CaptureSession::stop`] detaches and returns what it saw.
#[derive(Debug)]
pub struct CaptureSession {
    /// Registry of sockets whose traffic the classifier must ignore.
    pub self_traffic: SelfTraffic,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Captured, mirror::netns::NetnsError>>>,
}

impl CaptureSession {
    pub fn start(ns: &NetNs, interfaces: &[&str], ports: &[u16]) -> Self {
        Self::start_with_ring(ns, interfaces, ports, DEFAULT_RING_BUFFER_BYTES)
    }

    pub fn start_with_ring(ns: &NetNs, interfaces: &[&str], ports: &[u16], ring: u32) -> Self {
        let config = CaptureConfig {
            interfaces: interfaces.iter().map(|name| (*name).to_owned()).collect(),
            ports: ports.to_vec(),
            ring_buffer_bytes: ring,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = ns.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let mut capture = match Capture::start(&config) {
                    Ok(capture) => capture,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.to_string()));
                        panic!("capture failed to start: {error}");
                    }
                };
                let mut reader = capture.take_reader().expect("reader").expect("ring");
                let _ = ready_tx.send(Ok(capture.classifier().self_traffic()));
                let stats = ReaderStats::default();
                let mut segments = Vec::new();
                loop {
                    let stopping = thread_stop.load(Ordering::Acquire);
                    let wait = Duration::from_millis(if stopping { 200 } else { 50 });
                    match tokio::time::timeout(wait, reader.next_batch(&stats)).await {
                        Ok(batch) => segments.extend(batch.expect("ring reader")),
                        // Stopping and quiet for 200 ms: everything submitted has been read.
                        Err(_) if stopping => break,
                        Err(_) => {}
                    }
                }
                let kernel = capture.counters().expect("counters");
                capture.detach();
                Captured {
                    segments,
                    kernel,
                    records: stats.records(),
                    decode_errors: stats.decode_errors(),
                }
            })
        });
        let self_traffic = match ready_rx.recv() {
            Ok(Ok(self_traffic)) => self_traffic,
            Ok(Err(error)) => panic!("capture failed to start: {error}"),
            Err(_) => panic!("capture thread died before attaching"),
        };
        Self {
            self_traffic,
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Captured {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .expect("not stopped twice")
            .join()
            .expect("capture thread panicked")
            .expect("entering the namespace")
    }
}

impl Drop for CaptureSession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
