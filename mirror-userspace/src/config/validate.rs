//! Semantic validation: [`RawConfig`] (as written, with positions) to [`Config`]. The first
//! problem found wins and points at the offending value.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::error::{Problem, line_col};
use super::raw::{
    RawCapture, RawConfig, RawLimits, RawMetrics, RawPaths, RawPods, RawReplay, RawShadow,
    RawTarget,
};
use super::scope::{PodSelector, parse_address};
use super::target::{
    HeaderField, HeaderFieldError, HostMode, PathFilter, PathPattern, SINGLE_SHADOW_NAME, SampleBy,
    ShadowConfig, ShadowUrl, TargetConfig, WRITE_METHODS, check_header_name, is_safe_method,
    is_token,
};
use super::validate_sink::sink;
use super::{CaptureSection, Config, LimitsSection, MetricsSection, ReplaySection};
use crate::capture::{MAX_QUEUE_BYTES, MIN_QUEUE_BYTES};

/// Smallest ring buffer the kernel accepts (one page on x86-64 and arm64).
const MIN_RING_BUFFER_BYTES: i64 = 4096;
/// Largest power of two a `u32` holds.
const MAX_RING_BUFFER_BYTES: i64 = 1 << 31;
/// Linux interface names are at most IFNAMSIZ - 1 bytes.
const MAX_INTERFACE_NAME: usize = 15;

pub(super) type Checked<T> = Result<T, Problem>;

pub(super) fn validate(raw: RawConfig, text: &str) -> Checked<Config> {
    Ok(Config {
        capture: capture(raw.capture)?,
        metrics: metrics(raw.metrics)?,
        limits: limits(raw.limits)?,
        replay: replay(raw.replay)?,
        verdict: verdict(raw.verdict)?,
        sink: sink(raw.sink)?,
        targets: targets(raw.targets, text)?,
    })
}

pub(super) fn verdict(
    raw: Option<Spanned<crate::verdict::Policy>>,
) -> Checked<crate::verdict::Policy> {
    let Some(raw) = raw else {
        return Ok(crate::verdict::Policy::default());
    };
    let span = raw.span();
    let policy = raw.into_inner();
    crate::verdict::Comparer::new(&policy.diff).map_err(|error| {
        Problem::new(
            span.clone(),
            format!("[verdict] diff.ignore_fields: {error}"),
        )
    })?;
    let rates = [
        ("max_error_rate_delta", policy.max_error_rate_delta),
        ("max_real_diff_rate", policy.max_real_diff_rate),
        (
            "fields.relative_threshold",
            policy.fields.relative_threshold,
        ),
        (
            "fields.absolute_threshold",
            policy.fields.absolute_threshold,
        ),
        ("drift.threshold", policy.drift.threshold),
    ];
    for (key, value) in rates {
        if !(0.0..=1.0).contains(&value) {
            return Err(Problem::new(
                span.clone(),
                format!("[verdict] {key} = {value} is out of range: allowed 0..=1"),
            ));
        }
    }
    for (key, value) in [
        ("max_p50_ratio", policy.max_p50_ratio),
        ("max_p99_ratio", policy.max_p99_ratio),
    ] {
        if !(value >= 1.0 && value.is_finite()) {
            return Err(Problem::new(
                span.clone(),
                format!("[verdict] {key} = {value} is out of range: a ratio of at least 1"),
            ));
        }
    }
    Ok(policy)
}

fn replay(raw: RawReplay) -> Checked<ReplaySection> {
    let mut section = ReplaySection::default();
    if let Some(name) = raw.marker_header {
        section.marker_header = match name.get_ref().as_str() {
            "" => None,
            text => {
                check_header_name(text, "marker_header")
                    .map_err(|message| Problem::new(name.span(), message))?;
                Some(text.to_owned())
            }
        };
    }
    Ok(section)
}

fn pods(raw: RawPods) -> Checked<PodSelector> {
    let selector = raw
        .selector
        .as_ref()
        .map_or("", |selector| selector.get_ref());
    PodSelector::new(raw.namespace.get_ref(), selector).map_err(|message| {
        let span = if message.starts_with("invalid namespace") {
            raw.namespace.span()
        } else {
            raw.selector
                .as_ref()
                .map_or(raw.namespace.span(), Spanned::span)
        };
        Problem::new(span, message)
    })
}

fn capture(raw: RawCapture) -> Checked<CaptureSection> {
    let defaults = CaptureSection::default();
    let interfaces = match raw.interfaces {
        None => defaults.interfaces,
        Some(list) => list
            .into_inner()
            .into_iter()
            .map(|name| {
                check_interface(name.get_ref())
                    .map_err(|message| Problem::new(name.span(), message))?;
                Ok(name.into_inner())
            })
            .collect::<Checked<_>>()?,
    };
    let ring_buffer_bytes = match raw.ring_buffer_bytes {
        None => defaults.ring_buffer_bytes,
        Some(value) => {
            let bytes = *value.get_ref();
            let valid = (MIN_RING_BUFFER_BYTES..=MAX_RING_BUFFER_BYTES).contains(&bytes)
                && bytes.count_ones() == 1;
            if !valid {
                return Err(Problem::new(
                    value.span(),
                    format!(
                        "ring_buffer_bytes = {bytes} is invalid: expected a power of two from {MIN_RING_BUFFER_BYTES} to {MAX_RING_BUFFER_BYTES}"
                    ),
                ));
            }
            bytes as u32
        }
    };
    Ok(CaptureSection {
        interfaces,
        ring_buffer_bytes,
    })
}

/// An interface name or glob pattern (`veth*`).
pub(super) fn check_interface(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_INTERFACE_NAME
        || name
            .bytes()
            .any(|byte| byte == b'/' || !byte.is_ascii_graphic())
    {
        return Err(format!(
            "invalid interface `{name}`: expected a name or glob pattern of 1 to {MAX_INTERFACE_NAME} visible characters without '/'"
        ));
    }
    glob::Pattern::new(name)
        .map(|_| ())
        .map_err(|error| format!("invalid interface pattern `{name}`: {error}"))
}

fn metrics(raw: RawMetrics) -> Checked<MetricsSection> {
    let Some(listen) = raw.listen else {
        return Ok(MetricsSection::default());
    };
    let address =
        parse_listen(listen.get_ref()).map_err(|message| Problem::new(listen.span(), message))?;
    Ok(MetricsSection { listen: address })
}

pub(super) fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "invalid listen address `{text}`: expected ip:port such as 0.0.0.0:9477 or [::]:9477"
        )
    })
}

fn limits(raw: RawLimits) -> Checked<LimitsSection> {
    let defaults = LimitsSection::default();
    Ok(LimitsSection {
        reassembly_memory_bytes: int_or(
            raw.reassembly_memory_bytes,
            "reassembly_memory_bytes",
            1..=i64::MAX,
            defaults.reassembly_memory_bytes,
        )?,
        max_connections: int_or(
            raw.max_connections,
            "max_connections",
            1..=i64::from(u32::MAX),
            defaults.max_connections,
        )?,
        idle_timeout_secs: int_or(
            raw.idle_timeout_secs,
            "idle_timeout_secs",
            1..=i64::from(u32::MAX),
            defaults.idle_timeout_secs,
        )?,
        max_message_bytes: int_or(
            raw.max_message_bytes,
            "max_message_bytes",
            1..=i64::from(u32::MAX),
            defaults.max_message_bytes,
        )?,
        capture_queue_bytes: int_or(
            raw.capture_queue_bytes,
            "capture_queue_bytes",
            MIN_QUEUE_BYTES as i64..=MAX_QUEUE_BYTES as i64,
            defaults.capture_queue_bytes,
        )?,
        compare_body_bytes: int_or(
            raw.compare_body_bytes,
            "compare_body_bytes",
            0..=MAX_QUEUE_BYTES as i64,
            defaults.compare_body_bytes,
        )?,
    })
}

/// The integer `value` (or `default` when absent), which must lie in `allowed`.
pub(super) fn int_or<T: TryFrom<i64>>(
    value: Option<Spanned<i64>>,
    key: &str,
    allowed: std::ops::RangeInclusive<i64>,
    default: T,
) -> Checked<T> {
    let Some(value) = value else {
        return Ok(default);
    };
    let number = *value.get_ref();
    if !allowed.contains(&number) {
        return Err(Problem::new(
            value.span(),
            format!(
                "{key} = {number} is out of range: allowed {}..={}",
                allowed.start(),
                allowed.end()
            ),
        ));
    }
    T::try_from(number)
        .map_err(|_| Problem::new(value.span(), format!("{key} = {number} is too large")))
}

fn targets(
    raw: Option<Spanned<Vec<Spanned<RawTarget>>>>,
    text: &str,
) -> Checked<Vec<TargetConfig>> {
    let Some(raw) = raw else {
        return Err(Problem::new(
            0..0,
            "no [[target]] defined: at least one target (name, port, shadow) is required",
        ));
    };
    if raw.get_ref().is_empty() {
        return Err(Problem::new(
            raw.span(),
            "no [[target]] defined: at least one target (name, port, shadow) is required",
        ));
    }
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let mut ports: HashMap<u16, String> = HashMap::new();
    let mut targets = Vec::new();
    for raw_target in raw.into_inner() {
        let raw_target = raw_target.into_inner();
        let name_span = raw_target.name.span();
        let port_span = raw_target.port.span();
        let target = target(raw_target)?;
        if let Some(first) = names.get(&target.name) {
            let (line, _) = line_col(text, first.start);
            return Err(Problem::new(
                name_span,
                format!(
                    "duplicate target name `{}` (first defined on line {line}): names must be unique",
                    target.name
                ),
            ));
        }
        if let Some(owner) = ports.get(&target.port) {
            return Err(Problem::new(
                port_span,
                format!(
                    "port {} already belongs to target `{owner}`: each port can have one target",
                    target.port
                ),
            ));
        }
        names.insert(target.name.clone(), name_span);
        ports.insert(target.port, target.name.clone());
        targets.push(target);
    }
    Ok(targets)
}

fn target(raw: RawTarget) -> Checked<TargetConfig> {
    let name = raw.name.get_ref().clone();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(Problem::new(
            raw.name.span(),
            "invalid target name: expected a non-empty label without control characters",
        ));
    }
    let port = int_or(Some(raw.port), "port", 1..=65535, 0u16)?;
    let name_span = raw.name.span();
    let (single, shadows) = match (raw.shadow, raw.shadows) {
        (Some(url), None) => {
            let url = ShadowUrl::parse(url.get_ref()).map_err(|m| Problem::new(url.span(), m))?;
            (url, None)
        }
        (None, Some(shadows)) => {
            let first = shadows.get_ref().first().ok_or_else(|| {
                Problem::new(shadows.span(), "shadows is empty: list at least one shadow")
            })?;
            let url = ShadowUrl::parse(first.get_ref().url.get_ref())
                .map_err(|m| Problem::new(first.get_ref().url.span(), m))?;
            (url, Some(shadows))
        }
        (Some(url), Some(_)) => {
            return Err(Problem::new(
                url.span(),
                "a target has either `shadow = \"URL\"` or [[target.shadows]], not both",
            ));
        }
        (None, None) => {
            return Err(Problem::new(
                name_span,
                format!(
                    "target `{name}` has no shadow: add `shadow = \"http://host:port\"` or [[target.shadows]]"
                ),
            ));
        }
    };
    let mut target = TargetConfig::with_defaults(name, port, single);

    if let Some(percent) = raw.sample_percent {
        target.sample_percent = check_sample_percent(*percent.get_ref())
            .map_err(|m| Problem::new(percent.span(), m))?;
    }
    if let Some(sample_by) = raw.sample_by {
        target.sample_by =
            SampleBy::parse(sample_by.get_ref()).map_err(|m| Problem::new(sample_by.span(), m))?;
    }
    if let Some(allow_writes) = &raw.allow_writes {
        target.allow_writes = *allow_writes.get_ref();
    }
    if let Some(methods) = raw.methods {
        target.methods = self::methods(methods, target.allow_writes)?;
    }
    if let Some(paths) = raw.paths {
        target.paths = self::paths(paths)?;
    }
    if let Some(host) = raw.host {
        target.host = HostMode::parse(host.get_ref()).map_err(|m| Problem::new(host.span(), m))?;
    }
    target.set_headers = set_headers(raw.set_headers.unwrap_or_default())?;
    target.remove_headers =
        remove_headers(raw.remove_headers.unwrap_or_default(), &target.set_headers)?;
    if let Some(compare) = raw.compare_responses {
        target.compare_responses = compare;
    }
    target.max_rps = int_or(
        raw.max_rps,
        "max_rps",
        0..=i64::from(u32::MAX),
        target.max_rps,
    )?;
    target.queue = int_or(raw.queue, "queue", 1..=i64::from(u32::MAX), target.queue)?;
    target.concurrency = int_or(
        raw.concurrency,
        "concurrency",
        1..=65535,
        target.concurrency,
    )?;
    target.timeout_ms = int_or(
        raw.timeout_ms,
        "timeout_ms",
        1..=86_400_000,
        target.timeout_ms,
    )?;
    for address in raw.addresses.unwrap_or_default() {
        let net = parse_address(address.get_ref())
            .map_err(|message| Problem::new(address.span(), message))?;
        if target.addresses.contains(&net) {
            return Err(Problem::new(
                address.span(),
                format!("address {net} is listed twice"),
            ));
        }
        target.addresses.push(net);
    }
    target.pods = raw.pods.map(pods).transpose()?;
    target.shadows = match shadows {
        None => vec![ShadowConfig {
            queue: target.queue,
            concurrency: target.concurrency,
            timeout_ms: target.timeout_ms,
            ..ShadowConfig::new(SINGLE_SHADOW_NAME, target.shadows[0].url.clone())
        }],
        Some(shadows) => self::shadows(shadows, &target)?,
    };
    Ok(target)
}

/// `[[target.shadows]]`: unique names, at least one candidate, at most one baseline; queue,
/// concurrency and timeout default to the target's.
fn shadows(
    raw: Spanned<Vec<Spanned<RawShadow>>>,
    target: &TargetConfig,
) -> Checked<Vec<ShadowConfig>> {
    let span = raw.span();
    let mut shadows: Vec<ShadowConfig> = Vec::new();
    for raw in raw.into_inner() {
        let raw_span = raw.span();
        let raw = raw.into_inner();
        let name = raw.name.get_ref().clone();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(Problem::new(
                raw.name.span(),
                "invalid shadow name: expected a non-empty label without control characters",
            ));
        }
        if shadows.iter().any(|shadow| shadow.name == name) {
            return Err(Problem::new(
                raw.name.span(),
                format!("shadow `{name}` is listed twice: names must be unique in a target"),
            ));
        }
        let url =
            ShadowUrl::parse(raw.url.get_ref()).map_err(|m| Problem::new(raw.url.span(), m))?;
        let baseline = raw.baseline.unwrap_or(false);
        if baseline && shadows.iter().any(|shadow| shadow.baseline) {
            return Err(Problem::new(
                raw_span,
                "a second baseline: a target has at most one (its differences from the primary are the noise)",
            ));
        }
        shadows.push(ShadowConfig {
            name,
            url,
            baseline,
            queue: int_or(raw.queue, "queue", 1..=i64::from(u32::MAX), target.queue)?,
            concurrency: int_or(
                raw.concurrency,
                "concurrency",
                1..=65535,
                target.concurrency,
            )?,
            timeout_ms: int_or(
                raw.timeout_ms,
                "timeout_ms",
                1..=86_400_000,
                target.timeout_ms,
            )?,
        });
    }
    if shadows.iter().all(|shadow| shadow.baseline) {
        return Err(Problem::new(
            span,
            "no candidate: every shadow is a baseline; mark at most one `baseline = true`",
        ));
    }
    Ok(shadows)
}

pub(super) fn check_sample_percent(percent: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&percent) {
        Ok(percent)
    } else {
        Err(format!(
            "sample_percent = {percent} is out of range: allowed 0..=100 (fractions allowed)"
        ))
    }
}

fn methods(raw: Spanned<Vec<Spanned<String>>>, allow_writes: bool) -> Checked<Vec<String>> {
    if raw.get_ref().is_empty() {
        return Err(Problem::new(
            raw.span(),
            "methods is empty: nothing would be mirrored; list at least one method, e.g. [\"GET\"]",
        ));
    }
    let mut methods: Vec<String> = Vec::new();
    for method in raw.into_inner() {
        let span = method.span();
        let method = method.into_inner();
        if !is_token(&method) {
            return Err(Problem::new(
                span,
                format!("invalid method `{method}`: expected a token such as GET"),
            ));
        }
        let upper = method.to_ascii_uppercase();
        if upper != method && (is_safe_method(&upper) || WRITE_METHODS.contains(&upper.as_str())) {
            return Err(Problem::new(
                span,
                format!("methods are case-sensitive: `{method}` never matches; write `{upper}`"),
            ));
        }
        if methods.contains(&method) {
            return Err(Problem::new(
                span,
                format!("method `{method}` is listed twice"),
            ));
        }
        if !allow_writes && !is_safe_method(&method) {
            return Err(Problem::new(
                span,
                format!(
                    "`{method}` is a write method: mirroring POST/PUT/PATCH/DELETE (or any method other than GET, HEAD, OPTIONS, TRACE) needs allow_writes = true in this target"
                ),
            ));
        }
        methods.push(method);
    }
    Ok(methods)
}

fn paths(raw: RawPaths) -> Checked<PathFilter> {
    let compile = |list: Vec<Spanned<String>>| {
        list.into_iter()
            .map(|source| {
                PathPattern::new(source.get_ref()).map_err(|m| Problem::new(source.span(), m))
            })
            .collect::<Checked<Vec<_>>>()
    };
    Ok(PathFilter {
        allow: compile(raw.allow)?,
        deny: compile(raw.deny)?,
    })
}

fn set_headers(
    raw: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
) -> Checked<Vec<HeaderField>> {
    let mut fields: Vec<HeaderField> = Vec::new();
    for (name, value) in raw {
        let field =
            HeaderField::new(name.get_ref(), value.get_ref()).map_err(|error| match error {
                HeaderFieldError::Name(message) => Problem::new(name.span(), message),
                HeaderFieldError::Value(message) => Problem::new(value.span(), message),
            })?;
        if fields
            .iter()
            .any(|other| other.name.eq_ignore_ascii_case(&field.name))
        {
            return Err(Problem::new(
                name.span(),
                format!(
                    "header `{}` is set twice (names are case-insensitive)",
                    field.name
                ),
            ));
        }
        fields.push(field);
    }
    Ok(fields)
}

fn remove_headers(raw: Vec<Spanned<String>>, set: &[HeaderField]) -> Checked<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for name in raw {
        check_header_name(name.get_ref(), "remove_headers")
            .map_err(|m| Problem::new(name.span(), m))?;
        let lower = name.get_ref().to_ascii_lowercase();
        if set
            .iter()
            .any(|field| field.name.eq_ignore_ascii_case(&lower))
        {
            return Err(Problem::new(
                name.span(),
                format!(
                    "header `{}` is both in set_headers and remove_headers: keep one",
                    name.get_ref()
                ),
            ));
        }
        if !names.contains(&lower) {
            names.push(lower);
        }
    }
    Ok(names)
}
