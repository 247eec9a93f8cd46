//! `mirror demo`: a self-contained tour. It builds two network namespaces joined by a veth pair,
//! serves HTTP from one (Python's http.server), runs `mirror capture` on the server side, drives
//! real curl requests from the other, and removes everything it created, also on Ctrl-C.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::time::sleep;

use crate::netns::{NetNs, SERVER_ADDR, Topology};

const PORT: u16 = 8080;

/// A child process killed on drop (the namespace guard would kill it too; this keeps the order
/// of shutdown deterministic).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn site_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(crate::netns::unique_name("mirror-demo-"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("index.html"), "<h1>search v1</h1>\n")?;
    std::fs::write(
        dir.join("results.json"),
        "{\"hits\": [1, 2, 3]}\n".repeat(2000),
    )?;
    Ok(dir)
}

async fn wait_for_server(client: &NetNs) -> anyhow::Result<()> {
    for _ in 0..50 {
        let status = client
            .command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                &format!("http://{SERVER_ADDR}:{PORT}/"),
            ])
            .status()
            .context("running curl")?;
        if status.success() {
            return Ok(());
        }
        sleep(Duration::from_millis(100)).await;
    }
    bail!("the demo server did not start within 5 s")
}

fn start_capture(topology: &Topology) -> anyhow::Result<ChildGuard> {
    let exe = std::env::current_exe().context("locating the mirror binary")?;
    let mut child = topology
        .server
        .command(exe)
        .args(["capture", "--interface", &topology.server_if, "--port"])
        .arg(PORT.to_string())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .context("starting mirror capture")?;
    let stderr = child.stderr.take().context("capture stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    // Forward the capture's stderr; return once it reports it is capturing.
    for line in lines.by_ref() {
        let line = line.context("reading capture output")?;
        eprintln!("  {line}");
        if line.contains("capturing") {
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    eprintln!("{line}");
                }
            });
            return Ok(ChildGuard(child));
        }
    }
    bail!("mirror capture exited before attaching")
}

async fn tour() -> anyhow::Result<()> {
    println!("== mirror demo: capture real HTTP traffic off a veth, without touching it\n");
    let topology = Topology::create().context("creating the demo network namespaces")?;
    println!(
        "namespaces: client {} <-> server {} (veth {} / {})",
        topology.client.name, topology.server.name, topology.client_if, topology.server_if
    );
    let site = site_dir()?;
    let server = topology
        .server
        .command("python3")
        .args([
            "-m",
            "http.server",
            &PORT.to_string(),
            "--bind",
            SERVER_ADDR,
        ])
        .current_dir(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m http.server")?;
    let _server = ChildGuard(server);
    wait_for_server(&topology.client).await?;
    println!("server: python3 -m http.server on {SERVER_ADDR}:{PORT}\n");

    println!(
        "$ mirror capture --interface {} --port {PORT}",
        topology.server_if
    );
    let mut capture = start_capture(&topology)?;
    sleep(Duration::from_millis(200)).await;

    let base = format!("http://{SERVER_ADDR}:{PORT}");
    let requests: [Vec<String>; 4] = [
        vec![format!("{base}/")],
        vec!["-I".into(), format!("{base}/index.html")],
        // Two URLs in one curl run; the second response is ~40 KB (several GSO segments).
        vec![format!("{base}/index.html"), format!("{base}/results.json")],
        vec!["--data".into(), "q=mirror".into(), format!("{base}/search")],
    ];
    for args in requests {
        eprintln!("\n# curl {}", args.join(" "));
        let mut curl = topology.client.command("curl");
        curl.arg("-s");
        for arg in &args {
            // Discard every body: `-o` applies to one URL each.
            if arg.starts_with("http://") {
                curl.args(["-o", "/dev/null"]);
            }
            curl.arg(arg);
        }
        let status = curl.status().context("running curl")?;
        if !status.success() {
            bail!("curl {} failed: {status}", args.join(" "));
        }
        sleep(Duration::from_millis(300)).await;
    }
    eprintln!();
    // SIGINT: the capture detaches and prints its counters.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(capture.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .context("stopping mirror capture")?;
    let status = capture.0.wait().context("waiting for mirror capture")?;
    if !status.success() {
        bail!("mirror capture failed: {status}");
    }
    let _ = std::fs::remove_dir_all(&site);
    println!("\nDone: every segment above was copied by the classifier; no packet was delayed.");
    println!("Namespaces, veth pair and processes are being removed.");
    Ok(())
}

pub async fn run() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates network namespaces and loads eBPF: run it as root");
    }
    tokio::select! {
        result = tour() => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: cleaning up");
            Ok(())
        }
    }
}
