//! The file as written: serde structs that keep the position of every value a semantic check may
//! reject, so the error can point at it. Validation turns them into the public types.
//!
//! Integers are read as `i64` (what TOML has) and range-checked by validation, which gives
//! "out of range: allowed 1..=65535" instead of serde's "expected u16".

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub capture: RawCapture,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub replay: RawReplay,
    /// `[verdict]`: the policy's own types, which reject unknown keys.
    #[serde(default)]
    pub verdict: Option<Spanned<crate::verdict::Policy>>,
    #[serde(default)]
    pub sink: RawSink,
    #[serde(default, rename = "target")]
    pub targets: Option<Spanned<Vec<Spanned<RawTarget>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapture {
    pub interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    pub ring_buffer_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub reassembly_memory_bytes: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub idle_timeout_secs: Option<Spanned<i64>>,
    pub max_message_bytes: Option<Spanned<i64>>,
    pub capture_queue_bytes: Option<Spanned<i64>>,
    pub compare_body_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShadow {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    pub baseline: Option<bool>,
    pub queue: Option<Spanned<i64>>,
    pub concurrency: Option<Spanned<i64>>,
    pub timeout_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplay {
    pub marker_header: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    pub path: Option<Spanned<String>>,
    pub max_file_bytes: Option<Spanned<i64>>,
    pub max_files: Option<Spanned<i64>>,
    pub body_bytes: Option<Spanned<i64>>,
    pub redact_headers: Option<Vec<Spanned<String>>>,
    pub redact_fields: Option<Vec<Spanned<String>>>,
    pub only: Option<Spanned<String>>,
    pub queue_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPods {
    pub namespace: Spanned<String>,
    pub selector: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub name: Spanned<String>,
    pub port: Spanned<i64>,
    pub shadow: Option<Spanned<String>>,
    pub shadows: Option<Spanned<Vec<Spanned<RawShadow>>>>,
    pub sample_percent: Option<Spanned<f64>>,
    pub sample_by: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_writes: Option<Spanned<bool>>,
    pub paths: Option<RawPaths>,
    pub host: Option<Spanned<String>>,
    pub set_headers: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub remove_headers: Option<Vec<Spanned<String>>>,
    pub compare_responses: Option<bool>,
    pub max_rps: Option<Spanned<i64>>,
    pub queue: Option<Spanned<i64>>,
    pub concurrency: Option<Spanned<i64>>,
    pub timeout_ms: Option<Spanned<i64>>,
    pub addresses: Option<Vec<Spanned<String>>>,
    pub pods: Option<RawPods>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPaths {
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}
