//! Command-line interface (contract: DESIGN.md §4).

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::capture::DEFAULT_RING_BUFFER_BYTES;

/// Packet-level HTTP/1.x traffic mirror: captures a service's traffic with a TC eBPF classifier,
/// reassembles it and replays sampled requests to a shadow service.
#[derive(Debug, Parser)]
#[command(name = "mirror", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (verbosity via RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MIRROR_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the HTTP traffic of target ports as seen on the wire, one line per request/response
    /// pair (method, Host, target, status, primary latency); replays nothing. Needs root (or
    /// CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON).
    Capture(CaptureArgs),
    /// Self-contained tour in network namespaces it creates and removes (needs root).
    Demo,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Interface name or glob pattern ('veth*'); repeat for several. Loopback is captured on
    /// egress only (it sees each packet twice).
    #[arg(long = "interface", short = 'i', value_name = "IFACE", required = true)]
    pub interfaces: Vec<String>,

    /// Target TCP port (the service's port); repeat for several.
    #[arg(long = "port", short = 'p', value_name = "PORT", required = true)]
    pub ports: Vec<u16>,

    /// Stop after N lines.
    #[arg(long, short = 'c', value_name = "N")]
    pub count: Option<u64>,

    /// Print one line per TCP segment (flow, direction, seq, flags, length) instead of one per
    /// HTTP request/response pair.
    #[arg(long)]
    pub segments: bool,

    /// Ring buffer size in bytes (power of two, multiple of the page size).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUFFER_BYTES)]
    pub ring_buffer_bytes: u32,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn capture_takes_repeated_interfaces_and_ports() {
        let cli = Cli::try_parse_from([
            "mirror",
            "capture",
            "-i",
            "eth0",
            "--interface",
            "veth*",
            "--port",
            "8080",
            "-p",
            "9090",
            "--count",
            "5",
        ])
        .unwrap();
        let Command::Capture(args) = cli.command else {
            panic!("parsed as capture");
        };
        assert_eq!(args.interfaces, ["eth0", "veth*"]);
        assert_eq!(args.ports, [8080, 9090]);
        assert_eq!(args.count, Some(5));
    }

    #[test]
    fn capture_requires_a_port() {
        let error = Cli::try_parse_from(["mirror", "capture", "-i", "eth0"]).unwrap_err();
        assert!(error.to_string().contains("--port"), "{error}");
    }
}
