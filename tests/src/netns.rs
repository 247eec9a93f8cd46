//! Network namespaces and veth pairs for end-to-end tests. Everything created here is removed in
//! `Drop`, also when a test fails; names are unique per run so leftovers never collide.

use std::{
    fs::File,
    process::{Command, Output},
    thread::JoinHandle,
};

use nix::sched::{CloneFlags, setns};

use crate::unique_name;

/// Runs `ip` with `args`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) -> Output {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A named network namespace (`ip netns add`), deleted with every process inside on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Self {
        let name = format!("mirror-test-{}", unique_name(prefix));
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        command
    }

    /// Runs `f` on a new thread that has joined this namespace (netlink, sockets and BPF
    /// attachment by interface name then act inside it).
    pub fn spawn<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|error| panic!("open {path}: {error}"));
            setns(file, CloneFlags::CLONE_NEWNET).expect("setns(CLONE_NEWNET)");
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Kill what still runs inside (servers, clients), then remove the namespace.
        if let Ok(output) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Client and server namespaces joined by a veth pair:
/// client `198.18.0.1/24` on `client_if`, server `198.18.0.2/24` on `server_if`.
pub struct Topology {
    pub client: NetNs,
    pub server: NetNs,
    pub client_if: String,
    pub server_if: String,
}

pub const CLIENT_ADDR: &str = "198.18.0.1";
pub const SERVER_ADDR: &str = "198.18.0.2";

impl Topology {
    pub fn new() -> Self {
        let client = NetNs::new("c");
        let server = NetNs::new("s");
        let client_if = unique_name("mc");
        let server_if = unique_name("ms");
        ip(&[
            "link",
            "add",
            &client_if,
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            &server_if,
            "netns",
            &server.name,
        ]);
        client.ip(&["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", &client_if]);
        server.ip(&["addr", "add", &format!("{SERVER_ADDR}/24"), "dev", &server_if]);
        client.ip(&["link", "set", &client_if, "up"]);
        server.ip(&["link", "set", &server_if, "up"]);
        Self {
            client,
            server,
            client_if,
            server_if,
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}
