//! One `[[target]]`: the validated value types and the parsers of their string forms. The
//! parsers return a message saying what is wrong and what is allowed; the caller adds the
//! position (file) or the flag name (command line).

use std::fmt;

use regex::Regex;
use serde::{Serialize, Serializer};

/// Methods that never change server state (RFC 9110 §9.2.1): mirroring them is always allowed.
/// Every other method is a write and needs `allow_writes`.
pub const SAFE_METHODS: [&str; 4] = ["GET", "HEAD", "OPTIONS", "TRACE"];

/// Methods a target mirrors when `methods` is not set.
pub const DEFAULT_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// The write methods `--allow-writes` adds to a target's `methods`.
pub const WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Headers whose edit would corrupt the message framing or bypass the `host` setting.
const PROTECTED_HEADERS: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// Whether `method` is safe to mirror without `allow_writes` (case-sensitive, RFC 9110 §9.1).
pub fn is_safe_method(method: &str) -> bool {
    SAFE_METHODS.contains(&method)
}

/// One mirrored service (`[[target]]`, README "Configuration").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetConfig {
    /// Label value in metrics; unique.
    pub name: String,
    /// Primary service port (requests: destination port; responses: source port); unique.
    pub port: u16,
    /// Where replays go: one or more shadows (`shadow = "URL"` is one candidate named
    /// `shadow`). At least one is a candidate; at most one is the baseline.
    pub shadows: Vec<ShadowConfig>,
    /// Share of eligible requests mirrored, 0..=100 (fractions allowed). Default 100.
    pub sample_percent: f64,
    /// What the sampling decision is keyed on. Default per request.
    pub sample_by: SampleBy,
    /// Methods mirrored (case-sensitive). Default [`DEFAULT_METHODS`].
    pub methods: Vec<String>,
    /// Required for any method outside [`SAFE_METHODS`] in `methods`. Default false.
    pub allow_writes: bool,
    /// Path-and-query filters (regexes on the request target).
    pub paths: PathFilter,
    /// Host / X-Forwarded-Host rewrite. Default `suffix:-shadow`.
    pub host: HostMode,
    /// Headers set on the replayed request (replacing any existing ones of that name), in name
    /// order.
    #[serde(serialize_with = "serialize_header_fields")]
    pub set_headers: Vec<HeaderField>,
    /// Headers removed from the replayed request (lower-case names).
    pub remove_headers: Vec<String>,
    /// Compare shadow responses with the primary's. Default true.
    pub compare_responses: bool,
    /// Replays per second at most; 0 = unlimited. Default 0.
    pub max_rps: u32,
    /// Replay queue length per shadow, unless the shadow sets its own; a full queue drops (and
    /// counts). Default 1024.
    pub queue: usize,
    /// Replays in flight at most per shadow, unless the shadow sets its own. Default 64.
    pub concurrency: usize,
    /// Replay timeout in milliseconds, unless the shadow sets its own. Default 2000.
    pub timeout_ms: u64,
    /// Destinations that are the primary (CIDRs and addresses). With `pods` unset and this
    /// empty, every destination on `port` is.
    #[serde(serialize_with = "super::scope::serialize_addresses")]
    pub addresses: Vec<ipnet::IpNet>,
    /// Pods on this node whose IPs are the primary, watched on the Kubernetes API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<super::scope::PodSelector>,
}

impl TargetConfig {
    /// A target with every optional setting at its default.
    pub fn with_defaults(name: String, port: u16, shadow: ShadowUrl) -> Self {
        Self {
            name,
            port,
            shadows: vec![ShadowConfig::new(SINGLE_SHADOW_NAME, shadow)],
            sample_percent: 100.0,
            sample_by: SampleBy::Request,
            methods: DEFAULT_METHODS.map(String::from).to_vec(),
            allow_writes: false,
            paths: PathFilter::default(),
            host: HostMode::default(),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            compare_responses: true,
            max_rps: 0,
            queue: 1024,
            concurrency: 64,
            timeout_ms: 2000,
            addresses: Vec::new(),
            pods: None,
        }
    }

    /// The candidates (every shadow but the baseline).
    pub fn candidates(&self) -> impl Iterator<Item = &ShadowConfig> {
        self.shadows.iter().filter(|shadow| !shadow.baseline)
    }

    /// The baseline shadow, if any.
    pub fn baseline(&self) -> Option<&ShadowConfig> {
        self.shadows.iter().find(|shadow| shadow.baseline)
    }

    /// Whether only some destinations on the port are the primary (`addresses` or `pods`).
    pub fn is_scoped(&self) -> bool {
        !self.addresses.is_empty() || self.pods.is_some()
    }

    /// The first method in `methods` that is a write while `allow_writes` is false.
    pub fn unallowed_write(&self) -> Option<&str> {
        if self.allow_writes {
            return None;
        }
        self.methods
            .iter()
            .map(String::as_str)
            .find(|method| !is_safe_method(method))
    }
}

/// Name of the one shadow of `shadow = "URL"` (the `shadow` label of its metrics).
pub const SINGLE_SHADOW_NAME: &str = "shadow";

/// One shadow of a target (`[[target.shadows]]`): a candidate, or the baseline (a second copy
/// of the primary's version, whose differences from the primary are noise). Each has its own
/// queue, connections and timeout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShadowConfig {
    /// The `shadow` label of its metrics; unique within the target.
    pub name: String,
    pub url: ShadowUrl,
    pub baseline: bool,
    pub queue: usize,
    pub concurrency: usize,
    pub timeout_ms: u64,
}

impl ShadowConfig {
    /// A candidate at `url` with the default queue, concurrency and timeout.
    pub fn new(name: &str, url: ShadowUrl) -> Self {
        Self {
            name: name.to_owned(),
            url,
            baseline: false,
            queue: 1024,
            concurrency: 64,
            timeout_ms: 2000,
        }
    }
}

/// The shadow service's base URL: `http://host[:port]`, nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowUrl {
    /// `host[:port]` as it goes into a Host header (port omitted when it is 80; IPv6 in
    /// brackets).
    authority: String,
    /// Host to connect to (IPv6 without brackets).
    host: String,
    port: u16,
}

impl ShadowUrl {
    /// Parses an `http://host[:port]` URL. A path other than `/`, a query, a fragment or
    /// credentials are rejected: replays keep the original request target.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|error| {
            format!("invalid shadow URL `{text}`: {error}; expected http://host[:port]")
        })?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "invalid shadow URL `{text}`: https shadows are not supported yet; use http://host[:port]"
                ));
            }
            other => {
                return Err(format!(
                    "invalid shadow URL `{text}`: scheme `{other}` is not supported; expected http://host[:port]"
                ));
            }
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(format!(
                "invalid shadow URL `{text}`: expected http://host[:port] without credentials, path, query or fragment (replays keep the original request target)"
            ));
        }
        let (Some(host_str), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(format!(
                "invalid shadow URL `{text}`: expected http://host[:port]"
            ));
        };
        let authority = match url.port() {
            Some(port) => format!("{host_str}:{port}"),
            None => host_str.to_owned(),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(address)) => address.to_string(),
            _ => host_str.to_owned(),
        };
        Ok(Self {
            authority,
            host,
            port,
        })
    }

    /// `host[:port]` for a Host header (the port only when not 80).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Host name or address to connect to (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ShadowUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// What a target's sampling decision is keyed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleBy {
    /// Each request independently (random).
    Request,
    /// All requests of a TCP connection together (hash of the 4-tuple).
    Connection,
    /// All requests with the same value of this header together (hash of the value), e.g. a user
    /// or request id. The name is kept as written; lookups are case-insensitive.
    Header(String),
}

impl SampleBy {
    /// Parses `request`, `connection` or `header:<Name>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "request" => Ok(Self::Request),
            "connection" => Ok(Self::Connection),
            _ => match text.strip_prefix("header:") {
                Some(name) if is_token(name) => Ok(Self::Header(name.to_owned())),
                Some(name) => Err(format!(
                    "invalid sample_by `{text}`: `{name}` is not a header name (letters, digits and !#$%&'*+-.^_`|~)"
                )),
                None => Err(format!(
                    "invalid sample_by `{text}`: expected \"request\", \"connection\" or \"header:<Name>\""
                )),
            },
        }
    }
}

impl fmt::Display for SampleBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request => f.write_str("request"),
            Self::Connection => f.write_str("connection"),
            Self::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// How the Host header (and each X-Forwarded-Host element) of a replay is rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMode {
    /// Append the suffix to the host name, before any port (Envoy/Istio: `foo:8080` ->
    /// `foo-shadow:8080`).
    Suffix(String),
    /// The shadow URL's authority.
    Shadow,
    /// Unchanged.
    Keep,
    /// This exact value.
    Literal(String),
}

impl Default for HostMode {
    fn default() -> Self {
        Self::Suffix("-shadow".to_owned())
    }
}

impl HostMode {
    /// Parses `suffix:<s>`, `shadow`, `keep` or `literal:<host>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "shadow" {
            return Ok(Self::Shadow);
        }
        if text == "keep" {
            return Ok(Self::Keep);
        }
        if let Some(suffix) = text.strip_prefix("suffix:") {
            let valid = !suffix.is_empty()
                && suffix
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte));
            return if valid {
                Ok(Self::Suffix(suffix.to_owned()))
            } else {
                Err(format!(
                    "invalid host suffix `{suffix}`: expected letters, digits, '-', '.', '_' or '~', e.g. \"suffix:-shadow\""
                ))
            };
        }
        if let Some(host) = text.strip_prefix("literal:") {
            let valid = !host.is_empty()
                && host
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && !b",/?#@\"\\".contains(&byte));
            return if valid {
                Ok(Self::Literal(host.to_owned()))
            } else {
                Err(format!(
                    "invalid literal host `{host}`: expected host[:port] without spaces, commas or slashes"
                ))
            };
        }
        Err(format!(
            "invalid host mode `{text}`: expected \"suffix:<s>\", \"shadow\", \"keep\" or \"literal:<host>\""
        ))
    }
}

impl fmt::Display for HostMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Suffix(suffix) => write!(f, "suffix:{suffix}"),
            Self::Shadow => f.write_str("shadow"),
            Self::Keep => f.write_str("keep"),
            Self::Literal(host) => write!(f, "literal:{host}"),
        }
    }
}

/// Path allow/deny regexes, matched against the whole request target (path and query).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PathFilter {
    /// When not empty, a target must match one of these.
    pub allow: Vec<PathPattern>,
    /// A target matching any of these is not mirrored (deny wins over allow).
    pub deny: Vec<PathPattern>,
}

impl PathFilter {
    /// Whether a request with this target passes the filter.
    pub fn permits(&self, target: &str) -> bool {
        let allowed = self.allow.is_empty() || self.allow.iter().any(|p| p.regex.is_match(target));
        allowed && !self.deny.iter().any(|p| p.regex.is_match(target))
    }
}

/// A compiled regex that remembers its source (for equality and printing).
#[derive(Clone, Debug)]
pub struct PathPattern {
    source: String,
    regex: Regex,
}

impl PathPattern {
    /// Compiles `source`; the error is one line.
    pub fn new(source: &str) -> Result<Self, String> {
        let regex = Regex::new(source).map_err(|error| {
            let detail = match &error {
                // The syntax error's text is several lines with a caret; its last line says what.
                regex::Error::Syntax(text) => text
                    .lines()
                    .rev()
                    .find(|line| !line.trim().is_empty())
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_owned(),
                other => other.to_string(),
            };
            format!("invalid regex `{source}`: {detail}")
        })?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The regex as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The compiled regex.
    pub fn regex(&self) -> &Regex {
        &self.regex
    }
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// One header set on replays. Both parts are validated: a token name and a value without
/// control characters (no CR/LF can reach the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    /// As configured (its spelling is used when the header is appended).
    pub name: String,
    pub value: String,
}

impl HeaderField {
    /// Validates a `set_headers` entry.
    pub fn new(name: &str, value: &str) -> Result<Self, HeaderFieldError> {
        check_header_name(name, "set_headers").map_err(HeaderFieldError::Name)?;
        let invalid_byte = value
            .bytes()
            .any(|byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f);
        if invalid_byte || value.trim() != value {
            return Err(HeaderFieldError::Value(format!(
                "invalid value {value:?} for header `{name}`: control characters (CR, LF, ...) and leading or trailing whitespace are not allowed"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// Which part of a `set_headers` entry is invalid (they have different positions).
#[derive(Debug)]
pub enum HeaderFieldError {
    /// The name is not a token or is a protected header; the message says which.
    Name(String),
    /// The value has control characters or surrounding whitespace.
    Value(String),
}

/// Validates a header name for `set_headers` / `remove_headers` (`setting`): a token, and not
/// Host or a framing header.
pub fn check_header_name(name: &str, setting: &str) -> Result<(), String> {
    if !is_token(name) {
        return Err(format!(
            "invalid header name `{name}` in {setting}: expected letters, digits and !#$%&'*+-.^_`|~"
        ));
    }
    if PROTECTED_HEADERS
        .iter()
        .any(|protected| protected.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "{setting} cannot change `{name}`: Content-Length and Transfer-Encoding frame the body, Host is set by the `host` setting"
        ));
    }
    Ok(())
}

/// RFC 9110 §5.6.2 token (header names, methods).
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

macro_rules! serialize_as_display {
    ($($type:ty),*) => {$(
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}
serialize_as_display!(ShadowUrl, SampleBy, HostMode);

impl Serialize for PathPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

fn serialize_header_fields<S: Serializer>(
    fields: &[HeaderField],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(fields.iter().map(|field| (&field.name, &field.value)))
}
