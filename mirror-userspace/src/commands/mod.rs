//! Subcommand implementations (thin: they wire adapters and the core together).

pub mod capture;
pub mod demo;
