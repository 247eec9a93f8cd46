//! One keep-alive connection to the shadow. The request bytes are written exactly as captured
//! and rewritten (hand-written I/O instead of an HTTP client library: a client would re-serialise
//! the head and lose byte fidelity), and the response is read with the shared framing rules.

use std::{
    net::SocketAddr,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
};

use super::response::{ResponseError, ShadowResponse, read_response};
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

pub struct ShadowConnection {
    stream: TcpStream,
    buffer: BytesMut,
    registration: Option<(SelfTraffic, u64)>,
    /// Set when the connection must not carry another request.
    spent: bool,
}

impl ShadowConnection {
    /// Connects to `addr`. The socket is registered with the classifier first (when capture is
    /// running), so not even its SYN is captured.
    pub async fn connect(
        addr: SocketAddr,
        self_traffic: Option<&SelfTraffic>,
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
        Ok(Self {
            stream,
            buffer: BytesMut::new(),
            registration,
            spent: false,
        })
    }

    /// False once the connection cannot carry another request.
    pub fn is_reusable(&self) -> bool {
        !self.spent && self.buffer.is_empty()
    }

    /// Sends the request (`head` then `body`) and reads the final response. Returns it with the shadow latency: last
    /// request byte written to first response byte read (the wire latency's userspace twin).
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
        request_is_head: bool,
    ) -> Result<(ShadowResponse, Duration), ConnectionError> {
        // Any failure below leaves the connection in an unknown state.
        self.spent = true;
        self.stream
            .write_all(head)
            .await
            .map_err(ConnectionError::Write)?;
        if !body.is_empty() {
            self.stream
                .write_all(body)
                .await
                .map_err(ConnectionError::Write)?;
        }
        let sent = Instant::now();
        let mut first_byte = None;
        let response = read_response(&mut self.stream, &mut self.buffer, request_is_head, || {
            first_byte = Some(Instant::now());
        })
        .await?;
        let latency = first_byte.unwrap_or_else(Instant::now).duration_since(sent);
        self.spent = response.closes;
        Ok((response, latency))
    }
}

impl Drop for ShadowConnection {
    fn drop(&mut self) {
        if let Some((registry, cookie)) = self.registration.take() {
            registry.unregister(cookie);
        }
    }
}
