//! Builds the eBPF classifier (`mirror-ebpf`) for `bpfel-unknown-none` with aya-build and leaves
//! the object in `OUT_DIR`, where `capture` embeds it with `include_bytes_aligned!`.
//!
//! Needs `bpf-linker` and `rust-src` for the nightly toolchain; `cargo xtask setup` installs both.
//! Without a `nightly` toolchain the stable one is used with `RUSTC_BOOTSTRAP=1` (same object).

use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|output| output.status.success())
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=MIRROR_EBPF_TOOLCHAIN");
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("bpf-linker is not installed; run `cargo xtask setup` (installs bpf-linker@0.10.4)");
    }
    let toolchain_name = std::env::var("MIRROR_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain_name.as_deref() {
        Some(name) => Toolchain::Custom(name),
        None if has_nightly() => Toolchain::Nightly,
        None => {
            // SAFETY: build scripts are single-threaded at this point; the variable is only read
            // by the cargo child process aya-build spawns.
            unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
            Toolchain::Custom("stable")
        }
    };
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("{manifest_dir} has no parent"))?
        .join("mirror-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "mirror-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        toolchain,
    )
    .context(
        "building the eBPF classifier (mirror-ebpf); `cargo xtask setup` installs what it needs",
    )
}
