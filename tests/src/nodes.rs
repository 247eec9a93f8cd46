//! Two simulated nodes and a client, for what one configuration does when every node runs it (a
//! DaemonSet): three network namespaces, the client wired to node A, node A wired to node B.
//!
//! ```text
//!   client 198.18.10.1 ── veth ── 198.18.10.2 node A 198.18.11.1 ── veth ── 198.18.11.2 node B
//! ```
//!
//! The node-side veths are named `<base>c`, `<base>b` (in A) and `<base>a` (in B), so the one
//! pattern [`Nodes::pattern`] (`<base>*`) matches every veth of whichever node reads it, as
//! `veth*` would on a real node. Also a client that sends requests to several servers on kept
//! connections and reports what it received.

use std::{
    collections::BTreeMap,
    io::{BufReader, Write},
    net::TcpStream,
};

use crate::{
    netns::{NetNs, ip},
    unique_name,
};

/// The client's address (on its veth to node A).
pub const CLIENT: &str = "198.18.10.1";
/// Node A's address towards the client: where the primary listens.
pub const NODE_A: &str = "198.18.10.2";
/// Node A's address towards node B.
pub const NODE_A_TO_B: &str = "198.18.11.1";
/// Node B's address: where the shadow listens.
pub const NODE_B: &str = "198.18.11.2";

/// The three namespaces; deleted (with their veths and every process inside) on drop.
#[derive(Debug)]
pub struct Nodes {
    pub client: NetNs,
    pub a: NetNs,
    pub b: NetNs,
    /// Matches every veth of node A and of node B (`[capture] interfaces`).
    pub pattern: String,
}

impl Nodes {
    pub fn create() -> Self {
        let create = |prefix| NetNs::create(prefix).expect("creating a network namespace");
        let (client, a, b) = (create("k"), create("a"), create("b"));
        let base = unique_name("n");
        let nodes = Self {
            client,
            a,
            b,
            pattern: format!("{base}*"),
        };
        veth(
            (&nodes.client, &unique_name("k"), CLIENT),
            (&nodes.a, &format!("{base}c"), NODE_A),
        );
        veth(
            (&nodes.a, &format!("{base}b"), NODE_A_TO_B),
            (&nodes.b, &format!("{base}a"), NODE_B),
        );
        nodes
    }
}

/// A veth pair between two namespaces, each end with its address in a /24, both up.
fn veth((ns1, if1, addr1): (&NetNs, &str, &str), (ns2, if2, addr2): (&NetNs, &str, &str)) {
    let fail = |error| panic!("creating veth {if1}/{if2}: {error}");
    ip(&[
        "link", "add", if1, "netns", &ns1.name, "type", "veth", "peer", "name", if2, "netns",
        &ns2.name,
    ])
    .unwrap_or_else(fail);
    for (ns, name, address) in [(ns1, if1, addr1), (ns2, if2, addr2)] {
        ns.ip(&["addr", "add", &format!("{address}/24"), "dev", name])
            .unwrap_or_else(fail);
        ns.ip(&["link", "set", name, "up"]).unwrap_or_else(fail);
    }
}

/// Sends each `(server address, request)` in order from `ns`, one kept connection per server
/// address on `port`, waiting for each response (which must be a 200 with a Content-Length).
/// Returns the bytes of each response as received (head and body). Interleaving two servers'
/// requests puts both connections on the wire at once.
pub fn exchange(ns: &NetNs, port: u16, plan: Vec<(String, Vec<u8>)>) -> Vec<usize> {
    ns.spawn(move || {
        let mut connections: BTreeMap<String, (TcpStream, BufReader<TcpStream>)> = BTreeMap::new();
        let mut sizes = Vec::new();
        for (address, request) in plan {
            let (writer, reader) = connections.entry(address.clone()).or_insert_with(|| {
                let stream = TcpStream::connect((address.as_str(), port))
                    .unwrap_or_else(|error| panic!("connect to {address}:{port}: {error}"));
                (stream.try_clone().expect("clone"), BufReader::new(stream))
            });
            writer.write_all(&request).expect("write request");
            let (status, size) = crate::mirroring::read_response_sized(reader);
            assert_eq!(status, 200, "{address} answered");
            sizes.push(size);
        }
        sizes
    })
    .join()
    .expect("client thread")
    .expect("client namespace")
}

/// The heads of the bodiless requests in a server's per-connection streams.
pub fn request_heads(streams: &[Vec<u8>]) -> Vec<String> {
    streams
        .iter()
        .flat_map(|stream| {
            String::from_utf8_lossy(stream)
                .split_terminator("\r\n\r\n")
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The target of a request head (`GET <target> HTTP/1.1`).
pub fn target_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

/// Values of the header fields named `name` (case-insensitive) in a request head.
pub fn header_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(field, _)| field.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
        .collect()
}
