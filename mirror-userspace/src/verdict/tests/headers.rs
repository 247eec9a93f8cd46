use super::*;

type Headers<'a> = Vec<(&'a [u8], &'a [u8])>;

fn headers<'a>(lines: &[(&'a str, &'a str)]) -> Headers<'a> {
    lines
        .iter()
        .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
        .collect()
}

fn differing(diff: &FieldDiff) -> Vec<&str> {
    diff.differing().collect()
}

#[test]
fn hop_by_hop_and_date_are_never_compared() {
    let comparer = HeaderComparer::new(&[
        "Content-Type",
        "Date",
        "Connection",
        "Transfer-Encoding",
        "Keep-Alive",
        "TE",
        "Upgrade",
        "Proxy-Connection",
        "x-version",
    ]);
    assert_eq!(comparer.names(), ["content-type", "x-version"]);
}

#[test]
fn selected_headers_are_compared() {
    let comparer =
        HeaderComparer::new(&["content-type", "cache-control", "x-absent", "x-one-side"]);
    let primary = headers(&[
        ("Content-Type", "application/json"),
        ("Cache-Control", "max-age=60"),
        ("X-One-Side", "1"),
        ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ]);
    let shadow = headers(&[
        ("content-type", " application/json "),
        ("cache-control", "no-store"),
        ("Date", "Sun, 06 Nov 1994 08:49:38 GMT"),
    ]);
    let diff = comparer.compare(&primary, &shadow);
    assert_eq!(
        diff.compared().collect::<Vec<_>>(),
        [
            "header:cache-control",
            "header:content-type",
            "header:x-one-side"
        ]
    );
    assert_eq!(
        differing(&diff),
        ["header:cache-control", "header:x-one-side"]
    );
}

#[test]
fn repeated_lines_combine_in_order() {
    let comparer = HeaderComparer::new(&["vary"]);
    let split = headers(&[("Vary", "Accept"), ("Vary", "Accept-Encoding")]);
    let joined = headers(&[("Vary", "Accept, Accept-Encoding")]);
    let reversed = headers(&[("Vary", "Accept-Encoding"), ("Vary", "Accept")]);
    assert!(comparer.compare(&split, &joined).is_identical());
    assert_eq!(
        differing(&comparer.compare(&split, &reversed)),
        ["header:vary"]
    );
}

#[test]
fn connection_nominated_headers_are_skipped() {
    let comparer = HeaderComparer::new(&["x-hop", "x-kept"]);
    let primary = headers(&[
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("X-Kept", "1"),
    ]);
    let shadow = headers(&[("X-Hop", "2"), ("X-Kept", "2")]);
    assert_eq!(
        differing(&comparer.compare(&primary, &shadow)),
        ["header:x-kept"]
    );
    assert_eq!(comparer.compare(&primary, &shadow).compared().count(), 1);
}

#[test]
fn volatile_header_values_are_marked() {
    let comparer = HeaderComparer::new(&["x-request-id", "x-version"]);
    let primary = headers(&[
        ("X-Request-Id", "123e4567-e89b-12d3-a456-426614174000"),
        ("X-Version", "1"),
    ]);
    let shadow = headers(&[
        ("X-Request-Id", "223e4567-e89b-12d3-a456-426614174000"),
        ("X-Version", "2"),
    ]);
    let diff = comparer.compare(&primary, &shadow);
    assert!(diff.fields["header:x-request-id"].volatile);
    assert!(!diff.fields["header:x-version"].volatile);
}
