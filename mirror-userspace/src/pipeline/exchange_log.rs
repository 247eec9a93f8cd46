//! What the exchange sink gets of one compared exchange: the request as captured when it was
//! replayed, each shadow's side as it ends (answer, failure or drop), and the primary's response
//! and the field differences when the exchange closes.

use std::time::SystemTime;

use bytes::Bytes;

use super::evidence::header_pairs;
use crate::{
    compare::{Observed, Verdict},
    http::HttpRequest,
    replay::ReplayOutcome,
    sink::{
        Differences, HeaderList, PrimaryRecord, RecordBody, RequestRecord, ShadowOutcome,
        ShadowRecord, ShadowRole, Sink, SinkRecord,
    },
    verdict::FieldDiff,
};

/// One exchange's record in the making (only while the sink is on).
#[derive(Debug)]
pub(super) struct ExchangeLog {
    time: SystemTime,
    request: RequestRecord,
    /// `(shadow index, record)`, in the order the sides ended.
    shadows: Vec<(usize, ShadowRecord)>,
}

/// A shadow's name and role, as the record shows them.
pub(super) struct ShadowIdentity<'a> {
    pub name: &'a str,
    pub baseline: bool,
}

fn role(baseline: bool) -> ShadowRole {
    if baseline {
        ShadowRole::Baseline
    } else {
        ShadowRole::Candidate
    }
}

fn header_list<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> HeaderList {
    pairs
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(name).into_owned(),
                Bytes::copy_from_slice(value),
            )
        })
        .collect()
}

impl ExchangeLog {
    /// Starts the record of `request`, replayed now.
    pub(super) fn new(sink: &Sink, request: &HttpRequest) -> Self {
        Self {
            time: SystemTime::now(),
            request: RequestRecord {
                method: request.method().to_owned(),
                target: request.target().to_owned(),
                headers: header_list(request.headers()),
                body: sink.body(request.body_bytes()),
            },
            shadows: Vec::new(),
        }
    }

    /// A shadow whose replay ended without a response (dropped, error, timeout).
    pub(super) fn failed(
        &mut self,
        index: usize,
        shadow: ShadowIdentity<'_>,
        outcome: ReplayOutcome,
    ) {
        let outcome = match outcome {
            ReplayOutcome::Ok => return,
            ReplayOutcome::Error => ShadowOutcome::Error,
            ReplayOutcome::Timeout => ShadowOutcome::Timeout,
        };
        self.push_failure(index, shadow, outcome);
    }

    /// A shadow whose replay was dropped before it was sent (queue full, shadow down).
    pub(super) fn dropped(&mut self, index: usize, shadow: ShadowIdentity<'_>) {
        self.push_failure(index, shadow, ShadowOutcome::Dropped);
    }

    fn push_failure(&mut self, index: usize, shadow: ShadowIdentity<'_>, outcome: ShadowOutcome) {
        self.shadows.push((
            index,
            ShadowRecord {
                name: shadow.name.to_owned(),
                role: role(shadow.baseline),
                outcome,
                status: None,
                headers: HeaderList::new(),
                body: None,
                latency_seconds: None,
                differences: None,
            },
        ));
    }

    /// A shadow's response, judged against the primary's (field differences come at the end).
    pub(super) fn judged(&mut self, sink: &Sink, shadow: ShadowIdentity<'_>, verdict: &Verdict) {
        let observed = &verdict.observed;
        self.shadows.push((
            verdict.shadow,
            ShadowRecord {
                name: shadow.name.to_owned(),
                role: role(shadow.baseline),
                outcome: ShadowOutcome::Ok,
                status: Some(observed.status),
                headers: header_list(header_pairs(&observed.head).into_iter()),
                body: observed.body.as_ref().map(|body| sink.body(body.bytes())),
                latency_seconds: observed.latency_seconds,
                differences: Some(Differences {
                    status: verdict.status_mismatch,
                    body: verdict.body_mismatch,
                    fields: Vec::new(),
                }),
            },
        ));
    }

    /// The finished record, when the primary's response came (otherwise nothing was compared).
    pub(super) fn finish(
        mut self,
        sink: &Sink,
        target: &str,
        primary: Option<&Observed>,
        diffs: &[(usize, FieldDiff)],
    ) -> Option<SinkRecord> {
        let primary = primary?;
        for (index, record) in &mut self.shadows {
            let (Some(differences), Some((_, diff))) = (
                record.differences.as_mut(),
                diffs.iter().find(|(shadow, _)| shadow == index),
            ) else {
                continue;
            };
            differences.fields = diff.differing().map(str::to_owned).collect();
        }
        self.shadows.sort_by_key(|(index, _)| *index);
        Some(SinkRecord {
            time: self.time,
            target: target.to_owned(),
            request: self.request,
            primary: PrimaryRecord {
                status: primary.status,
                headers: header_list(header_pairs(&primary.head).into_iter()),
                body: primary
                    .body
                    .as_ref()
                    .map(|body| sink.body(body.bytes()))
                    .unwrap_or_else(|| RecordBody::whole(Bytes::new())),
                latency_seconds: primary.latency_seconds,
            },
            shadows: self.shadows.into_iter().map(|(_, record)| record).collect(),
        })
    }
}
