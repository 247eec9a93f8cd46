//! Network namespaces and veth pairs, for the self-contained demo and the end-to-end tests.
//! Everything created here is removed in `Drop` (processes inside are killed first), and names
//! are unique per process so parallel or leftover runs never collide.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
};

use nix::sched::{CloneFlags, setns};

/// Errors of namespace set-up, with the command that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("entering network namespace {name} (setns): {source}")]
    Enter {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// A name unique to this process and call, short enough for an interface name (15 bytes).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}{:05x}{:02x}",
        std::process::id() & 0xf_ffff,
        sequence & 0xff
    )
}

/// Runs `ip args...`.
pub fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(NetnsError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// A named network namespace (`ip netns add`), deleted with every process inside on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates `mirror-<prefix><unique>` with its loopback up.
    pub fn create(prefix: &str) -> Result<Self, NetnsError> {
        let name = format!("mirror-{}", unique_name(prefix));
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Result<Output, NetnsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        command
    }

    /// Runs `f` on a new thread that has joined this namespace: sockets, netlink and BPF
    /// attachment by interface name then act inside it.
    pub fn spawn<F, R>(&self, f: F) -> JoinHandle<Result<R, NetnsError>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let name = self.name.clone();
        std::thread::spawn(move || {
            let enter = |source| NetnsError::Enter {
                name: name.clone(),
                source,
            };
            let file = File::open(format!("/var/run/netns/{name}")).map_err(enter)?;
            setns(file, CloneFlags::CLONE_NEWNET).map_err(|errno| enter(errno.into()))?;
            Ok(f())
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
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

/// Client address inside a [`Topology`] (198.18.0.0/15 is reserved for benchmarking).
pub const CLIENT_ADDR: &str = "198.18.0.1";
/// Server address inside a [`Topology`].
pub const SERVER_ADDR: &str = "198.18.0.2";

/// Client and server namespaces joined by a veth pair: [`CLIENT_ADDR`]/24 on `client_if`,
/// [`SERVER_ADDR`]/24 on `server_if`.
#[derive(Debug)]
pub struct Topology {
    pub client: NetNs,
    pub server: NetNs,
    pub client_if: String,
    pub server_if: String,
}

impl Topology {
    pub fn create() -> Result<Self, NetnsError> {
        let client = NetNs::create("c")?;
        let server = NetNs::create("s")?;
        let client_if = unique_name("mc");
        let server_if = unique_name("ms");
        let topology = Self {
            client,
            server,
            client_if,
            server_if,
        };
        topology.add_link(
            &topology.client_if,
            &topology.server_if,
            &format!("{CLIENT_ADDR}/24"),
            &format!("{SERVER_ADDR}/24"),
        )?;
        Ok(topology)
    }

    /// Adds a veth pair between the namespaces (`client_if` with `client_cidr` in the client
    /// namespace, `server_if` with `server_cidr` in the server namespace), both up. It goes with
    /// the namespaces when they are deleted.
    pub fn add_link(
        &self,
        client_if: &str,
        server_if: &str,
        client_cidr: &str,
        server_cidr: &str,
    ) -> Result<(), NetnsError> {
        ip(&[
            "link",
            "add",
            client_if,
            "netns",
            &self.client.name,
            "type",
            "veth",
            "peer",
            "name",
            server_if,
            "netns",
            &self.server.name,
        ])?;
        self.client
            .ip(&["addr", "add", client_cidr, "dev", client_if])?;
        self.server
            .ip(&["addr", "add", server_cidr, "dev", server_if])?;
        self.client.ip(&["link", "set", client_if, "up"])?;
        self.server.ip(&["link", "set", server_if, "up"])?;
        Ok(())
    }
}
