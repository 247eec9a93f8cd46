//! The daemon's own replay traffic is never captured, even when the shadow listens on a target
//! port of a captured interface: sockets registered with [`SelfTraffic`] are recognised by their
//! socket cookie, whatever their destination.

use std::{
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsFd,
};

use mirror::capture::SelfTraffic;
use mirror_common::Counter;
use mirror_tests::{
    capture::CaptureSession,
    netns::{SERVER_ADDR, in_netns, topology},
    privileged,
    server::RecordingServer,
};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, connect, socket};

const PORT: u16 = 8080;

/// Sends one request on a new connection from the calling thread's namespace, registering the
/// socket first when `registry` is given. Returns the connection's local address.
fn request(registry: Option<&SelfTraffic>, host: &str) -> SocketAddr {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    if let Some(registry) = registry {
        registry
            .register(fd.as_fd())
            .expect("register replay socket");
    }
    let server: SocketAddrV4 = format!("{SERVER_ADDR}:{PORT}").parse().unwrap();
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(server),
    )
    .expect("connect");
    let mut stream = TcpStream::from(fd);
    write!(
        stream,
        "GET /size/5 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    assert!(response.starts_with(b"HTTP/1.1 200"));
    stream.local_addr().expect("local addr")
}

#[test]
fn registered_sockets_are_never_captured() {
    if !privileged("registered_sockets_are_never_captured") {
        return;
    }
    let topology = topology();
    let _server = RecordingServer::start(&topology.server, SERVER_ADDR, PORT);
    // The "shadow" is the very server on the captured target port, reached over a captured
    // interface (lo) from the daemon's namespace: the loop the registry must break.
    let capture = CaptureSession::start(&topology.server, &[&topology.server_if, "lo"], &[PORT]);
    let registry = capture.self_traffic.clone();
    let (replayed, local) = in_netns(&topology.server, move || {
        (request(Some(&registry), "replay"), request(None, "local"))
    });
    let status = topology
        .client
        .command("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("http://{SERVER_ADDR}:{PORT}/size/6"))
        .status()
        .expect("curl");
    assert!(status.success());

    let captured = capture.stop();
    captured.assert_lossless();
    let ports = |port: u16| {
        captured
            .segments
            .iter()
            .filter(|segment| segment.flow.client.port() == port)
            .count()
    };
    assert_eq!(
        ports(replayed.port()),
        0,
        "a registered (replay) socket's segments were captured"
    );
    assert!(
        ports(local.port()) >= 4,
        "an unregistered local client on lo is captured (SYN, request, response, FIN)"
    );
    assert!(
        captured
            .segments
            .iter()
            .any(|segment| segment.flow.client.ip().to_string() == "198.18.0.1"),
        "the remote client is captured"
    );
    assert!(
        captured.kernel.get(Counter::SelfTraffic) >= 4,
        "self traffic counted: {:?}",
        captured.kernel
    );
}
