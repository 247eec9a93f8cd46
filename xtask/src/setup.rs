//! `cargo xtask setup`: one line per prerequisite, installing only what is missing.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::run;

/// bpf-linker release that uses the nightly toolchain's own LLVM; newer ones need a system LLVM
/// this machine's Debian lacks.
const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages the tests and benchmarks run: `ip` (iproute2), curl and wrk as clients,
/// Python's http.server and nginx as real servers (nginx answers a large upload before reading
/// it), promtool (package prometheus) to check metrics and alert rules, and systemd-analyze
/// (package systemd, absent from minimal Debian images) to verify the systemd unit in deploy/.
/// `cargo xtask image` and its test (tests/tests/image_e2e.rs): mmdebstrap makes the root file
/// system, podman imports it and runs the pod (`podman kube play`), buildah assembles the
/// image; catatonit is the pause process of podman's infra container (a Recommends of podman,
/// which --no-install-recommends leaves out) and runc the OCI runtime the test uses (crun 1.8
/// refuses a hybrid cgroup v1/v2 hierarchy with controllers on v2, as on this machine).
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "curl",
    "wrk",
    "python3",
    "nginx",
    "prometheus",
    "systemd",
    "mmdebstrap",
    "podman",
    "buildah",
    "catatonit",
    "runc",
];

/// PyPI package that validates deploy/kubernetes offline against the Kubernetes schemas.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate";

fn succeeds(command: &mut Command) -> bool {
    command.output().is_ok_and(|output| output.status.success())
}

fn stdout_of(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn step(
    name: &str,
    present: bool,
    install: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if present {
        println!("setup: {name:<34} ok");
        return Ok(());
    }
    println!("setup: {name:<34} installing");
    install().with_context(|| format!("installing {name}"))?;
    println!("setup: {name:<34} installed");
    Ok(())
}

fn has_nightly() -> bool {
    succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
}

pub fn setup() -> anyhow::Result<()> {
    // The eBPF crate needs -Z build-std, so rust-src for the toolchain that builds it: nightly
    // when present, otherwise stable with RUSTC_BOOTSTRAP=1 (mirror-userspace/build.rs decides).
    // CI lints it for its own target with that toolchain's clippy.
    let toolchain = if has_nightly() { "nightly" } else { "stable" };
    let installed = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))
    .unwrap_or_default();
    for component in ["rust-src", "clippy"] {
        let present = installed.lines().any(|line| line.starts_with(component));
        step(&format!("{component} ({toolchain})"), present, || {
            run(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                toolchain,
            ]))
        })?;
    }

    let linker = stdout_of(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|version| version.contains(BPF_LINKER_VERSION));
    step(&format!("bpf-linker {BPF_LINKER_VERSION}"), linker, || {
        run(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))
    })?;

    let fuzz = succeeds(Command::new("cargo").args(["fuzz", "--version"]));
    step("cargo-fuzz", fuzz, || {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
    })?;

    debian_packages(DEBIAN_PACKAGES)?;

    // After the Debian packages: needs python3. Debian's own Python refuses `pip install`
    // outside a virtualenv (PEP 668) unless told otherwise; pip itself may be missing.
    let validate = succeeds(Command::new("kubernetes-validate").arg("--version"));
    step(&format!("pypi: {KUBERNETES_VALIDATE}"), validate, || {
        if !succeeds(Command::new("python3").args(["-m", "pip", "--version"])) {
            if !nix_is_root() {
                bail!("python3 has no pip; install python3-pip or run as root");
            }
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            run(Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "python3-pip",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
        let pip = ["-m", "pip", "install", "--quiet", KUBERNETES_VALIDATE];
        if succeeds(Command::new("python3").args(pip)) {
            return Ok(());
        }
        run(Command::new("python3")
            .args(pip)
            .arg("--break-system-packages"))
    })?;
    Ok(())
}

/// One setup step for a set of Debian packages: installs the missing ones (apt-get, as root).
pub fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            !stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
                .is_some_and(|status| status.contains("install ok installed"))
        })
        .collect();
    step(
        &format!("debian: {}", packages.join(" ")),
        missing.is_empty(),
        || {
            if !nix_is_root() {
                bail!("missing Debian packages {missing:?}; run as root or install them");
            }
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            run(Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"))
        },
    )
}

fn nix_is_root() -> bool {
    stdout_of(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}
