//! Lifecycle of the `mirror` binary's attachments: after SIGTERM and after SIGKILL no program of
//! ours stays attached (TCX links die with the process), and a restart attaches again.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use aya::programs::{SchedClassifier, TcAttachType};
use mirror::netns::Topology;
use mirror_common::CLASSIFIER_PROGRAM;
use mirror_tests::{
    mirror_bin,
    netns::{in_netns, topology},
    privileged,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Names of the TCX programs attached to `interface` in the server namespace, per direction.
fn attached(topology: &Topology) -> Vec<String> {
    let interface = topology.server_if.clone();
    in_netns(&topology.server, move || {
        let mut names = Vec::new();
        for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, programs) =
                SchedClassifier::query_tcx(&interface, attach_type).expect("query TCX programs");
            names.extend(programs.iter().map(|program| {
                format!("{:?}:{}", attach_type, program.name_as_str().unwrap_or("?"))
            }));
        }
        names
    })
}

fn ours(names: &[String]) -> usize {
    names
        .iter()
        .filter(|name| name.ends_with(&format!(":{CLASSIFIER_PROGRAM}")))
        .count()
}

/// Starts `mirror capture` in the server namespace and waits until it reports capturing.
fn start_daemon(topology: &Topology) -> (Child, mpsc::Receiver<String>) {
    let mut child = topology
        .server
        .command(mirror_bin())
        .args([
            "capture",
            "--interface",
            &topology.server_if,
            "--port",
            "8080",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mirror capture");
    let (lines_tx, lines_rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("mirror capture did not report capturing within 30 s");
        if line.contains("capturing") {
            break;
        }
        assert!(
            !line.starts_with("mirror:"),
            "mirror capture failed: {line}"
        );
    }
    (child, lines_rx)
}

fn signal_and_wait(child: &mut Child, signal: Signal) -> std::process::ExitStatus {
    kill(Pid::from_raw(child.id() as i32), signal).expect("kill");
    child.wait().expect("wait for mirror")
}

#[test]
fn sigterm_and_sigkill_leave_nothing_attached_and_restart_attaches_again() {
    if !privileged("sigterm_and_sigkill_leave_nothing_attached_and_restart_attaches_again") {
        return;
    }
    let topology = topology();
    assert_eq!(ours(&attached(&topology)), 0);

    let (mut daemon, lines) = start_daemon(&topology);
    assert_eq!(
        ours(&attached(&topology)),
        2,
        "ingress and egress attached: {:?}",
        attached(&topology)
    );
    let status = signal_and_wait(&mut daemon, Signal::SIGTERM);
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|line| line.contains("capture summary")),
        "summary printed on exit: {rest:?}"
    );
    assert_eq!(ours(&attached(&topology)), 0, "detached after SIGTERM");

    // Restart attaches again; SIGKILL leaves nothing behind either (TCX links close with the
    // process's file descriptors).
    let (mut daemon, _lines) = start_daemon(&topology);
    assert_eq!(ours(&attached(&topology)), 2, "attached after restart");
    let status = signal_and_wait(&mut daemon, Signal::SIGKILL);
    assert!(!status.success());
    // Link release happens when the last fd closes; give the kernel a moment.
    let mut remaining = ours(&attached(&topology));
    for _ in 0..50 {
        if remaining == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        remaining = ours(&attached(&topology));
    }
    assert_eq!(remaining, 0, "detached after SIGKILL");

    let (mut daemon, _lines) = start_daemon(&topology);
    assert_eq!(
        ours(&attached(&topology)),
        2,
        "attached after SIGKILL restart"
    );
    assert!(signal_and_wait(&mut daemon, Signal::SIGTERM).success());
}
