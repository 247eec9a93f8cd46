use bytes::Bytes;

use super::*;
use crate::config::{HostMode, ShadowUrl};

fn target(host: HostMode) -> TargetConfig {
    TargetConfig {
        host,
        ..TargetConfig::with_defaults(
            "t".into(),
            8080,
            ShadowUrl::parse("http://shadow.internal:9000").unwrap(),
        )
    }
}

fn shadow_url() -> ShadowUrl {
    ShadowUrl::parse("http://shadow.internal:9000").unwrap()
}

fn suffix() -> Rewriter {
    Rewriter::new(&target(HostMode::default()), &shadow_url())
}

/// Rewrites a request whose head ends at the first empty line.
fn rewrite_with(rewriter: &Rewriter, request: &[u8]) -> Vec<u8> {
    let head_len = find_head_len(request);
    let request = Bytes::copy_from_slice(request);
    let rewritten = rewriter.rewrite(&request, head_len).unwrap();
    assert_eq!(rewritten.body, request.slice(head_len..));
    rewritten.to_bytes().to_vec()
}

fn find_head_len(request: &[u8]) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    match httparse::Request::new(&mut headers).parse(request).unwrap() {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => panic!("incomplete head"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn suffix_goes_before_the_port_like_envoy() {
    let cases: [(&str, &str); 7] = [
        ("search.prod:8080", "search.prod-shadow:8080"),
        ("api.example.com", "api.example.com-shadow"),
        ("10.0.0.1:80", "10.0.0.1-shadow:80"),
        // An IPv6 literal has no name to suffix.
        ("[::1]:8080", "[::1]:8080"),
        ("[fd00::1]", "[fd00::1]"),
        // Empty Host (RFC 9112 §3.2 allows it): nothing to suffix.
        ("", ""),
        ("host:", "host-shadow:"),
    ];
    for (host, expected) in cases {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(
            text(&rewrite_with(&suffix(), request.as_bytes())),
            format!("GET / HTTP/1.1\r\nHost: {expected}\r\n\r\n"),
            "{host}"
        );
    }
}

#[test]
fn other_host_modes() {
    let request = b"GET /a HTTP/1.1\r\nHost: search:8080\r\nAccept: */*\r\n\r\n";
    let shadow = Rewriter::new(&target(HostMode::Shadow), &shadow_url());
    assert_eq!(
        text(&rewrite_with(&shadow, request)),
        "GET /a HTTP/1.1\r\nHost: shadow.internal:9000\r\nAccept: */*\r\n\r\n"
    );
    let literal = Rewriter::new(
        &target(HostMode::Literal("staging.example".into())),
        &shadow_url(),
    );
    assert_eq!(
        text(&rewrite_with(&literal, request)),
        "GET /a HTTP/1.1\r\nHost: staging.example\r\nAccept: */*\r\n\r\n"
    );
    let custom = Rewriter::new(&target(HostMode::Suffix(".canary".into())), &shadow_url());
    assert_eq!(
        text(&rewrite_with(&custom, request)),
        "GET /a HTTP/1.1\r\nHost: search.canary:8080\r\nAccept: */*\r\n\r\n"
    );
}

#[test]
fn keep_mode_with_nothing_to_do_returns_the_input_without_a_copy() {
    let request = Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody");
    let rewritten = Rewriter::new(&target(HostMode::Keep), &shadow_url())
        .rewrite(&request, 27)
        .unwrap();
    assert_eq!(rewritten.head.as_ptr(), request.as_ptr());
    assert_eq!(rewritten.body.as_ptr(), request[27..].as_ptr());
    assert_eq!(rewritten.to_bytes(), request);
}

#[test]
fn forwarded_host_gets_the_same_rule_per_element() {
    let request =
        b"GET / HTTP/1.1\r\nHost: api:8080\r\nX-Forwarded-Host: shop.example.com,  api:8080 ,[::1], \r\n\r\n";
    assert_eq!(
        text(&rewrite_with(&suffix(), request)),
        "GET / HTTP/1.1\r\nHost: api-shadow:8080\r\nX-Forwarded-Host: shop.example.com-shadow,  api-shadow:8080 ,[::1], \r\n\r\n"
    );
    let literal = Rewriter::new(&target(HostMode::Literal("stage".into())), &shadow_url());
    assert_eq!(
        text(&rewrite_with(
            &literal,
            b"GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-host: a, b\r\n\r\n"
        )),
        "GET / HTTP/1.1\r\nhost: stage\r\nx-forwarded-host: stage, stage\r\n\r\n"
    );
}

#[test]
fn header_case_order_and_whitespace_are_kept() {
    let request =
        b"GET /x?y=1 HTTP/1.1\r\nuser-AGENT:curl/8\r\nhOsT:\t a.b:1 \t\r\nACCEPT:  */*\r\n\r\n";
    assert_eq!(
        text(&rewrite_with(&suffix(), request)),
        "GET /x?y=1 HTTP/1.1\r\nuser-AGENT:curl/8\r\nhOsT:\t a.b-shadow:1 \t\r\nACCEPT:  */*\r\n\r\n"
    );
}

fn with_headers(set: &[(&str, &str)], remove: &[&str]) -> Rewriter {
    Rewriter::new(
        &TargetConfig {
            set_headers: set
                .iter()
                .map(|(n, v)| HeaderField::new(n, v).unwrap())
                .collect(),
            remove_headers: remove.iter().map(ToString::to_string).collect(),
            ..target(HostMode::Keep)
        },
        &shadow_url(),
    )
}

#[test]
fn set_headers_replace_the_first_in_place_and_drop_duplicates() {
    let rewriter = with_headers(&[("X-Env", "shadow")], &[]);
    let request = b"GET / HTTP/1.1\r\nx-env: prod\r\nA: 1\r\nX-ENV: prod2\r\nB: 2\r\n\r\n";
    assert_eq!(
        text(&rewrite_with(&rewriter, request)),
        "GET / HTTP/1.1\r\nx-env: shadow\r\nA: 1\r\nB: 2\r\n\r\n"
    );
}

#[test]
fn set_headers_are_appended_when_absent() {
    let rewriter = with_headers(&[("X-Mirrored-By", "mirror"), ("x-b", "2")], &[]);
    let request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    assert_eq!(
        text(&rewrite_with(&rewriter, request)),
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-Mirrored-By: mirror\r\nx-b: 2\r\n\r\nabc"
    );
}

#[test]
fn remove_headers_remove_every_occurrence() {
    let rewriter = with_headers(&[], &["cookie", "authorization"]);
    let request = b"GET / HTTP/1.1\r\nCookie: a=1\r\nHost: h\r\nAuthorization: Bearer x\r\ncookie: b=2\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        text(&rewrite_with(&rewriter, request)),
        "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"
    );
}

#[test]
fn set_headers_win_over_the_host_rule_for_forwarded_host() {
    let rewriter = Rewriter::new(
        &TargetConfig {
            set_headers: vec![HeaderField::new("X-Forwarded-Host", "fixed").unwrap()],
            ..target(HostMode::default())
        },
        &shadow_url(),
    );
    assert_eq!(
        text(&rewrite_with(
            &rewriter,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: a\r\n\r\n"
        )),
        "GET / HTTP/1.1\r\nHost: a-shadow\r\nX-Forwarded-Host: fixed\r\n\r\n"
    );
}

#[test]
fn missing_host_is_added_only_when_the_mode_names_one() {
    // (An HTTP/1.0 request also asks to keep the replay connection open.)
    let request = b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n";
    let unchanged_host = "GET / HTTP/1.0\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n";
    assert_eq!(text(&rewrite_with(&suffix(), request)), unchanged_host);
    assert_eq!(
        text(&rewrite_with(
            &Rewriter::new(&target(HostMode::Keep), &shadow_url()),
            request
        )),
        unchanged_host
    );
    assert_eq!(
        text(&rewrite_with(
            &Rewriter::new(&target(HostMode::Shadow), &shadow_url()),
            request
        )),
        "GET / HTTP/1.0\r\nHost: shadow.internal:9000\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
    );
    // Together with other edits, and with no header at all.
    let rewriter = Rewriter::new(
        &TargetConfig {
            remove_headers: vec!["accept".into()],
            ..target(HostMode::Literal("h".into()))
        },
        &shadow_url(),
    );
    assert_eq!(
        text(&rewrite_with(&rewriter, request)),
        "GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
    );
    assert_eq!(
        text(&rewrite_with(&rewriter, b"GET / HTTP/1.0\r\n\r\n")),
        "GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn bare_lf_heads_keep_their_line_endings() {
    let rewriter = Rewriter::new(
        &TargetConfig {
            set_headers: vec![HeaderField::new("X-A", "1").unwrap()],
            ..target(HostMode::default())
        },
        &shadow_url(),
    );
    assert_eq!(
        text(&rewrite_with(&rewriter, b"GET / HTTP/1.1\nHost: a\n\n")),
        "GET / HTTP/1.1\nHost: a-shadow\nX-A: 1\n\n"
    );
}

#[test]
fn chunked_body_with_extensions_and_trailers_is_untouched() {
    let head = "POST /up HTTP/1.1\r\nHost: svc:80\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body =
        "5;ext=\"a b\"\r\nhello\r\n0;last\r\nX-Trailer: host: evil\r\nHost: not-a-header\r\n\r\n";
    let request = format!("{head}{body}");
    let rewriter = Rewriter::new(
        &TargetConfig {
            methods: vec!["POST".into()],
            allow_writes: true,
            ..target(HostMode::default())
        },
        &shadow_url(),
    );
    assert_eq!(
        text(&rewrite_with(&rewriter, request.as_bytes())),
        format!(
            "POST /up HTTP/1.1\r\nHost: svc-shadow:80\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        )
    );
}

#[test]
fn binary_body_is_untouched() {
    let mut request = b"PUT /blob HTTP/1.1\r\nHost: a\r\nContent-Length: 256\r\n\r\n".to_vec();
    let body: Vec<u8> = (0..=255u8).collect();
    request.extend_from_slice(&body);
    let rewritten = rewrite_with(&suffix(), &request);
    assert!(rewritten.ends_with(&body));
    assert_eq!(
        &rewritten[..rewritten.len() - 256],
        b"PUT /blob HTTP/1.1\r\nHost: a-shadow\r\nContent-Length: 256\r\n\r\n"
    );
}

#[test]
fn pipelined_requests_are_rewritten_one_at_a_time() {
    let first = "GET /1 HTTP/1.1\r\nHost: a:1\r\n\r\n";
    let second = "POST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 4\r\n\r\nGET ";
    let third = "GET /3 HTTP/1.1\r\nX-Forwarded-Host: c\r\nHost: c\r\n\r\n";
    let stream = Bytes::from(format!("{first}{second}{third}"));
    let mut out = Vec::new();
    let mut start = 0;
    for len in [first.len(), second.len(), third.len()] {
        // Each request as the http module emits it: a slice of the stream.
        let request = stream.slice(start..start + len);
        let head_len = find_head_len(&request);
        out.extend_from_slice(&suffix().rewrite(&request, head_len).unwrap().to_bytes());
        start += len;
    }
    assert_eq!(
        text(&out),
        "GET /1 HTTP/1.1\r\nHost: a-shadow:1\r\n\r\n\
         POST /2 HTTP/1.1\r\nHost: b-shadow\r\nContent-Length: 4\r\n\r\nGET \
         GET /3 HTTP/1.1\r\nX-Forwarded-Host: c-shadow\r\nHost: c-shadow\r\n\r\n"
    );
}

#[test]
fn malformed_heads_are_errors() {
    let rewrite = |request: &'static [u8], head_len: usize| {
        suffix().rewrite(&Bytes::from_static(request), head_len)
    };
    assert_eq!(
        rewrite(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 99),
        Err(RewriteError::HeadLength {
            head_len: 99,
            len: 27
        })
    );
    // head_len not at the end of the empty line.
    assert_eq!(
        rewrite(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nxx", 29),
        Err(RewriteError::Unterminated)
    );
    assert_eq!(
        rewrite(b"GET / HTTP/1.1\r\nHost: a\r\n", 25),
        Err(RewriteError::Unterminated)
    );
    assert_eq!(
        rewrite(b"GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n", 39),
        Err(RewriteError::ObsFold { line: 3 })
    );
    assert_eq!(
        rewrite(b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 28),
        Err(RewriteError::MalformedField { line: 2 })
    );
    assert_eq!(
        rewrite(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 28),
        Err(RewriteError::MalformedField { line: 2 })
    );
}

#[test]
fn a_close_option_in_the_rewritten_head_is_reported() {
    let asks_close = |rewriter: &Rewriter, request: &[u8]| {
        let request = Bytes::copy_from_slice(request);
        rewriter
            .rewrite(&request, find_head_len(&request))
            .unwrap()
            .asks_close
    };
    let closing = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, Close\r\n\r\n";
    let keep_alive = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
    let plain = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let keep = with_headers(&[], &[]);
    assert!(
        !asks_close(&keep, closing),
        "the client's Connection is hop-by-hop: not replayed"
    );
    assert!(!asks_close(&keep, keep_alive));
    assert!(!asks_close(&keep, plain));
    let set_close = with_headers(&[("Connection", "close")], &[]);
    assert!(asks_close(&set_close, keep_alive), "set in place");
    assert!(asks_close(&set_close, plain), "appended");
    let set_keep_alive = with_headers(&[("Connection", "keep-alive")], &[]);
    assert!(!asks_close(&set_keep_alive, closing), "replaced");
}

#[test]
fn content_length_beside_transfer_encoding_is_removed_rfc9112_6_3() {
    let rewriter = Rewriter::new(&target(HostMode::Keep), &shadow_url());
    let request = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    assert_eq!(
        text(&rewrite_with(&rewriter, request)),
        "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    let plain = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    assert_eq!(rewrite_with(&rewriter, plain), plain);
}

#[test]
fn the_replay_marker_is_set_on_every_replay() {
    let rewriter = Rewriter::new(
        &TargetConfig {
            set_headers: vec![HeaderField::new("x-mirror-replay", "configured").unwrap()],
            ..target(HostMode::Keep)
        },
        &shadow_url(),
    )
    .with_marker(Some(HeaderField::new("X-Mirror-Replay", "node-a").unwrap()));
    assert_eq!(
        text(&rewrite_with(
            &rewriter,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )),
        "GET / HTTP/1.1\r\nHost: a\r\nX-Mirror-Replay: node-a\r\n\r\n"
    );
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) are the client's connection's, not the replay's: the
/// exact bytes sent.
#[test]
fn hop_by_hop_fields_are_not_replayed() {
    let rewriter = with_headers(&[], &[]);
    for (captured, replayed) in [
        (
            "GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAccept: */*\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
        ),
        (
            "GET /a HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-foo\r\nX-Foo: 1\r\nX-Bar: 2\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nX-Bar: 2\r\n\r\n",
        ),
        (
            "GET /a HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            // TE goes, and so does the `te` option that names it (with the whole Connection).
            "GET /a HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: TE\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            // Transfer-Encoding stays even when named: the body is replayed as captured.
            "POST /a HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding, host\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        ),
        (
            // HTTP/1.0 keeps its version and asks to keep the pooled connection open.
            "GET /a HTTP/1.0\r\nHost: a\r\nUser-Agent: old\r\n\r\n",
            "GET /a HTTP/1.0\r\nHost: a\r\nUser-Agent: old\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "GET /a HTTP/1.0\r\nConnection: close\r\n\r\n",
            "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "GET /a HTTP/1.0\nHost: a\nConnection: Keep-Alive\n\n",
            "GET /a HTTP/1.0\nHost: a\nConnection: keep-alive\n\n",
        ),
    ] {
        assert_eq!(
            text(&rewrite_with(&rewriter, captured.as_bytes())),
            replayed,
            "{captured:?}"
        );
    }
    // A configured Connection is what the user asked for: sent, on 1.0 too.
    let configured = with_headers(&[("Connection", "close")], &[]);
    assert_eq!(
        text(&rewrite_with(
            &configured,
            b"GET /a HTTP/1.0\r\nHost: a\r\nKeep-Alive: 5\r\n\r\n"
        )),
        "GET /a HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n"
    );
}
