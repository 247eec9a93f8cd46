//! Cost of comparing one exchange with the verdict core, on one core.
//!
//! - `json/1k`, `json/64k`: [`JsonDiffer::compare`] of a primary and a shadow body of about
//!   1 KiB and 64 KiB (an object with a list of items; a few leaves differ): both parses and the
//!   leaf-by-leaf diff, i.e. the daemon's cost per compared exchange with identity bodies.
//! - `parse/64k`: only the two `serde_json::from_slice` parses of `json/64k`, the share of the
//!   diff's cost that is parsing.
//! - `exchange/1k`, `exchange/64k`: [`Comparer::compare`] of the 1 KiB and 64 KiB pairs as the
//!   daemon's field comparison gets them from a server answering identity-encoded JSON (nginx's
//!   headers; `Content-Type` compared): decode (a no-op), parse, diff, numeric pairs, headers.
//!   With `record/*`, the daemon's work per compared exchange besides capture and replay.
//! - `exchange_gzip/64k`: [`Comparer::compare`] of the same 64 KiB pair, gzip-encoded, with
//!   header comparison: decode + parse + diff.
//! - `record/1k`, `record/64k`: feeding the pair's [`FieldDiff`] to the field and drift trackers
//!   (done once per compared exchange too).

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mirror::verdict::diff::{JsonComparison, JsonDiffer};
use mirror::verdict::{
    Comparer, DiffConfig, DriftConfig, DriftTracker, FieldConfig, FieldTracker, Response,
};

/// A catalogue page: `items` objects with ids, names, prices, tags and a timestamp.
fn body(items: usize, variant: u32) -> Vec<u8> {
    let mut text = String::from("{\"page\":1,\"request_id\":\"");
    write!(
        text,
        "{:08x}-0000-4000-8000-00000000000{variant}",
        variant * 7919
    )
    .unwrap();
    text.push_str("\",\"items\":[");
    for item in 0..items {
        if item > 0 {
            text.push(',');
        }
        // Every 10th price differs in the shadow's variant.
        let price = 10.0 + item as f64 * 0.25 + f64::from(u32::from(item % 10 == 0) * variant);
        write!(
            text,
            "{{\"id\":{item},\"name\":\"item number {item}\",\"price\":{price},\"stock\":{},\
             \"tags\":[\"a\",\"b\"],\"updated_at\":\"2024-05-01T12:00:0{variant}Z\"}}",
            item * 3 % 17
        )
        .unwrap();
    }
    text.push_str("],\"total\":");
    write!(text, "{items}}}").unwrap();
    text.into_bytes()
}

/// The item count whose body is closest to `bytes`.
fn sized(bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let per_item = body(2, 0).len() - body(1, 0).len();
    let items = (bytes - body(0, 0).len()) / per_item;
    (body(items, 0), body(items, 1))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn json(c: &mut Criterion) {
    let differ = JsonDiffer::new(&DiffConfig::default()).unwrap();
    let json: Option<&[u8]> = Some(b"application/json");
    let mut group = c.benchmark_group("json");
    for (name, size) in [("1k", 1024), ("64k", 64 * 1024)] {
        let (primary, shadow) = sized(size);
        eprintln!(
            "json/{name}: bodies of {} and {} bytes",
            primary.len(),
            shadow.len()
        );
        match differ.compare((json, &primary), (json, &shadow)) {
            JsonComparison::Compared(diff) => assert!(!diff.is_identical()),
            other => panic!("{other:?}"),
        }
        group.throughput(Throughput::Bytes((primary.len() + shadow.len()) as u64));
        group.bench_function(name, |b| {
            b.iter(|| differ.compare((json, black_box(&primary)), (json, black_box(&shadow))));
        });
    }
    group.finish();
    let (primary, shadow) = sized(64 * 1024);
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes((primary.len() + shadow.len()) as u64));
    group.bench_function("64k", |b| {
        b.iter(|| {
            let a: serde_json::Value = serde_json::from_slice(black_box(&primary)).unwrap();
            let b: serde_json::Value = serde_json::from_slice(black_box(&shadow)).unwrap();
            (a, b)
        });
    });
    group.finish();
}

/// Response headers as nginx sends them with a static JSON file.
const NGINX_HEADERS: [(&[u8], &[u8]); 7] = [
    (b"Server", b"nginx/1.26.3"),
    (b"Date", b"Wed, 01 May 2024 12:00:00 GMT"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"1019"),
    (b"Last-Modified", b"Wed, 01 May 2024 11:59:00 GMT"),
    (b"Connection", b"keep-alive"),
    (b"ETag", b"\"66322e4c-3fb\""),
];

fn exchange(c: &mut Criterion) {
    let comparer = Comparer::new(&DiffConfig::default()).unwrap();
    let mut group = c.benchmark_group("exchange");
    for (name, size) in [("1k", 1024), ("64k", 64 * 1024)] {
        let (primary, shadow) = sized(size);
        group.throughput(Throughput::Bytes((primary.len() + shadow.len()) as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                comparer.compare(
                    &Response {
                        headers: &NGINX_HEADERS,
                        body: black_box(&primary),
                    },
                    &Response {
                        headers: &NGINX_HEADERS,
                        body: black_box(&shadow),
                    },
                )
            });
        });
    }
    group.finish();
    let (primary, shadow) = sized(64 * 1024);
    let (primary, shadow) = (gzip(&primary), gzip(&shadow));
    let headers: [(&[u8], &[u8]); 3] = [
        (b"Content-Type", b"application/json"),
        (b"Content-Encoding", b"gzip"),
        (b"Cache-Control", b"max-age=60"),
    ];
    let mut group = c.benchmark_group("exchange_gzip");
    group.bench_function("64k", |b| {
        b.iter(|| {
            comparer.compare(
                &Response {
                    headers: &headers,
                    body: black_box(&primary),
                },
                &Response {
                    headers: &headers,
                    body: black_box(&shadow),
                },
            )
        });
    });
    group.finish();
}

fn record(c: &mut Criterion) {
    let comparer = Comparer::new(&DiffConfig::default()).unwrap();
    let headers: [(&[u8], &[u8]); 1] = [(b"Content-Type", b"application/json")];
    let mut group = c.benchmark_group("record");
    for (name, size) in [("1k", 1024), ("64k", 64 * 1024)] {
        let (primary, shadow) = sized(size);
        let compared = comparer.compare(
            &Response {
                headers: &headers,
                body: &primary,
            },
            &Response {
                headers: &headers,
                body: &shadow,
            },
        );
        let mut fields = FieldTracker::new(FieldConfig::default(), true);
        let mut drift = DriftTracker::new(DriftConfig::default());
        group.bench_function(name, |b| {
            b.iter(|| {
                fields.record("v2", black_box(&compared.fields), Some(&compared.fields));
                drift.record("v2", black_box(&compared.fields.numeric));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, json, exchange, record);
criterion_main!(benches);
