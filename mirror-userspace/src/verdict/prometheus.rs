//! The cluster-wide evidence, I/O-free: the PromQL `mirror verdict --prometheus-url` runs, and
//! Prometheus' answers turned into the samples [`super::inputs::inputs_from_samples`] reads.
//!
//! Every counter and histogram bucket is queried as `sum by (<its labels>) (increase(m[W]))`:
//! summed over the nodes (each daemon exports its own node's evidence, and all of it adds up),
//! over the window `W`. `increase()` rather than the raw counters because a daemon that restarts
//! (a DaemonSet rollout, a node reboot) counts from zero again: the sum of raw counters would
//! mix lifetimes of different lengths, and `increase()` detects the resets and bridges them.
//! The shadows and their roles are a gauge: `max by (target, role, shadow)
//! (mirror_shadow_info)`, as configured now.

use serde::Deserialize;

use super::inputs::FIELD_COUNTERS;
use crate::stats::Sample;

/// A Prometheus duration (`30m`, `1h`, `1h30m`, `7d`): checked before it goes into a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window(String);

impl Window {
    /// The duration as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Window {
    /// One hour: enough exchanges at a modest sampling rate, and recent enough to be the
    /// candidate being rolled out.
    fn default() -> Self {
        Self("1h".to_owned())
    }
}

impl std::str::FromStr for Window {
    type Err = String;

    /// One or more `<digits><unit>` with unit `ms`, `s`, `m`, `h`, `d`, `w` or `y`, not zero.
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "{text:?} is not a Prometheus duration: digits and a unit (ms, s, m, h, d, w, y), \
                 e.g. 30m, 1h, 1h30m"
            )
        };
        let mut rest = text;
        let mut nonzero = false;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(invalid());
            }
            nonzero |= rest[..digits].bytes().any(|digit| digit != b'0');
            rest = &rest[digits..];
            let unit = ["ms", "s", "m", "h", "d", "w", "y"]
                .into_iter()
                .find(|unit| rest.starts_with(unit))
                .ok_or_else(invalid)?;
            rest = &rest[unit.len()..];
        }
        if !nonzero {
            return Err(invalid());
        }
        Ok(Self(text.to_owned()))
    }
}

/// One instant query and the family its results become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The metric name given to each result (aggregation drops it).
    pub family: &'static str,
    /// The PromQL.
    pub promql: String,
}

/// A PromQL string literal: backslash, double quote and newline escaped.
fn quoted(value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// The queries of a verdict over `window`, of one target (`Some`) or every target.
pub fn queries(window: &Window, target: Option<&str>) -> Vec<Query> {
    let selector = |name: &str| match target {
        Some(target) => format!("{name}{{target={}}}", quoted(target)),
        None => name.to_owned(),
    };
    let increase = |family: &'static str, by: &str| Query {
        family,
        promql: format!(
            "sum by ({by}) (increase({}[{}]))",
            selector(family),
            window.as_str()
        ),
    };
    let mut queries = vec![
        Query {
            family: "mirror_shadow_info",
            promql: format!(
                "max by (target, role, shadow) ({})",
                selector("mirror_shadow_info")
            ),
        },
        increase("mirror_comparisons_total", "target, shadow"),
        increase("mirror_responses_total", "target, role, shadow, code"),
        increase(
            "mirror_response_duration_seconds_bucket",
            "target, role, shadow, le",
        ),
    ];
    queries.extend(
        FIELD_COUNTERS
            .iter()
            .map(|family| increase(family, "target, shadow, field")),
    );
    queries.push(increase(
        "mirror_field_value_bucket",
        "target, shadow, field, side, le",
    ));
    queries
}

/// Why a query's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// The body is not the API's JSON.
    #[error("reading the answer to {query:?}: not Prometheus API JSON ({source})")]
    Json {
        /// The PromQL.
        query: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Prometheus refused the query.
    #[error("Prometheus refused {query:?}: {error_type}: {error}")]
    Refused {
        /// The PromQL.
        query: String,
        /// `errorType`.
        error_type: String,
        /// `error`.
        error: String,
    },
    /// The result is not an instant vector.
    #[error("the answer to {query:?} is a {found}, not a vector")]
    NotVector {
        /// The PromQL.
        query: String,
        /// `resultType`.
        found: String,
    },
    /// A sample value is not a number.
    #[error("the answer to {query:?} has the value {value:?}, not a number")]
    Value {
        /// The PromQL.
        query: String,
        /// The value as sent.
        value: String,
    },
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: String,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Vec<VectorSample>,
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    /// `[unix time, "value"]`.
    value: (f64, String),
}

/// The samples of `query`'s answer `body` (a `/api/v1/query` response), named `query.family`.
pub fn samples_from_response(query: &Query, body: &str) -> Result<Vec<Sample>, PrometheusError> {
    let response: ApiResponse =
        serde_json::from_str(body).map_err(|source| PrometheusError::Json {
            query: query.promql.clone(),
            source,
        })?;
    if response.status != "success" {
        return Err(PrometheusError::Refused {
            query: query.promql.clone(),
            error_type: response.error_type,
            error: response.error,
        });
    }
    let Some(data) = response.data else {
        return Ok(Vec::new());
    };
    if data.result_type != "vector" {
        return Err(PrometheusError::NotVector {
            query: query.promql.clone(),
            found: data.result_type,
        });
    }
    data.result
        .into_iter()
        .map(|sample| {
            let (_, text) = sample.value;
            let value = text.parse().map_err(|_| PrometheusError::Value {
                query: query.promql.clone(),
                value: text.clone(),
            })?;
            Ok(Sample {
                name: query.family.to_owned(),
                labels: sample
                    .metric
                    .into_iter()
                    .filter(|(label, _)| label != "__name__")
                    .collect(),
                value,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "tests/prometheus.rs"]
mod tests;
