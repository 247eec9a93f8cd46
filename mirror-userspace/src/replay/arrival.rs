//! The replay socket's reads with the kernel's receive timestamps (`SO_TIMESTAMPNS`), so the
//! shadow's latency is measured on the wire, like the primary's, and not when the daemon gets
//! round to reading: the daemon batches its wake-ups ([`crate::wake_ups`]), which would
//! otherwise add up to a batching window to every shadow latency.
//!
//! The first read after [`TimestampedStream::arm`] asks for one byte: TCP reports the timestamp
//! of the last segment a read copied, and one byte comes from the first segment of the response
//! alone, however many of a pipelined batch's responses have arrived meanwhile.
//!
//! Hand-written `recvmsg`: tokio and std expose no receive path that returns control messages.
//! A read that returns less than it asked for drained the socket, so it clears the readiness
//! (as tokio's own `TcpStream` does) instead of paying a `recvmsg` that returns `EAGAIN`: the
//! responses of a pipelined batch arrive over several wake-ups, and each used to cost one.

use std::{
    io::{self, Write as _},
    mem::MaybeUninit,
    net::{Shutdown, TcpStream},
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    task::{Context, Poll, ready},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, unix::AsyncFd};

/// A connected replay socket whose reads note when the first byte after [`Self::arm`] reached
/// the host.
#[derive(Debug)]
pub struct TimestampedStream {
    stream: AsyncFd<TcpStream>,
    /// `recvmsg` calls made (for tests of the readiness handling).
    #[cfg(test)]
    receives: usize,
    /// Set by [`Self::arm`]: the next read takes one byte and notes its arrival.
    awaiting_first_byte: bool,
    first_byte: Option<SystemTime>,
}

impl TimestampedStream {
    /// Asks the kernel for receive timestamps on `stream`. Without them (the option refused, or
    /// in the moments after the first socket on the host asks, while the kernel turns
    /// timestamping on), arrivals are the time of the read.
    pub fn new(stream: tokio::net::TcpStream) -> io::Result<Self> {
        let _ = nix::sys::socket::setsockopt(
            &stream,
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        );
        // Out of tokio's `TcpStream` (still non-blocking) into an `AsyncFd`, whose readiness
        // guard can be cleared after a short read.
        let socket = stream.into_std()?;
        // SAFETY: the fd is the socket's, owned by the `AsyncFd` for its whole life;
        // `TcpStream::as_raw_fd` always returns that same fd.
        let stream = unsafe {
            AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|error| error.into_parts().1)?;
        Ok(Self {
            stream,
            #[cfg(test)]
            receives: 0,
            awaiting_first_byte: false,
            first_byte: None,
        })
    }

    /// The next byte read is the first of a response: note when it arrived.
    pub fn arm(&mut self) {
        self.awaiting_first_byte = true;
        self.first_byte = None;
    }

    /// When the first byte read since [`Self::arm`] reached the host (`None` before it is read).
    pub fn take_first_byte(&mut self) -> Option<SystemTime> {
        self.first_byte.take()
    }

    /// Whether the peer closed or reset the connection, or sent bytes nothing was asked for, as
    /// far as the socket knows now: one `MSG_PEEK` of a byte on the non-blocking socket, which
    /// leaves the bytes and the readiness as they were.
    pub fn peer_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.get_ref().peek(&mut byte) {
            Err(error) => !matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
            // End of stream, or bytes before any request was written.
            Ok(_) => true,
        }
    }
}

impl AsyncRead for TimestampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let limit = if this.awaiting_first_byte {
            1
        } else {
            buf.remaining()
        };
        loop {
            let mut guard = ready!(this.stream.poll_read_ready(cx))?;
            #[cfg(test)]
            {
                this.receives += 1;
            }
            // SAFETY: `recv_with_arrival` only writes bytes into the slice, never reads it, and
            // only the bytes it reports written are marked initialised below.
            let unfilled = unsafe { &mut buf.unfilled_mut()[..limit] };
            match guard.try_io(|socket| recv_with_arrival(socket.as_raw_fd(), unfilled)) {
                Ok(Ok((read, arrival))) => {
                    if read > 0 && read < limit {
                        // Drained. Data that arrived since the readiness was reported keeps it
                        // set: tokio clears only the readiness this guard saw.
                        guard.clear_ready();
                    }
                    // SAFETY: the kernel wrote `read` bytes at the start of the unfilled part.
                    unsafe { buf.assume_init(read) };
                    buf.advance(read);
                    if this.awaiting_first_byte && read > 0 {
                        this.awaiting_first_byte = false;
                        this.first_byte = Some(arrival.unwrap_or_else(SystemTime::now));
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                // `EAGAIN`: the guard cleared the readiness; wait for the next.
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for TimestampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.stream.poll_write_ready(cx))?;
            match guard.try_io(|socket| socket.get_ref().write(buf)) {
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.get_ref().shutdown(Shutdown::Write))
    }
}

/// `recvmsg` into `into`, returning the bytes read and the `SCM_TIMESTAMPNS` timestamp of the
/// last segment they came from, when the kernel sent one.
fn recv_with_arrival(
    fd: RawFd,
    into: &mut [MaybeUninit<u8>],
) -> io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec {
        iov_base: into.as_mut_ptr().cast(),
        iov_len: into.len(),
    };
    // Room for one timespec control message, aligned for `cmsghdr`.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = size_of_val(&control) as _;
    // SAFETY: every pointer in `message` is valid for its stated length for the whole call.
    let read = unsafe { libc::recvmsg(fd, &mut message, libc::MSG_DONTWAIT) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut arrival = None;
    // SAFETY: `message` was filled in by recvmsg; the CMSG_* macros walk its control buffer
    // within `msg_controllen`.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(&message) };
    while !header.is_null() {
        // SAFETY: non-null headers from CMSG_FIRSTHDR/NXTHDR lie within the control buffer.
        let (level, kind) = unsafe { ((*header).cmsg_level, (*header).cmsg_type) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
            // SAFETY: an SCM_TIMESTAMPNS message carries one timespec; the data may be unaligned.
            let stamp: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(header).cast()) };
            arrival = u64::try_from(stamp.tv_sec)
                .ok()
                .map(|secs| UNIX_EPOCH + Duration::new(secs, stamp.tv_nsec as u32));
        }
        // SAFETY: as above.
        header = unsafe { libc::CMSG_NXTHDR(&message, header) };
    }
    Ok((read as usize, arrival))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A timestamped client stream and its server end, over loopback.
    async fn connected() -> (TimestampedStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (TimestampedStream::new(client).unwrap(), server)
    }

    #[test]
    fn the_first_byte_after_arming_carries_its_arrival_not_the_read_time() {
        block_on(async {
            let (mut stream, mut server) = connected().await;
            // The kernel turns receive timestamping on for the host from a work queue, just
            // after the first socket asks: segments until then carry none.
            tokio::time::sleep(Duration::from_millis(200)).await;
            stream.arm();
            let written = SystemTime::now();
            server.write_all(b"first").await.unwrap();
            // The daemon reads late: the arrival must not move with it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut buffer = Vec::new();
            let read = stream.read_buf(&mut buffer).await.unwrap();
            assert_eq!(read, 1, "the first read after arming takes one byte");
            let arrival = stream.take_first_byte().expect("noted");
            let after_write = arrival.duration_since(written).unwrap_or_default();
            assert!(
                after_write < Duration::from_millis(25),
                "arrival {after_write:?} after the write, not at the read 50 ms later"
            );
            assert_eq!(stream.take_first_byte(), None);
            server.write_all(b" second").await.unwrap();
            let mut rest = [0u8; 11];
            stream.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"irst second");
            assert_eq!(stream.take_first_byte(), None, "not armed again");
        });
    }

    #[test]
    fn a_short_read_waits_for_more_data_without_another_receive() {
        block_on(async {
            let (mut stream, mut server) = connected().await;
            server.write_all(b"abc").await.unwrap();
            let mut buffer = [0u8; 16];
            assert_eq!(stream.read(&mut buffer).await.unwrap(), 3);
            assert_eq!(stream.receives, 1);
            // Nothing more queued: the read waits without asking the socket again.
            let waited =
                tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buffer)).await;
            assert!(waited.is_err(), "nothing to read yet");
            assert_eq!(
                stream.receives, 1,
                "no receive that could only return EAGAIN"
            );
            // New data sets the readiness again.
            server.write_all(b"de").await.unwrap();
            assert_eq!(stream.read(&mut buffer).await.unwrap(), 2);
            assert_eq!(&buffer[..2], b"de");
            assert_eq!(stream.receives, 2);
        });
    }
}
