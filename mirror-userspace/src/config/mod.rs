//! The TOML configuration file (contract: the README's "Configuration") and its merge with `mirror run` flags
//! (§4).
//!
//! Loading is two steps: serde reads the file into position-keeping structs (syntax, types and
//! unknown keys fail there, with toml's own position), then validation checks every value
//! (ranges, regexes, URLs, modes, uniqueness, write safety) and builds the public types. Either
//! way the first problem is reported as `file:line:col: message`.
//!
//! ```
//! let config = mirror::config::Config::from_toml(
//!     "[[target]]\nname = \"search\"\nport = 8080\nshadow = \"http://search-v2:8080\"\n",
//!     "mirror.toml",
//! )
//! .unwrap();
//! assert_eq!(config.targets[0].methods, ["GET", "HEAD", "OPTIONS"]);
//! ```

mod error;
mod overrides;
mod raw;
mod scope;
mod target;
mod validate;
mod validate_sink;
mod watch;

/// `text` deserialised, a syntax or type error pointing at its position in `source_name`.
fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    source_name: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| {
        ConfigError::at(
            source_name,
            text,
            error.span().unwrap_or(0..0),
            toml_message(&error),
        )
    })
}

/// A file's text and the name its errors give it.
fn read(path: &Path) -> Result<(String, String), ConfigError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((text, name)),
        Err(source) => Err(ConfigError::Read { file: name, source }),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

pub use error::ConfigError;
pub use overrides::{IMPLICIT_TARGET_NAME, RunOverrides};
pub use scope::{LabelSelector, PodSelector, Requirement, parse_address};
pub use target::{
    DEFAULT_METHODS, HeaderField, HeaderFieldError, HostMode, PathFilter, PathPattern,
    SAFE_METHODS, SINGLE_SHADOW_NAME, SampleBy, ShadowConfig, ShadowUrl, TargetConfig,
    WRITE_METHODS, is_safe_method,
};
pub use watch::{ConfigWatch, WatchError};

/// The effective configuration of a daemon.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// `[capture]`.
    pub capture: CaptureSection,
    /// `[metrics]`.
    pub metrics: MetricsSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[replay]`.
    pub replay: ReplaySection,
    /// `[verdict]`: how responses are compared and what a promotion must satisfy.
    pub verdict: crate::verdict::Policy,
    /// `[sink]`.
    pub sink: SinkSection,
    /// At least one; names and ports are unique.
    #[serde(rename = "target")]
    pub targets: Vec<TargetConfig>,
}

/// `[capture]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaptureSection {
    /// Interface names or glob patterns (`veth*`). The file may leave this empty when
    /// `--interface` is given; [`Config::with_overrides`] requires at least one.
    pub interfaces: Vec<String>,
    /// BPF ring buffer size: a power of two, at least one page. Default 16 MiB.
    pub ring_buffer_bytes: u32,
}

impl Default for CaptureSection {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            ring_buffer_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[replay]`: what every daemon's replays carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplaySection {
    /// Header field added to every replay, and by which any daemon with the same configuration
    /// recognises a replay it captures (another node's shadow on a target port): such requests
    /// are not mirrored again and their responses are not the primary's. `None` (`""` in the
    /// file) adds nothing: targets must then be scoped so that no shadow is a target. Default
    /// `X-Mirror-Replay`.
    pub marker_header: Option<String>,
}

impl Default for ReplaySection {
    fn default() -> Self {
        Self {
            marker_header: Some("X-Mirror-Replay".to_owned()),
        }
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetricsSection {
    /// Address of the `/metrics` and `/healthz` endpoint. Default `0.0.0.0:9477`.
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9477)),
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitsSection {
    /// All buffered stream bytes together; LRU eviction beyond. Default 256 MiB.
    pub reassembly_memory_bytes: usize,
    /// Tracked connections; LRU eviction beyond. Default 262144.
    pub max_connections: usize,
    /// A connection silent for this long is forgotten. Default 120.
    pub idle_timeout_secs: u64,
    /// Larger requests/responses are counted and not mirrored. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Captured segments queued between the ring reader and the pipeline, in bytes; batches
    /// beyond are dropped and counted (`consumer_full`). Default 64 MiB.
    pub capture_queue_bytes: usize,
    /// Response bodies held until both sides of a comparison are in (field-level diff), in
    /// bytes over all exchanges; bodies beyond fall back to the digest comparison, counted. 0
    /// holds none. Default 64 MiB.
    pub compare_body_bytes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            reassembly_memory_bytes: 256 * 1024 * 1024,
            max_connections: 262_144,
            idle_timeout_secs: 120,
            max_message_bytes: 16 * 1024 * 1024,
            capture_queue_bytes: crate::capture::DEFAULT_QUEUE_BYTES,
            compare_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[sink]`: compared exchanges written to a file as JSON lines ([`crate::sink`]). Read at
/// start-up: a reload leaves the running sink as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SinkSection {
    /// The file; `None` (`""` or absent in the file) turns the sink off. Default off.
    #[serde(serialize_with = "serialize_optional_path")]
    pub path: Option<PathBuf>,
    /// The file is rotated before it would grow past this size. Default 100 MiB.
    pub max_file_bytes: u64,
    /// Rotated files kept (`path.1` newest .. `path.N` oldest; older ones are deleted). Default
    /// 5.
    pub max_files: u32,
    /// Bodies are cut to this many bytes (marked `"truncated": true`). Default 65536.
    pub body_bytes: usize,
    /// Header fields (case-insensitive, stored lower-case) whose values are written as
    /// `"[redacted]"`. Default authorization, cookie, set-cookie, proxy-authorization.
    pub redact_headers: Vec<String>,
    /// JSON Pointers (`*` = every array element) whose values are written as `"[redacted]"` in
    /// every JSON body. Default none.
    pub redact_fields: Vec<crate::sink::JsonPointer>,
    /// Every compared exchange, or only those where a shadow differs. Default all.
    pub only: SinkOnly,
    /// Records waiting for the writer, in bytes; beyond it they are dropped and counted.
    /// Default 16 MiB.
    pub queue_bytes: usize,
}

/// Header fields redacted unless `redact_headers` says otherwise: credentials and sessions.
pub const DEFAULT_REDACT_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

impl Default for SinkSection {
    fn default() -> Self {
        Self {
            path: None,
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 5,
            body_bytes: 65536,
            redact_headers: DEFAULT_REDACT_HEADERS.map(str::to_owned).to_vec(),
            redact_fields: Vec::new(),
            only: SinkOnly::All,
            queue_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[sink] only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkOnly {
    /// Every compared exchange.
    All,
    /// Exchanges where at least one shadow's response differs from the primary's.
    Differences,
}

/// `None` as `""`, which reads back as `None`: the effective configuration shows the key.
fn serialize_optional_path<S: Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => path.serialize(serializer),
        None => serializer.serialize_str(""),
    }
}

impl Config {
    /// Parses and validates a config file's text. `source_name` (usually the path) prefixes
    /// error positions.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = parse_toml(text, source_name)?;
        validate::validate(raw, text)
            .map_err(|problem| ConfigError::at(source_name, text, problem.span, problem.message))
    }

    /// Reads and validates a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let (text, name) = read(path.as_ref())?;
        Self::from_toml(&text, &name)
    }

    /// Reads a verdict policy file (`mirror verdict --policy`): the keys of a configuration's
    /// `[verdict]` section at the top level, checked as that section is.
    pub fn load_policy(path: impl AsRef<Path>) -> Result<crate::verdict::Policy, ConfigError> {
        let (text, name) = read(path.as_ref())?;
        Self::policy_from_toml(&text, &name)
    }

    /// [`load_policy`](Self::load_policy) on text.
    pub fn policy_from_toml(
        text: &str,
        source_name: &str,
    ) -> Result<crate::verdict::Policy, ConfigError> {
        let policy: toml::Spanned<crate::verdict::Policy> = parse_toml(text, source_name)?;
        validate::verdict(Some(policy))
            .map_err(|problem| ConfigError::at(source_name, text, problem.span, problem.message))
    }

    /// The effective configuration as TOML (every default spelled out); [`from_toml`] reads it
    /// back to an equal `Config`.
    ///
    /// [`from_toml`]: Self::from_toml
    pub fn to_toml_string(&self) -> String {
        // Every value is a string, integer, float, bool, array or table: serialization of these
        // types cannot fail.
        toml::to_string(self).expect("config serializes to TOML")
    }

    /// The target whose primary service listens on `port`.
    pub fn target_for_port(&self, port: u16) -> Option<&TargetConfig> {
        self.targets.iter().find(|target| target.port == port)
    }
}

/// toml's message, one line, with serde's Rust type names replaced by TOML words.
fn toml_message(error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    [
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected a quoted string"),
    ]
    .iter()
    .fold(message, |message, (from, to)| message.replace(from, to))
}
