//! `cargo xtask image`: the container image of deploy/Dockerfile, made without a registry.
//!
//! The multi-stage Dockerfile needs `rust:` and `debian:` images from a registry. This builds
//! the same runtime image from what this machine has: the release binary built on the host, a
//! Debian bookworm root file system made by `mmdebstrap` from Debian's own package mirror,
//! imported as a base image with `podman import`, and the final image assembled with `buildah`
//! (binary at /usr/local/bin/mirror, deploy/systemd/mirror.toml at /etc/mirror/mirror.toml, the
//! Dockerfile's entrypoint, command, user and port), tagged as deploy/kubernetes/kustomization.yaml
//! names the image.
//!
//! The root file system is cached as a tarball under target/image/ (keyed by the recipe below)
//! and imported once per content: a second run costs the cargo no-op build and a few seconds of
//! buildah. `--refresh-rootfs` makes it anew (Debian security updates).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{output_of, run, workspace_root};

/// The Debian release of the image: the one the binary is built on (it links glibc
/// dynamically; `check_glibc` refuses a host whose glibc is newer than the image's).
const SUITE: &str = "bookworm";

/// mmdebstrap arguments besides suite and output. `essential` installs only the Essential:yes
/// packages (libc6, libgcc-s1, coreutils, a shell; no apt): all the binary needs (`ldd`: libc,
/// libm, libgcc_s), checked below. No ca-certificates: the daemon speaks plain HTTP to shadows
/// and to its metrics clients. The merged-usr hook installs usr-is-merged instead of usrmerge,
/// which would pull in perl. Documentation, manual pages and translations are left out, as in
/// debian:bookworm-slim; device nodes too (the runtime provides /dev).
const MMDEBSTRAP_ARGS: &[&str] = &[
    "--variant=essential",
    "--format=tar",
    "--skip=output/dev",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
];

/// PATH of the debian: images (an imported tarball has no configuration of its own).
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// As deploy/Dockerfile: ENTRYPOINT, CMD, USER and EXPOSE of the runtime stage.
const ENTRYPOINT: &str = r#"["/usr/local/bin/mirror"]"#;
const CMD: &str = r#"["run","--config","/etc/mirror/mirror.toml"]"#;
const USER: &str = "0:0";
const METRICS_PORT: &str = "9477";

/// `newName:newTag` of the `images:` entry in deploy/kubernetes/kustomization.yaml.
pub fn kustomization_tag() -> anyhow::Result<String> {
    let path = workspace_root().join("deploy/kubernetes/kustomization.yaml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value = |key: &str| -> anyhow::Result<String> {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(key))
            .map(|value| value.trim().trim_matches('"').to_owned())
            .with_context(|| format!("no `{key}` in {}", path.display()))
    };
    Ok(format!("{}:{}", value("newName:")?, value("newTag:")?))
}

/// Builds the image; returns its tag.
pub fn image(binary: &Path, tag: Option<String>, refresh_rootfs: bool) -> anyhow::Result<String> {
    let tag = match tag {
        Some(tag) => tag,
        None => kustomization_tag()?,
    };
    let started = Instant::now();
    let rootfs = rootfs_tarball(refresh_rootfs)?;
    check_libraries(binary, &rootfs)?;
    let base = import_base(&rootfs)?;
    assemble(binary, &base, &tag)?;
    println!(
        "image: {tag} built in {:.1} s (base {base})",
        started.elapsed().as_secs_f64()
    );
    Ok(tag)
}

/// FNV-1a: a stable hash of the recipe for the cache file name (std's hasher may change
/// between Rust releases).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// A command's stdout, trimmed.
fn stdout(command: &mut Command) -> anyhow::Result<String> {
    Ok(output_of(command)?.trim().to_owned())
}

/// `target/image/rootfs-<suite>-<recipe hash>.tar`, made by mmdebstrap unless cached.
fn rootfs_tarball(refresh: bool) -> anyhow::Result<PathBuf> {
    let mut recipe = vec![SUITE];
    recipe.extend_from_slice(MMDEBSTRAP_ARGS);
    let dir = workspace_root().join("target/image");
    let tarball = dir.join(format!("rootfs-{SUITE}-{:016x}.tar", fnv1a(&recipe)));
    if tarball.is_file() && !refresh {
        println!("image: root file system cached: {}", tarball.display());
        return Ok(tarball);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Written under another name and renamed when complete: an interrupted run leaves no
    // truncated cache behind.
    let partial = tarball.with_extension("tar.partial");
    let started = Instant::now();
    println!("image: mmdebstrap {SUITE} (Debian's mirror; about a minute)");
    run(Command::new("mmdebstrap")
        .args(MMDEBSTRAP_ARGS)
        .arg(SUITE)
        .arg(&partial))?;
    fs::rename(&partial, &tarball).context("moving the root file system into place")?;
    // Tarballs of other recipes are not used again.
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path != tarball && name.starts_with("rootfs-") && name.ends_with(".tar") {
            let _ = fs::remove_file(&path);
        }
    }
    println!(
        "image: root file system in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        tarball.display()
    );
    Ok(tarball)
}

/// Every shared library the binary loads (`ldd`) is in the root file system, and its glibc is
/// not older than the host's (the binary may use symbols of the host's version).
fn check_libraries(binary: &Path, rootfs: &Path) -> anyhow::Result<()> {
    let listing = stdout(Command::new("tar").arg("-tf").arg(rootfs))?;
    let files: std::collections::BTreeSet<&str> = listing
        .lines()
        .map(|line| line.trim_start_matches("./"))
        .collect();
    let ldd = stdout(Command::new("ldd").arg(binary))?;
    let mut needed = Vec::new();
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        let Some(path) = path else { continue };
        if path == "not" {
            bail!(
                "{} cannot load a library on this host: {line}",
                binary.display()
            );
        }
        // Merged /usr: /lib and /lib64 are links to usr/lib and usr/lib64 in the image.
        let relative = path.trim_start_matches('/');
        let merged = format!("usr/{relative}");
        if !files.contains(relative) && !files.contains(merged.as_str()) {
            bail!(
                "{path} (needed by {}) is not in the image's root file system",
                binary.display()
            );
        }
        needed.push(path.to_owned());
    }
    if needed.is_empty() {
        bail!("ldd found no libraries in {}:\n{ldd}", binary.display());
    }
    let status = stdout(
        Command::new("tar")
            .arg("-xOf")
            .arg(rootfs)
            .arg("./var/lib/dpkg/status"),
    )?;
    let image_glibc = status
        .split("\n\n")
        .find(|stanza| stanza.lines().any(|line| line == "Package: libc6"))
        .and_then(|stanza| {
            stanza
                .lines()
                .find_map(|line| line.strip_prefix("Version: "))
        })
        .context("libc6 in the image's dpkg status")?
        .to_owned();
    let host = stdout(Command::new("ldd").arg("--version"))?;
    let host_glibc = host
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().last())
        .context("glibc version from ldd --version")?
        .to_owned();
    let numbers = |version: &str| -> Vec<u32> {
        version
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .filter_map(|part| part.parse().ok())
            .collect()
    };
    if numbers(&image_glibc) < numbers(&host_glibc) {
        bail!(
            "the host's glibc {host_glibc} is newer than the image's ({image_glibc}): build on \
             Debian {SUITE}"
        );
    }
    println!(
        "image: libraries present ({}), glibc {image_glibc} >= host {host_glibc}",
        needed.join(" ")
    );
    Ok(())
}

/// `localhost/mirror-rootfs:<content hash>`, imported unless already there.
fn import_base(rootfs: &Path) -> anyhow::Result<String> {
    let sum = stdout(Command::new("sha256sum").arg(rootfs))?;
    let base = format!("localhost/mirror-rootfs:{SUITE}-{}", &sum[..12]);
    if Command::new("podman")
        .args(["image", "exists", &base])
        .status()
        .is_ok_and(|status| status.success())
    {
        println!("image: base {base} present");
        return Ok(base);
    }
    stdout(
        Command::new("podman")
            .args(["import", "--quiet", "--change", &format!("ENV={PATH_ENV}")])
            .arg(rootfs)
            .arg(&base),
    )?;
    println!("image: imported {base}");
    // Earlier bases (an older recipe or a refreshed root file system) are not used again; one
    // that a remaining image still builds on stays (podman refuses to remove it).
    let bases = stdout(Command::new("podman").args([
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "localhost/mirror-rootfs",
    ]))
    .unwrap_or_default();
    for old in bases.lines().filter(|name| *name != base) {
        let _ = Command::new("podman").args(["rmi", old]).output();
    }
    Ok(base)
}

/// The runtime stage of deploy/Dockerfile on `base`, committed as `tag`.
fn assemble(binary: &Path, base: &str, tag: &str) -> anyhow::Result<()> {
    let previous =
        stdout(Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", tag])).ok();
    let container =
        stdout(Command::new("buildah").args(["from", "--quiet", "--pull=never", base]))?;
    let result = (|| -> anyhow::Result<()> {
        run(Command::new("buildah")
            .args(["copy", "--quiet", "--chmod", "0755", &container])
            .arg(binary)
            .arg("/usr/local/bin/mirror"))?;
        run(Command::new("buildah")
            .args(["copy", "--quiet", "--chmod", "0644", &container])
            .arg(workspace_root().join("deploy/systemd/mirror.toml"))
            .arg("/etc/mirror/mirror.toml"))?;
        let revision = stdout(Command::new("git").args(["rev-parse", "HEAD"])).unwrap_or_default();
        let version = tag.rsplit_once(':').map_or("", |(_, version)| version);
        run(Command::new("buildah").args([
            "config",
            "--entrypoint",
            ENTRYPOINT,
            "--cmd",
            CMD,
            "--user",
            USER,
            "--port",
            METRICS_PORT,
            "--workingdir",
            "/",
            "--label",
            "org.opencontainers.image.title=mirror",
            "--label",
            &format!("org.opencontainers.image.version={version}"),
            "--label",
            &format!("org.opencontainers.image.revision={revision}"),
            "--label",
            &format!("org.opencontainers.image.base.name={base}"),
            &container,
        ]))?;
        stdout(Command::new("buildah").args(["commit", "--quiet", "--rm", &container, tag]))
            .map(|_| ())
    })();
    if result.is_err() {
        let _ = Command::new("buildah").args(["rm", &container]).output();
    }
    result?;
    // The image the tag named before is left without a name: remove it (it stays when a
    // container still uses it).
    let current =
        stdout(Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", tag]))?;
    if let Some(previous) = previous.filter(|previous| *previous != current) {
        let _ = Command::new("podman").args(["rmi", &previous]).output();
    }
    Ok(())
}
