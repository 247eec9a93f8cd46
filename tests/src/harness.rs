//! The harness of the test targets that hold privileged tests (`harness = false` in
//! Cargo.toml, on libtest-mimic): each file's `main` lists its tests, and a test that needs root
//! shows as *ignored* when not run as root, or fails under CI (`CI=true`), never passes
//! unexercised. The arguments are libtest's (`--test-threads`, a name filter, `--exact`,
//! `--list`, `--ignored`, `--include-ignored`, ...).
//!
//! ```text
//! use mirror_tests::harness;
//!
//! fn main() {
//!     harness::main(vec![
//!         harness::root("ipv4_request_is_byte_exact", ipv4_request_is_byte_exact),
//!         harness::plain("the_config_parses", the_config_parses),
//!     ])
//! }
//! ```
//!
//! `MIRROR_TESTS_ASSUME_UNPRIVILEGED=1` makes the privilege check answer "not root" even as
//! root, to exercise the ignored and the CI paths without dropping privileges.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

pub use libtest_mimic::{Arguments, Failed, Trial};

/// Set when a test was marked ignored for lack of privileges: `main` then says why, once.
static IGNORED_UNPRIVILEGED: AtomicBool = AtomicBool::new(false);

/// True when the tests that need root may run: root, unless `MIRROR_TESTS_ASSUME_UNPRIVILEGED=1`.
pub fn is_privileged() -> bool {
    static PRIVILEGED: OnceLock<bool> = OnceLock::new();
    *PRIVILEGED.get_or_init(|| {
        std::env::var("MIRROR_TESTS_ASSUME_UNPRIVILEGED").as_deref() != Ok("1")
            && nix::unistd::geteuid().is_root()
    })
}

/// True under CI (`CI=true`), where a privileged test that cannot run fails instead of skipping.
pub fn is_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A test that needs root (BPF, network namespaces). Not root: ignored, or failed under CI.
pub fn root(name: &'static str, test: fn()) -> Trial {
    if is_privileged() {
        return plain(name, test);
    }
    if is_ci() {
        return Trial::test(name, move || {
            Err(Failed::from(format!(
                "{name} needs root (BPF, network namespaces); under CI it fails instead of skipping"
            )))
        });
    }
    IGNORED_UNPRIVILEGED.store(true, Ordering::Relaxed);
    // `--ignored` or `--include-ignored` still runs it (and it then fails on its first
    // privileged call).
    plain(name, test).with_ignored_flag(true)
}

/// A test that needs no privileges: always runs.
pub fn plain(name: &'static str, test: fn()) -> Trial {
    Trial::test(name, move || run(name, test))
}

/// Runs `test` on a thread named after it, as libtest does (the panic message names the test),
/// and turns a panic into a failure that carries its message.
fn run(name: &'static str, test: fn()) -> Result<(), Failed> {
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(test)
        .map_err(|error| Failed::from(format!("spawning the thread of {name}: {error}")))?;
    thread.join().map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        match message {
            Some(message) => Failed::from(format!("test panicked: {message}")),
            None => Failed::from("test panicked (no message)"),
        }
    })
}

/// Parses libtest's arguments, runs `trials` and exits with libtest's status.
pub fn main(trials: Vec<Trial>) -> ! {
    let args = Arguments::from_args();
    if IGNORED_UNPRIVILEGED.load(Ordering::Relaxed) && !args.list {
        eprintln!(
            "ignoring the tests that need root (BPF, network namespaces): run as root or under CI \
             (CI=true fails them instead)"
        );
    }
    libtest_mimic::run(&args, trials).exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_fails_the_test_with_its_message() {
        let failed = run("panicking", || panic!("the {} message", "formatted")).unwrap_err();
        assert_eq!(
            failed.message(),
            Some("test panicked: the formatted message")
        );
        let failed = run("panicking", || panic!("static")).unwrap_err();
        assert_eq!(failed.message(), Some("test panicked: static"));
        assert!(run("passing", || ()).is_ok());
    }
}
