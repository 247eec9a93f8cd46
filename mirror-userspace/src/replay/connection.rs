//! One keep-alive connection to the shadow. The request bytes are written exactly as captured
//! and rewritten (hand-written I/O instead of an HTTP client library: a client would re-serialise
//! the head and lose byte fidelity), and the response is read with the shared framing rules.

use crate::held::BodyBudget;
use std::{
    net::SocketAddr,
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::BytesMut;
use tokio::{io::AsyncWriteExt, net::TcpSocket};

use super::{
    ReplayJob,
    arrival::TimestampedStream,
    response::{ResponseError, ShadowResponse, read_response},
};
use crate::capture::SelfTraffic;

/// Why an exchange with the shadow failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connecting to the shadow at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("registering the replay socket with the classifier: {0}")]
    Register(#[from] crate::capture::CaptureError),
    #[error("writing the request to the shadow: {0}")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Response(#[from] ResponseError),
}

#[derive(Debug)]
pub struct ShadowConnection {
    stream: TimestampedStream,
    /// When the last batch's final byte was handed to the kernel, until its first response
    /// is read (which alone is timed).
    sent_at: Option<SystemTime>,
    buffer: BytesMut,
    /// Connections of this pool alive, this one included.
    open: Arc<AtomicUsize>,
    /// Reused write buffer for pipelined batches.
    outgoing: Vec<u8>,
    registration: Option<(SelfTraffic, u64)>,
    /// Set when the connection must not carry another request.
    spent: bool,
    /// The shadow announced it closes the connection (`Connection: close`, HTTP/1.0, ...).
    closed_by_peer: bool,
}

impl ShadowConnection {
    /// Connects to `addr`. The socket is registered with the classifier first (when capture is
    /// running), so not even its SYN is captured.
    /// `open` counts the connections alive (incremented here, decremented on drop).
    pub async fn connect(
        addr: SocketAddr,
        self_traffic: Option<&SelfTraffic>,
        open: Arc<AtomicUsize>,
    ) -> Result<Self, ConnectionError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|source| ConnectionError::Connect { addr, source })?;
        let registration = match self_traffic {
            Some(registry) => Some((registry.clone(), registry.register(socket.as_fd())?)),
            None => None,
        };
        let stream = socket
            .connect(addr)
            .await
            .map_err(|source| ConnectionError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let stream = TimestampedStream::new(stream)
            .map_err(|source| ConnectionError::Connect { addr, source })?;
        open.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            open,
            stream,
            sent_at: None,
            buffer: BytesMut::new(),
            outgoing: Vec::new(),
            registration,
            spent: false,
            closed_by_peer: false,
        })
    }

    /// False once the connection cannot carry another request.
    pub fn is_reusable(&self) -> bool {
        !self.spent && !self.closed_by_peer && self.buffer.is_empty()
    }

    /// Whether the shadow closed or reset the connection (or sent bytes nobody asked for)
    /// while it was idle, as the socket knows it now: one non-blocking peek, no wait. Checked
    /// before a request that may not be sent twice is written on a reused connection.
    pub fn closed_by_shadow(&self) -> bool {
        self.stream.peer_closed()
    }

    /// Writes `requests` (each its head then its body) back to back: one write for a pipelined
    /// batch. Returns when the last byte is handed to the kernel.
    pub async fn send(&mut self, requests: &[ReplayJob]) -> Result<(), ConnectionError> {
        // Any failure from here on leaves the connection in an unknown state; `finish` clears it.
        self.spent = true;
        // Armed before writing: a shadow may answer before a large body is all written.
        self.stream.arm();
        self.write(requests).await?;
        self.sent_at = Some(SystemTime::now());
        Ok(())
    }

    async fn write(&mut self, requests: &[ReplayJob]) -> Result<(), ConnectionError> {
        if let [only] = requests
            && only.body.is_empty()
        {
            return self
                .stream
                .write_all(&only.head)
                .await
                .map_err(ConnectionError::Write);
        }
        let len = requests
            .iter()
            .map(|job| job.head.len() + job.body.len())
            .sum();
        self.outgoing.clear();
        self.outgoing.reserve(len);
        for job in requests {
            self.outgoing.extend_from_slice(&job.head);
            self.outgoing.extend_from_slice(&job.body);
        }
        self.stream
            .write_all(&self.outgoing)
            .await
            .map_err(ConnectionError::Write)
    }

    /// Reads the final response to the next request sent. The first response after a
    /// [`Self::send`] comes with the shadow's latency: from the moment the batch's last byte was
    /// handed to the kernel to the kernel's receive timestamp of the response's first byte
    /// (later responses of a pipelined batch waited behind it, so they say nothing of the
    /// shadow's own latency).
    pub async fn read_response(
        &mut self,
        request_is_head: bool,
        hold: Option<&BodyBudget>,
    ) -> Result<(ShadowResponse, Option<Duration>), ConnectionError> {
        let response =
            read_response(&mut self.stream, &mut self.buffer, request_is_head, hold).await?;
        if response.closes {
            self.closed_by_peer = true;
        }
        let latency = self.sent_at.take().map(|sent| {
            let arrived = self
                .stream
                .take_first_byte()
                .unwrap_or_else(SystemTime::now);
            // Zero when the shadow answered before the last byte was written.
            arrived.duration_since(sent).unwrap_or_default()
        });
        Ok((response, latency))
    }

    /// Marks the connection reusable again once every response of what was sent has been read
    /// (unless one of them closes it).
    pub fn finish(&mut self) {
        self.spent = self.closed_by_peer;
    }
}

impl Drop for ShadowConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some((registry, cookie)) = self.registration.take() {
            registry.unregister(cookie);
        }
    }
}
