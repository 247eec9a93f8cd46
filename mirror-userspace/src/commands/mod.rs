//! Subcommand implementations (thin: they wire adapters and the core together).

pub mod capture;
pub mod demo;
pub mod fetch;
pub mod gate;
pub mod run;
pub mod stats;
pub mod verdict;

use std::path::Path;

/// `mirror check-config FILE`: prints the effective configuration, or fails with the first
/// error as `file:line:col: message`.
pub fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = crate::config::Config::load(file)?;
    print!("{}", config.to_toml_string());
    Ok(())
}
