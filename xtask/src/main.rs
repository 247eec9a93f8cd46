//! Project tasks: `cargo xtask setup | build | image | test | demo | bench`.
//!
//! `setup` installs what a fresh machine lacks (rust-src for the nightly toolchain, bpf-linker,
//! cargo-fuzz, the Debian packages the tests use), idempotently and in seconds when everything is
//! present. The other tasks run it first.

mod bench;
mod image;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "mirror project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing prerequisites (toolchain parts, bpf-linker, cargo-fuzz, Debian packages).
    Setup,
    /// Build the `mirror` binary (release).
    Build,
    /// Build the container image of deploy/Dockerfile without a registry: the release binary,
    /// a Debian bookworm root file system from mmdebstrap (cached under target/image/),
    /// `podman import` and `buildah`. Tagged as deploy/kubernetes/kustomization.yaml names the
    /// image (ghcr.io/example/mirror:0.1.0); needs root.
    Image {
        /// Tag the image with this name instead of the kustomization's newName:newTag.
        #[arg(long)]
        tag: Option<String>,
        /// Make the root file system anew rather than reuse the cached one (Debian updates).
        #[arg(long)]
        refresh_rootfs: bool,
        /// Put this `mirror` binary in the image instead of building the release one (the
        /// image test uses the debug binary `cargo xtask test` already built).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Run every test: unit, property, classifier (BPF_PROG_TEST_RUN), end-to-end in network
    /// namespaces, and a short fuzz run. Privileged tests need root.
    Test {
        /// Fuzzing time per fuzz target, in seconds (0 skips fuzzing).
        #[arg(long, default_value_t = 30)]
        fuzz_seconds: u64,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Build, then run `mirror demo` (needs root).
    Demo {
        /// Arguments for `mirror demo`.
        #[arg(last = true)]
        demo_args: Vec<String>,
    },
    /// Measure the classifier (ns per packet), `mirror run` (primary impact, completeness, cost,
    /// the verdict's cost) and the core and the field diff (criterion); writes BENCHMARKS.md.
    /// Needs root.
    Bench {
        /// Skip the criterion benchmarks of the userspace core.
        #[arg(long)]
        skip_criterion: bool,
        /// Interleaved rounds of the primary-impact modes (P50 ratios of single runs vary by
        /// about 8% here; five rounds steady their median).
        #[arg(long, default_value_t = 5)]
        rounds: u64,
        /// Seconds of load per primary-impact run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Only measure pairing against ground truth and rewrite that section of BENCHMARKS.md
        /// (no root needed, a minute).
        #[arg(long, conflicts_with = "only_verdict")]
        only_pairing: bool,
        /// Only measure the verdict's cost (the daemon's CPU with field-by-field comparison
        /// against digests only, 1 and 3 shadows; the field diff's criterion benchmark) and
        /// rewrite those two sections of BENCHMARKS.md. Needs root; about six minutes.
        #[arg(long, conflicts_with = "only_classifier")]
        only_verdict: bool,
        /// Only the classifier section (root); the rest of BENCHMARKS.md is kept.
        #[arg(long, conflicts_with = "only_pairing")]
        only_classifier: bool,
        /// Only the `mirror run` section (primary impact, coupling, sampled share, short
        /// connections, completeness; root); the rest of BENCHMARKS.md is kept.
        #[arg(long, conflicts_with_all = ["only_pairing", "only_verdict", "only_classifier"])]
        only_run: bool,
    },
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask inside the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing with the command line on a non-zero exit.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let line = format!("{command:?}");
    let status = command
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("starting {line}"))?;
    if !status.success() {
        bail!("{line} failed: {status}");
    }
    Ok(())
}

/// Runs a command in the workspace root and returns its stdout, failing with the command line
/// and its stderr on a non-zero exit.
pub fn output_of(command: &mut Command) -> anyhow::Result<String> {
    let line = format!("{command:?}");
    let output = command
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("starting {line}"))?;
    if !output.status.success() {
        bail!(
            "{line} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn build_release() -> anyhow::Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "mirror-userspace",
        "--bin",
        "mirror",
    ]))?;
    Ok(workspace_root().join("target/release/mirror"))
}

fn test(fuzz_seconds: u64, cargo_args: &[String]) -> anyhow::Result<()> {
    // The end-to-end tests run the real binary.
    run(cargo().args(["build", "-p", "mirror-userspace", "--bin", "mirror"]))?;
    let bin = workspace_root().join("target/debug/mirror");
    // Namespace-heavy end-to-end tests share two cores: run them one at a time, after the
    // unit and property tests (which run in parallel).
    // The eBPF crate only builds for the BPF target (mirror-userspace/build.rs does that).
    run(cargo()
        .args([
            "test",
            "--workspace",
            "--exclude",
            "mirror-tests",
            "--exclude",
            "mirror-ebpf",
        ])
        .args(cargo_args))?;
    run(cargo()
        // Every test binary runs: one failure does not hide the others'.
        .args(["test", "--no-fail-fast", "-p", "mirror-tests"])
        .args(cargo_args)
        .args(["--", "--test-threads=1"])
        .env("MIRROR_BIN", &bin))?;
    if fuzz_seconds > 0 {
        fuzz(fuzz_seconds)?;
    }
    Ok(())
}

/// A short, bounded run of every fuzz target over its seed corpus.
fn fuzz(seconds: u64) -> anyhow::Result<()> {
    let fuzz_dir = workspace_root().join("fuzz");
    if !fuzz_dir.join("Cargo.toml").exists() {
        println!("fuzz: no fuzz crate, skipped");
        return Ok(());
    }
    let output = Command::new("cargo")
        .args(["+nightly", "fuzz", "list"])
        .current_dir(&fuzz_dir)
        .output()
        .context("cargo fuzz list")?;
    let targets = String::from_utf8_lossy(&output.stdout).into_owned();
    for target in targets.lines().filter(|line| !line.trim().is_empty()) {
        println!("fuzz: {target} for {seconds} s");
        // New inputs go to a scratch corpus (first directory); the committed seeds stay as
        // they are. Crashes land in fuzz/artifacts/ and fail the run.
        let scratch = std::env::temp_dir().join(format!("mirror-fuzz-{target}"));
        std::fs::create_dir_all(&scratch).context("creating the scratch corpus")?;
        run(Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target])
            .arg(&scratch)
            .arg(fuzz_dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(&fuzz_dir))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::setup(),
        Task::Build => {
            setup::setup()?;
            let bin = build_release()?;
            println!("built {}", bin.display());
            Ok(())
        }
        Task::Image {
            tag,
            refresh_rootfs,
            binary,
        } => {
            setup::setup()?;
            let bin = match binary {
                Some(binary) => binary,
                None => build_release()?,
            };
            image::image(&bin, tag, refresh_rootfs).map(|_| ())
        }
        Task::Test {
            fuzz_seconds,
            cargo_args,
        } => {
            setup::setup()?;
            test(fuzz_seconds, &cargo_args)
        }
        Task::Demo { demo_args } => {
            setup::setup()?;
            let bin = build_release()?;
            run(Command::new(bin).arg("demo").args(demo_args))
        }
        Task::Bench {
            only_pairing: true, ..
        } => bench::pairing_only(),
        Task::Bench {
            only_verdict: true,
            rounds,
            ..
        } => {
            setup::setup()?;
            bench::verdict_only(rounds)
        }
        Task::Bench {
            only_classifier: true,
            ..
        } => {
            setup::setup()?;
            bench::classifier_only()
        }
        Task::Bench {
            only_run: true,
            rounds,
            seconds,
            ..
        } => {
            setup::setup()?;
            bench::run_only(rounds, seconds)
        }
        Task::Bench {
            skip_criterion,
            rounds,
            seconds,
            ..
        } => {
            setup::setup()?;
            bench::bench(skip_criterion, rounds, seconds)
        }
    }
}
