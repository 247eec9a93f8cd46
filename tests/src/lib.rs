//! Support for mirror's end-to-end tests: a privilege gate that fails under CI instead of
//! skipping, network namespaces that clean up in `Drop`, crafted frames for the classifier, an
//! independent stream assembler used as the oracle, a recording HTTP server, and a stub of the
//! Kubernetes API for the pod watch.

pub mod capture;
pub mod capture_cli;
pub mod compare;
pub mod daemon;
pub mod frames;
pub mod kube_stub;
pub mod mirroring;
pub mod netns;
pub mod nginx;
pub mod nodes;
pub mod server;
pub mod streams;

use std::path::PathBuf;

/// True when the test may run. Privileged tests must fail, not skip, under CI (`CI=true`);
/// elsewhere they skip with a clear message when not root.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root (BPF, network namespaces); under CI it fails instead of skipping"
    );
    eprintln!("skipping {test}: needs root (BPF, network namespaces); run as root or under CI");
    false
}

pub use mirror::netns::unique_name;

/// Path of the `mirror` binary: `MIRROR_BIN` (set by `cargo xtask test`), else the target
/// directory this test binary lives in.
pub fn mirror_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MIRROR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // Tests live in target/<profile>/deps/, binaries (benchmarks) in target/<profile>/.
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("mirror"))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} not built: run `cargo build -p mirror-userspace` first (cargo xtask test does)",
                candidates[0].display()
            )
        })
}

/// Directory of the test fixtures (scripts for real servers).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}
