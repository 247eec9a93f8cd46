//! What the pipeline hands the sink for one compared exchange: plain data, filled from what the
//! pipeline knows; [`super::line`] turns it into one JSON line (redacted, truncated) in the
//! writer thread.

use std::time::SystemTime;

use bytes::Bytes;

/// Header fields in wire order, duplicates kept: name and raw value bytes.
pub type HeaderList = Vec<(String, Bytes)>;

/// One compared exchange: the captured request, the primary's response and every shadow's.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkRecord {
    /// Wall-clock time of the exchange (the pipeline's choice: when the request was captured).
    pub time: SystemTime,
    /// The `[[target]]` name.
    pub target: String,
    pub request: RequestRecord,
    pub primary: PrimaryRecord,
    /// In the target's shadow order.
    pub shadows: Vec<ShadowRecord>,
}

/// The request as captured from the client.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    pub method: String,
    /// The request target (path and query) as sent.
    pub target: String,
    pub headers: HeaderList,
    pub body: RecordBody,
}

/// The primary's response as captured.
#[derive(Clone, Debug, PartialEq)]
pub struct PrimaryRecord {
    pub status: u16,
    pub headers: HeaderList,
    pub body: RecordBody,
    /// Last request byte to first response byte, when the pipeline measured it.
    pub latency_seconds: Option<f64>,
}

/// One shadow's side of the exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowRecord {
    /// The shadow's name in its target (`shadow` for `shadow = "URL"`).
    pub name: String,
    pub role: ShadowRole,
    pub outcome: ShadowOutcome,
    /// `None` without a response (error, timeout, dropped).
    pub status: Option<u16>,
    pub headers: HeaderList,
    /// `None` without a response, or when the pipeline did not keep the body.
    pub body: Option<RecordBody>,
    pub latency_seconds: Option<f64>,
    /// How the response differs from the primary's; `None` when it was not compared (no
    /// response, or `compare_responses = false`).
    pub differences: Option<Differences>,
}

/// `candidate` (a version under test) or `baseline` (a copy of the primary: its differences
/// are the noise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowRole {
    Candidate,
    Baseline,
}

impl ShadowRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Baseline => "baseline",
        }
    }
}

/// How the replay ended: the `outcome` label values of `mirror_replays_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowOutcome {
    Ok,
    Error,
    Timeout,
    Dropped,
}

impl ShadowOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Dropped => "dropped",
        }
    }
}

/// The comparison of one shadow's response with the primary's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Differences {
    /// The status codes differ.
    pub status: bool,
    /// The bodies differ (digest or field comparison).
    pub body: bool,
    /// JSON Pointers of the body fields that differ, when a field-level comparison ran.
    pub fields: Vec<String>,
}

impl Differences {
    /// Whether anything differs.
    pub fn any(&self) -> bool {
        self.status || self.body || !self.fields.is_empty()
    }
}

/// A message body, or the first part of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordBody {
    /// The bytes the sink has: the whole body, or a prefix when `full_len` is larger.
    pub bytes: Bytes,
    /// The body's length on the wire (after de-chunking).
    pub full_len: usize,
}

impl RecordBody {
    /// A whole body (the writer cuts it at `body_bytes` after redacting it).
    pub fn whole(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            full_len: bytes.len(),
            bytes,
        }
    }

    /// A copy of at most `limit` bytes of `body`: what the pipeline passes to keep only what
    /// will be written queued (see [`super::Sink::body_bytes`]). A JSON body cut here cannot be
    /// field-redacted: with `redact_fields` set, the writer withholds it.
    pub fn prefix(body: &[u8], limit: usize) -> Self {
        Self {
            bytes: Bytes::copy_from_slice(&body[..body.len().min(limit)]),
            full_len: body.len(),
        }
    }

    /// Whether the sink only has a prefix of the body.
    pub fn is_partial(&self) -> bool {
        self.full_len > self.bytes.len()
    }
}

/// Memory a record holds besides its byte contents (structs, vectors, strings' headers): a
/// round figure, so small records are not counted as free.
const RECORD_OVERHEAD: usize = 256;
/// The same per shadow and per header field.
const SHADOW_OVERHEAD: usize = 128;
const HEADER_OVERHEAD: usize = 48;

impl SinkRecord {
    /// Whether any shadow's response differs from the primary's: what `only = "differences"`
    /// keeps. A shadow without a response (error, timeout, dropped) was not compared and does
    /// not count.
    pub fn differs(&self) -> bool {
        self.shadows
            .iter()
            .any(|shadow| shadow.differences.as_ref().is_some_and(Differences::any))
    }

    /// About the memory the record holds while queued: what `queue_bytes` bounds.
    pub fn queued_bytes(&self) -> usize {
        let headers = |headers: &HeaderList| -> usize {
            headers
                .iter()
                .map(|(name, value)| HEADER_OVERHEAD + name.len() + value.len())
                .sum()
        };
        let shadows: usize = self
            .shadows
            .iter()
            .map(|shadow| {
                SHADOW_OVERHEAD
                    + shadow.name.len()
                    + headers(&shadow.headers)
                    + shadow.body.as_ref().map_or(0, |body| body.bytes.len())
                    + shadow.differences.as_ref().map_or(0, |differences| {
                        differences.fields.iter().map(String::len).sum::<usize>()
                    })
            })
            .sum();
        RECORD_OVERHEAD
            + self.target.len()
            + self.request.method.len()
            + self.request.target.len()
            + headers(&self.request.headers)
            + self.request.body.bytes.len()
            + headers(&self.primary.headers)
            + self.primary.body.bytes.len()
            + shadows
    }
}

#[cfg(test)]
pub(super) mod examples {
    //! Records for the tests of the sink.

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    pub fn headers(pairs: &[(&str, &str)]) -> HeaderList {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Bytes::copy_from_slice(value.as_bytes())))
            .collect()
    }

    /// A GET to `path` answered 200 by the primary and 500 by one candidate.
    pub fn record(path: &str) -> SinkRecord {
        SinkRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_767_225_600_123),
            target: "search".into(),
            request: RequestRecord {
                method: "GET".into(),
                target: path.into(),
                headers: headers(&[("Host", "search"), ("Authorization", "Bearer s3cr3t")]),
                body: RecordBody::default(),
            },
            primary: PrimaryRecord {
                status: 200,
                headers: headers(&[("Content-Type", "application/json")]),
                body: RecordBody::whole(r#"{"hits":[]}"#),
                latency_seconds: Some(0.004),
            },
            shadows: vec![ShadowRecord {
                name: "v2".into(),
                role: ShadowRole::Candidate,
                outcome: ShadowOutcome::Ok,
                status: Some(500),
                headers: headers(&[("Content-Type", "text/plain")]),
                body: Some(RecordBody::whole("oops")),
                latency_seconds: Some(0.006),
                differences: Some(Differences {
                    status: true,
                    body: true,
                    fields: Vec::new(),
                }),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::examples::record;
    use super::*;

    #[test]
    fn a_record_differs_when_any_compared_shadow_does() {
        let mut record = record("/");
        assert!(record.differs());
        record.shadows[0].differences = Some(Differences::default());
        assert!(!record.differs());
        record.shadows[0].differences = Some(Differences {
            fields: vec!["/a".into()],
            ..Differences::default()
        });
        assert!(record.differs());
        record.shadows[0].differences = None;
        record.shadows[0].outcome = ShadowOutcome::Timeout;
        assert!(!record.differs(), "not compared");
    }

    #[test]
    fn queued_bytes_grow_with_the_contents() {
        let small = record("/");
        let mut large = small.clone();
        large.request.body = RecordBody::whole(vec![b'x'; 10_000]);
        assert_eq!(large.queued_bytes() - small.queued_bytes(), 10_000);
        assert!(small.queued_bytes() > RECORD_OVERHEAD);
    }

    #[test]
    fn a_prefix_keeps_the_full_length() {
        let body = RecordBody::prefix(b"0123456789", 4);
        assert_eq!((&body.bytes[..], body.full_len), (&b"0123"[..], 10));
        assert!(body.is_partial());
        assert!(!RecordBody::prefix(b"01", 4).is_partial());
        assert!(!RecordBody::whole("abc").is_partial());
    }
}
