//! Property: only the edited header lines change (the configured ones and the hop-by-hop
//! fields); every other byte, and the body, is identical.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::config::{HostMode, ShadowUrl};

/// Names the rewriter below edits (lower case).
const EDITED: [&str; 4] = ["host", "x-forwarded-host", "x-env", "cookie"];

fn rewriter(mode: HostMode) -> Rewriter {
    Rewriter::new(
        &TargetConfig {
            host: mode,
            set_headers: vec![HeaderField::new("X-Env", "shadow").unwrap()],
            remove_headers: vec!["cookie".into()],
            ..TargetConfig::with_defaults("p".into(), 80, ShadowUrl::parse("http://s:81").unwrap())
        },
        &crate::config::ShadowUrl::parse("http://shadow.internal:9000").unwrap(),
    )
}

fn host_mode() -> impl Strategy<Value = HostMode> {
    prop_oneof![
        Just(HostMode::default()),
        Just(HostMode::Shadow),
        Just(HostMode::Keep),
        Just(HostMode::Literal("lit:1".into())),
    ]
}

fn field() -> impl Strategy<Value = (String, &'static str, String)> {
    prop_oneof![
        4 => any_field(),
        1 => connection_field(),
    ]
}

/// A `Connection` field naming other fields of the generator (and framing ones it never drops).
fn connection_field() -> impl Strategy<Value = (String, &'static str, String)> {
    let options = prop::sample::subsequence(
        vec![
            "close",
            "keep-alive",
            "TE",
            "x-request-id",
            "Accept",
            "x-env",
            "Host",
            "Transfer-Encoding",
        ],
        0..4,
    );
    (
        prop::sample::select(vec!["Connection", "connection"]),
        prop::sample::select(vec![": ", ":"]),
        options,
    )
        .prop_map(|(name, separator, options)| (name.to_owned(), separator, options.join(", ")))
}

fn any_field() -> impl Strategy<Value = (String, &'static str, String)> {
    let name = prop::sample::select(vec![
        "Keep-Alive",
        "TE",
        "Proxy-Connection",
        "Host",
        "host",
        "X-Forwarded-Host",
        "Accept",
        "X-Env",
        "x-env",
        "Cookie",
        "COOKIE",
        "User-Agent",
        "X-Request-Id",
        "Content-Type",
    ]);
    let separator = prop::sample::select(vec![": ", ":", ":\t", ":  "]);
    (
        name.prop_map(String::from),
        separator,
        "[a-zA-Z0-9.:,\\[\\] -]{0,16}",
    )
}

/// The head's lines (line ending included) whose field name is neither configured to change
/// nor hop-by-hop (by itself or named in one of `original`'s Connection fields).
fn untouched_lines<'a>(head: &'a [u8], original: &[u8]) -> Vec<&'a [u8]> {
    let lines = HeadLines::parse(original).unwrap();
    let options = connection_options(original, &lines);
    head.split_inclusive(|&byte| byte == b'\n')
        .filter(|line| {
            let name = line.split(|&byte| byte == b':').next().unwrap_or_default();
            !EDITED
                .iter()
                .any(|edited| name.eq_ignore_ascii_case(edited.as_bytes()))
                && !is_hop_by_hop(name, &options)
        })
        .collect()
}

proptest! {
    #[test]
    fn only_edited_lines_change(
        mode in host_mode(),
        fields in prop::collection::vec(field(), 0..12),
        bare_lf in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let eol = if bare_lf { "\n" } else { "\r\n" };
        let mut head = format!("POST /p?q=1 HTTP/1.1{eol}");
        for (name, separator, value) in &fields {
            // A value ends without whitespace where the test needs to compare it exactly.
            head.push_str(&format!("{name}{separator}{}{eol}", value.trim_end()));
        }
        head.push_str(eol);
        let mut request = head.clone().into_bytes();
        request.extend_from_slice(&body);
        let request = Bytes::from(request);

        let rewritten = rewriter(mode).rewrite(&request, head.len()).unwrap();
        prop_assert_eq!(&rewritten.body[..], &body[..]);
        prop_assert_eq!(
            untouched_lines(&rewritten.head, head.as_bytes()),
            untouched_lines(head.as_bytes(), head.as_bytes())
        );

        let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut parsed_headers);
        let status = parsed.parse(&rewritten.head).unwrap();
        prop_assert_eq!(status, httparse::Status::Complete(rewritten.head.len()));
        prop_assert_eq!(parsed.path, Some("/p?q=1"));
        let named = |name: &str| {
            parsed.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect::<Vec<_>>()
        };
        prop_assert!(named("cookie").is_empty());
        for hop in ["connection", "keep-alive", "proxy-connection", "te"] {
            prop_assert!(named(hop).is_empty(), "{} replayed", hop);
        }
        let lines = HeadLines::parse(head.as_bytes()).unwrap();
        for option in connection_options(head.as_bytes(), &lines) {
            let option = String::from_utf8_lossy(option).to_ascii_lowercase();
            // Framing and routing fields stay; a configured field is set whatever is named.
            if !["transfer-encoding", "host", "x-env", "close", "keep-alive"].contains(&option.as_str()) {
                prop_assert!(named(&option).is_empty(), "{} named in Connection and replayed", option);
            }
        }
        prop_assert!(!rewritten.asks_close);
        prop_assert_eq!(named("x-env"), vec![&b"shadow"[..]]);
    }
}
